//! The `surfaces` command line, run as a user would.

use std::process::Command;

fn surfaces(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_surfaces"))
        .args(args)
        .output()
        .expect("runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn guest_check_accepts_the_shipped_guest() {
    let (ok, out) = surfaces(&["guest", "check", surfaces_artifacts::GUEST_WASM_PATH]);
    assert!(ok, "{out}");
    assert!(out.contains("ok: surfaces-guest"), "{out}");
}

#[test]
fn guest_check_refuses_a_component_without_handle() {
    let (ok, out) = surfaces(&["guest", "check", surfaces_artifacts::BROKEN_WASM_PATH]);
    assert!(!ok, "{out}");
    assert!(out.contains("is not a guest this host can run"), "{out}");
}

#[test]
fn guest_check_reports_settings_the_guest_refuses() {
    let (ok, out) = surfaces(&[
        "guest",
        "check",
        surfaces_artifacts::GUEST_WASM_PATH,
        "--setting",
        "edit_interval_ms=soon",
    ]);
    assert!(!ok, "{out}");
    assert!(out.contains("edit_interval_ms"), "{out}");
}

#[test]
fn guest_check_of_a_missing_file_says_so() {
    let (ok, out) = surfaces(&["guest", "check", "/nonexistent/guest.wasm"]);
    assert!(!ok, "{out}");
    assert!(out.contains("cannot read /nonexistent/guest.wasm"), "{out}");
}

#[test]
fn help_is_everywhere() {
    for args in [
        &["--help"][..],
        &["guest", "--help"],
        &["guest", "check", "--help"],
    ] {
        let (ok, out) = surfaces(args);
        assert!(ok && out.contains("Usage"), "{args:?}: {out}");
    }
}
