//! `surfaces guest new | build | test` as a guest author runs them: a
//! project from the template in a temporary directory, built on its own,
//! its own tests run, and the component held to the simulator's rules;
//! then a bug planted in it, which the trial must catch.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One target dir for every template build, kept between test runs so
/// the SDK's dependencies build once.
fn template_target() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("guest-template")
}

fn surfaces(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_surfaces"))
        .args(args)
        .env("CARGO_TARGET_DIR", template_target())
        .output()
        .expect("runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The component's path, which `guest build` prints on a line of its own.
fn component(out: &str) -> String {
    let line = out
        .lines()
        .find(|l| l.starts_with('/') && l.ends_with(".wasm"));
    line.unwrap_or_else(|| panic!("no component path in: {out}"))
        .to_string()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

#[test]
fn a_new_guest_builds_passes_its_tests_and_the_simulator_and_a_planted_bug_is_caught() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("hello-bot");
    let (ok, out) = surfaces(&["guest", "new", path(&dir)]);
    assert!(ok, "{out}");
    assert!(out.contains("wrote the guest hello-bot"), "{out}");
    let readme = std::fs::read_to_string(dir.join("README.md")).expect("a README");
    assert!(
        readme.contains("# hello-bot") && readme.contains("release/hello_bot.wasm"),
        "{readme}"
    );
    let toolchain = std::fs::read_to_string(dir.join("rust-toolchain.toml")).expect("pinned");
    assert!(toolchain.contains("wasm32-wasip2"), "{toolchain}");

    // Its own tests, natively.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let test = Command::new(&cargo)
        .args(["test", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", template_target())
        .output()
        .expect("cargo runs");
    let log = String::from_utf8_lossy(&test.stdout);
    assert!(
        test.status.success(),
        "{log}{}",
        String::from_utf8_lossy(&test.stderr)
    );
    assert!(log.contains("3 passed"), "{log}");

    // Built, checked, and held to every rule in the simulator.
    let (ok, out) = surfaces(&["guest", "build", path(&dir)]);
    assert!(ok, "{out}");
    assert!(out.contains("ok: hello-bot 0.1.0"), "{out}");
    let wasm = component(&out);
    assert!(wasm.ends_with("hello_bot.wasm"), "{out}");
    let (ok, out) = surfaces(&["guest", "test", &wasm, "--seeds", "50"]);
    assert!(ok, "{out}");
    assert!(out.contains("runs, 0 failed"), "{out}");
    assert!(
        out.contains("per event") && out.contains("fuel median"),
        "{out}"
    );

    // A bug: unknown commands go unanswered. The trial names the rule, the
    // run and how to replay it, and fails.
    let lib = dir.join("src/lib.rs");
    let src = std::fs::read_to_string(&lib).expect("the logic");
    let answer =
        r#"Addressed::Command(_) => say(host, &m, "I know one command: !count".into(), true),"#;
    assert!(
        src.contains(answer),
        "the template changed: update this test"
    );
    std::fs::write(
        &lib,
        src.replace(answer, "Addressed::Command(_) => Ok(()),"),
    )
    .expect("write");
    let (ok, out) = surfaces(&["guest", "build", path(&dir)]);
    assert!(ok, "{out}");
    let wasm = component(&out);
    let (ok, out) = surfaces(&["guest", "test", &wasm, "--seeds", "10"]);
    assert!(!ok, "a guest that leaves commands unanswered passed: {out}");
    assert!(
        out.contains("BROKEN every addressed message is answered"),
        "{out}"
    );
    assert!(out.contains("cmd_unknown.toml seed 1:"), "{out}");
    assert!(out.contains("replay: surfaces-sim run"), "{out}");
}

#[test]
fn guest_new_refuses_what_it_cannot_make() {
    let tmp = tempfile::tempdir().expect("temp dir");
    std::fs::write(tmp.path().join("taken"), "").expect("write");
    let (ok, out) = surfaces(&["guest", "new", path(tmp.path())]);
    assert!(!ok && out.contains("is not empty"), "{out}");
    for name in ["9lives", "test", "serde"] {
        let (ok, out) = surfaces(&["guest", "new", path(&tmp.path().join(name))]);
        assert!(!ok && out.contains("cannot name a guest"), "{name}: {out}");
    }
    let (ok, out) = surfaces(&[
        "guest",
        "new",
        path(&tmp.path().join("fine")),
        "--sdk",
        "/nonexistent",
    ]);
    assert!(!ok && out.contains("no guest SDK at /nonexistent"), "{out}");
    let (ok, out) = surfaces(&["guest", "build", path(tmp.path())]);
    assert!(!ok && out.contains("not a guest project"), "{out}");
}

#[test]
fn guest_test_runs_scenarios_from_a_directory() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let scenario =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../simulator/scenarios/cmd_help.toml");
    std::fs::copy(&scenario, tmp.path().join("help.toml")).expect("copy");
    let (ok, out) = surfaces(&[
        "guest",
        "test",
        surfaces_artifacts::GUEST_WASM_PATH,
        "--scenarios",
        path(tmp.path()),
        "--seeds",
        "2",
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("(1 scenarios x 3 seeds and 2 swarm seeds"),
        "{out}"
    );
    assert!(out.contains("5 runs, 0 failed"), "{out}");
    let (ok, out) = surfaces(&["guest", "test", surfaces_artifacts::BROKEN_WASM_PATH]);
    assert!(
        !ok && out.contains("is not a guest this host can run"),
        "{out}"
    );
}

/// A swap's behaviour check starts the candidate on a copy of the live
/// store: a guest that cannot read what was written before is refused,
/// with the record named; one that can passes; and a candidate that
/// migrates the store where the running guest cannot follow passes with
/// a warning that there is no way back.
#[test]
fn a_behaviour_check_reads_the_live_store_both_ways() {
    use surfaces_embed::{HostInfo, MemoryKv};
    use surfaces_host::swapcheck;

    let info = HostInfo {
        bot_user_id: "@bot:test".into(),
        bot_display_name: "bot".into(),
        host_version: "test".into(),
        settings: vec![],
        max_event_bytes: 65_536,
        resumed: true,
        guest_hash: String::new(),
        max_attachment_bytes: 8 << 20,
    };
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("guest-cache");
    let compile = |wasm: &[u8]| {
        surfaces_sim::embedding()
            .expect("engine")
            .compile(wasm)
            .expect("compiles")
    };
    let bot_path = Path::new(surfaces_artifacts::GUEST_WASM_PATH);
    let notice = |record: serde_json::Value| {
        let mut store = MemoryKv::default();
        store.map.insert(
            "out/00000000000000000007".into(),
            serde_json::to_vec(&record).expect("json"),
        );
        store
    };

    // A notice not yet delivered, in a format the bot never wrote.
    let foreign = notice(serde_json::json!({ "room": "!room:test", "text": "hi" }));
    let refused = swapcheck::check(
        surfaces_artifacts::GUEST_WASM,
        bot_path,
        foreign,
        &info,
        2,
        &cache,
        None,
    )
    .expect_err("the bot cannot read it");
    assert!(
        refused.contains("cannot read the record out/00000000000000000007"),
        "{refused}"
    );

    // The same notice as the bot writes it: read, and passed; the running
    // bot could take over again.
    let own = notice(serde_json::json!({
        "room_id": "!room:test",
        "content": {
            "body": "⏳ You are number 2 in the queue.",
            "formatted_body": null,
            "notice": true,
            "live": false,
            "thread_root": null,
            "reply_to": "$q",
            "mentions": [],
        },
        "attempts": 1,
    }));
    let running_bot = compile(surfaces_artifacts::GUEST_WASM);
    let passed = swapcheck::check(
        surfaces_artifacts::GUEST_WASM,
        bot_path,
        own,
        &info,
        2,
        &cache,
        Some(&running_bot),
    )
    .expect("the bot reads its own notice");
    assert!(passed.runs > 40 && passed.records == 1, "{passed:?}");
    assert_eq!(passed.no_way_back, None);

    // Notes version 2 migrates version 1's notes: it passes, but version 1
    // cannot read schema 2, so there is no way back.
    let mut notes = MemoryKv::default();
    notes.map.insert(
        "meta/schema/notes".into(),
        br#"{"version":1,"readable_from":1}"#.to_vec(),
    );
    notes.map.insert(
        "notes/@alice:test".into(),
        br#"{"text":"milk\neggs"}"#.to_vec(),
    );
    let running_v1 = compile(surfaces_artifacts::NOTES_V1_WASM);
    let passed = swapcheck::check(
        surfaces_artifacts::NOTES_V2_WASM,
        Path::new("notes-v2.wasm"),
        notes,
        &info,
        2,
        &cache,
        Some(&running_v1),
    )
    .expect("version 2 reads version 1's notes");
    let no_way_back = passed.no_way_back.expect("version 1 cannot come back");
    assert!(
        no_way_back.contains("guests before schema 2 cannot read"),
        "{no_way_back}"
    );
}
