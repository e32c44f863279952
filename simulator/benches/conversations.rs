//! Simulated conversations per second (the simulator's throughput).

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
