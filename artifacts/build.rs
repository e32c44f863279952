//! Build the guest component with a nested cargo, in the manner of
//! wasmtime's `test-programs/artifacts`: its own target dir (sharing ours
//! would deadlock on the build lock) and none of our rustflags (they are for
//! the host target and break the wasm link).

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, exit};

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("artifacts/ lives in the workspace root");
    let guest = root.join("guest");
    for p in [
        "src",
        "Cargo.toml",
        "Cargo.lock",
        ".cargo/config.toml",
        "sdk/src",
        "sdk/Cargo.toml",
        "chaos/src",
        "chaos/Cargo.toml",
        "broken/src",
        "broken/Cargo.toml",
        "examples/echo/src",
        "examples/echo/Cargo.toml",
        "examples/notes/src",
        "examples/notes/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", guest.join(p).display());
    }
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    // The guest depends on the contract crate by path.
    for p in ["contract/src", "contract/Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }

    check_target();

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let target_dir = out_dir.join("guest-target");
    build(
        &guest,
        &target_dir,
        &[
            "-p",
            "surfaces-guest",
            "-p",
            "surfaces-chaos-guest",
            "-p",
            "surfaces-broken-guest",
            "-p",
            "surfaces-echo-guest",
            "-p",
            "surfaces-notes-guest",
        ],
    );
    // The guest with its planted bugs (the simulator's planted-bug test),
    // in a target dir of its own: built beside the shipped one, the
    // feature would be unified into it. The notes example's second
    // version, too (its first is built above).
    let planted_dir = out_dir.join("guest-target-planted");
    build(
        &guest,
        &planted_dir,
        &[
            "-p",
            "surfaces-guest",
            "-p",
            "surfaces-notes-guest",
            "--features",
            "surfaces-guest/planted,surfaces-notes-guest/v2",
        ],
    );
    let notes_v2 = planted_dir
        .join(TARGET)
        .join("release")
        .join("surfaces_notes_guest.wasm");
    if !notes_v2.is_file() {
        fail(&format!(
            "the guest build produced no {}",
            notes_v2.display()
        ));
    }
    println!(
        "cargo:rustc-env=SURFACES_NOTES_V2_WASM={}",
        notes_v2.display()
    );
    // The shipped guest's crate in the same dir twice more (cargo keeps
    // each feature set's build apart; only the file it names is shared):
    // with its planted bugs, then as the next release's record format.
    for (features, name, var) in [
        ("surfaces-guest/planted", "planted", "SURFACES_PLANTED_WASM"),
        (
            "surfaces-guest/next-schema",
            "next-schema",
            "SURFACES_GUEST_NEXT_WASM",
        ),
    ] {
        if name != "planted" {
            build(
                &guest,
                &planted_dir,
                &["-p", "surfaces-guest", "--features", features],
            );
        }
        let built = planted_dir
            .join(TARGET)
            .join("release")
            .join("surfaces_guest.wasm");
        let kept = out_dir.join(format!("surfaces_guest_{name}.wasm"));
        if let Err(e) = std::fs::copy(&built, &kept) {
            fail(&format!(
                "the guest build produced no {} ({e})",
                built.display()
            ));
        }
        println!("cargo:rustc-env={var}={}", kept.display());
    }
    for (file, var) in [
        ("surfaces_guest.wasm", "SURFACES_GUEST_WASM"),
        ("surfaces_chaos_guest.wasm", "SURFACES_CHAOS_WASM"),
        ("surfaces_broken_guest.wasm", "SURFACES_BROKEN_WASM"),
        ("surfaces_echo_guest.wasm", "SURFACES_ECHO_WASM"),
        ("surfaces_notes_guest.wasm", "SURFACES_NOTES_V1_WASM"),
    ] {
        let wasm = target_dir.join(TARGET).join("release").join(file);
        if !wasm.is_file() {
            fail(&format!("the guest build produced no {}", wasm.display()));
        }
        println!("cargo:rerun-if-changed={}", wasm.display());
        println!("cargo:rustc-env={var}={}", wasm.display());
    }
}

/// `cargo build --release` of guest packages into `target_dir`.
fn build(guest: &Path, target_dir: &Path, packages: &[&str]) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--locked", "--target", TARGET])
        .args(packages)
        .arg("--manifest-path")
        .arg(guest.join("Cargo.toml"))
        // guest/.cargo/config.toml holds the release profile (size, LTO).
        .current_dir(guest)
        .env("CARGO_TARGET_DIR", target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_BUILD_TARGET")
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => fail(&format!(
            "building the guest failed ({s}); see the errors above"
        )),
        Err(e) => fail(&format!("could not run cargo to build the guest: {e}")),
    }
}

/// Stop with one line that says what to do when the wasm target is missing
/// (rustup may not install it by itself: RUSTUP_AUTO_INSTALL=0).
fn check_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(sysroot) = sysroot
        && !Path::new(&sysroot)
            .join("lib/rustlib")
            .join(TARGET)
            .is_dir()
    {
        fail(&format!(
            "the {TARGET} target is not installed: run `rustup target add {TARGET}`"
        ));
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    println!("cargo:warning={msg}");
    exit(1);
}
