//! Every scenario under simulator/scenarios/ keeps all rules, replays
//! byte-identically, and matches its reviewed transcript snapshot.
//!
//! Review changed transcripts with `cargo insta review` (or accept with
//! `INSTA_UPDATE=always cargo test -p surfaces-tests --test scenarios`).

use serde::Serialize;
use surfaces_sim::{Scenario, check, replay_command};

#[derive(Serialize)]
struct Snapshot<'a> {
    description: &'a str,
    seed: u64,
    transcript: &'a [String],
}

#[test]
fn scenarios() {
    let guest = surfaces_sim::shipped_guest().expect("the shipped guest compiles");
    // With regressions/: the shrunk swarm seeds.
    insta::glob!("../../simulator/scenarios", "**/*.toml", |path| {
        let scenario = Scenario::load(path).expect("scenario parses");
        let seed = scenario.seed.unwrap_or(1);
        let run = surfaces_sim::run(&scenario, seed, guest);
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../simulator/scenarios");
        let name = path
            .strip_prefix(&dir)
            .unwrap_or(path)
            .display()
            .to_string();
        let replay = replay_command(&format!("simulator/scenarios/{name}"), seed);
        let broken = check::violations(&run);
        assert!(
            broken.is_empty(),
            "rules broken: {broken:#?}\nreplay: {replay}"
        );
        let again = surfaces_sim::run(&scenario, seed, guest);
        assert_eq!(
            run.transcript, again.transcript,
            "same seed, different transcript\nreplay: {replay}"
        );
        insta::assert_yaml_snapshot!(Snapshot {
            description: &scenario.description,
            seed,
            transcript: &run.transcript,
        });
    });
}

/// Each scenario with a spread of seeds (latencies, jitter, faults differ).
#[test]
fn scenarios_hold_under_many_seeds() {
    let guest = surfaces_sim::shipped_guest().expect("the shipped guest compiles");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../simulator/scenarios");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("scenario dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 20,
        "scenarios missing from {}",
        dir.display()
    );
    let mut failures = Vec::new();
    for file in &files {
        let scenario = Scenario::load(file).expect("scenario parses");
        for seed in 2..=12 {
            let run = surfaces_sim::run(&scenario, seed, guest);
            let broken = check::violations(&run);
            if !broken.is_empty() {
                let name = format!(
                    "simulator/scenarios/{}",
                    file.file_name().unwrap().to_string_lossy()
                );
                failures.push(format!(
                    "{broken:#?}\nreplay: {}",
                    replay_command(&name, seed)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
