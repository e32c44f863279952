//! The simulator's throughput: simulated conversations per second, and
//! simulated bot-seconds per CPU-second in swarm worlds.

fn main() {
    divan::main();
}

const SCENARIO: &str = r#"
description = "bench: one streamed reply in a DM"
[[rooms]]
id = "!dm:sim.test"
direct = true
members = ["@alice:sim.test"]
[[agent.replies]]
text = "Hello! Here is a **short** answer, streamed in a few pieces."
chunks = 4
[[steps]]
at_ms = 0
from = "@alice:sim.test"
room = "!dm:sim.test"
say = "hello"
"#;

/// One whole conversation: a message, a streamed reply in four chunks, the
/// edits, the final text.
#[divan::bench]
fn conversation(bencher: divan::Bencher) {
    let scenario = surfaces_sim::Scenario::parse(SCENARIO).expect("bench scenario parses");
    let guest = surfaces_sim::shipped_guest().expect("guest compiles");
    let mut seed = 0u64;
    bencher.bench_local(|| {
        seed += 1;
        let run = surfaces_sim::run(&scenario, seed, guest);
        assert!(run.settled);
        divan::black_box(run.transcript.len())
    });
}

/// One swarm seed (a drawn world and fault mix, run until it settles, run
/// twice and checked), counted in the virtual seconds it simulates: divan's
/// `item/s` is then simulated bot-seconds per CPU-second.
#[divan::bench(args = [1, 2, 3, 4, 5, 6, 7, 8])]
fn swarm_seed(bencher: divan::Bencher, seed: u64) {
    let guest = surfaces_sim::shipped_guest().expect("guest compiles");
    let simulated = surfaces_sim::swarm::run_seed(seed, guest).virtual_ms / 1000;
    bencher
        .counter(divan::counter::ItemsCount::new(simulated.max(1)))
        .bench_local(|| divan::black_box(surfaces_sim::swarm::run_seed(seed, guest).broken.len()));
}
