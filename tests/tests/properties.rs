//! Properties over generated worlds: random rooms, people, messages, agent
//! replies (with Markdown, Unicode, huge texts and every failure mode),
//! homeserver rate limits, latencies and outages, and guest swaps.
//!
//! A failing case saves its scenario under `target/sim-failures/` and prints
//! the command that replays it with the simulator.

use std::collections::BTreeMap;
use std::path::PathBuf;

use proptest::prelude::*;
use proptest::test_runner::Config;
use surfaces_sim::scenario::{Agent, Bot, Faults, Homeserver, Reply, Room, Scenario, Step};
use surfaces_sim::{Run, check, replay_command};

const ALICE: &str = "@alice:sim.test";
const BOB: &str = "@bob:sim.test";
const DM: &str = "!dm:sim.test";
const GROUP: &str = "!group:sim.test";

fn text_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z ]{1,24}",
        2 => "[a-zA-Z0-9 .,!?*_`#>\\-\n]{1,60}",
        1 => "\\PC{1,16}",
        1 => Just("\n```rust\nfn main() {}\n".to_string()),
        1 => Just("<script>alert(1)</script> [x](javascript:alert(1)) ".to_string()),
        1 => Just("**bold** and *emph*\n\n- item\n".to_string()),
        // Big pieces push replies over one event's capacity.
        1 => "[a-z \n]{2000,4000}",
    ]
}

fn reply() -> impl Strategy<Value = Reply> {
    let then = prop_oneof![
        12 => Just("end"),
        1 => Just("disconnect"),
        1 => Just("malformed"),
        1 => Just("error:busy"),
        1 => Just("error:internal"),
        1 => Just("error:context_overflow"),
        1 => Just("error:bad_request"),
    ];
    (
        prop::collection::vec(text_piece(), 0..12),
        then,
        (20u64..400, 0u64..400),
        0u64..5000,
    )
        .prop_map(|(pieces, then, (lo, extra), tokens)| Reply {
            pieces: Some(pieces),
            then: Some(then.to_string()),
            chunk_delay_ms: Some([lo, lo + extra]),
            tokens: Some(tokens),
            ..Reply::default()
        })
}

#[derive(Clone, Debug)]
enum Act {
    Say {
        who: usize,
        dm: bool,
        mention: bool,
        text: String,
    },
    Command {
        who: usize,
        dm: bool,
        name: &'static str,
    },
    Disconnect,
    Reload,
    Restart,
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        8 => (0usize..2, any::<bool>(), any::<bool>(), "[a-z ]{0,30}")
            .prop_map(|(who, dm, mention, text)| Act::Say { who, dm, mention, text }),
        3 => (0usize..2, any::<bool>(), prop::sample::select(vec![
            "status", "usage", "context", "stop", "new", "help", "skills", "skill code on", "dance",
        ])).prop_map(|(who, dm, name)| Act::Command { who, dm, name }),
        1 => Just(Act::Disconnect),
        1 => Just(Act::Reload),
        1 => Just(Act::Restart),
    ]
}

prop_compose! {
    fn world()(
        interval in prop::sample::select(vec![0u64, 250, 1000, 2500]),
        queue_limit in 1u64..6,
        scope in prop::sample::select(vec!["shared", "room", "thread"]),
        strict_rate in any::<bool>(),
        latency in (1u64..80, 0u64..150),
        unavailable in prop::sample::select(vec![0.0, 0.0, 0.1, 0.3]),
        lost_response in prop::sample::select(vec![0.0, 0.0, 0.2]),
        small_events in any::<bool>(),
        connect_ms in 1u64..3000,
        reconnect_ms in 100u64..3000,
        replies in prop::collection::vec(reply(), 0..6),
        acts in prop::collection::vec((0u64..20_000, act()), 1..8),
        seed in any::<u64>(),
    ) -> (Scenario, u64) {
        let mut guest = BTreeMap::new();
        guest.insert("edit_interval_ms".to_string(), toml::Value::Integer(interval as i64));
        guest.insert("queue_limit".to_string(), toml::Value::Integer(queue_limit as i64));
        guest.insert("context_scope".to_string(), toml::Value::String(scope.to_string()));
        guest.insert("busy_retries".to_string(), toml::Value::Integer(2));
        guest.insert("skills".to_string(), toml::Value::String("code,browser".into()));
        let mut steps = Vec::new();
        for (i, (at_ms, a)) in acts.into_iter().enumerate() {
            let who = |w: usize| if w == 0 { ALICE } else { BOB };
            let step = match a {
                Act::Say { who: w, dm, mention, text } => Step {
                    at_ms,
                    from: Some(who(w).into()),
                    room: Some(if dm && w == 0 { DM } else { GROUP }.into()),
                    // Unique texts let the checks match replies to requests.
                    say: Some(format!("m{i} {text}")),
                    mention: mention || !dm,
                    ..Step::default()
                },
                Act::Command { who: w, dm, name } => Step {
                    at_ms,
                    from: Some(who(w).into()),
                    room: Some(if dm && w == 0 { DM } else { GROUP }.into()),
                    say: Some(format!("!{name}")),
                    ..Step::default()
                },
                Act::Disconnect => Step { at_ms, disconnect_agent: true, ..Step::default() },
                Act::Reload => Step { at_ms, reload: true, ..Step::default() },
                Act::Restart => Step { at_ms, restart: true, ..Step::default() },
            };
            steps.push(step);
        }
        let scenario = Scenario {
            description: "generated".into(),
            seed: None,
            bot: Bot {
                max_event_bytes: if small_events { 16_384 } else { 65_536 },
                ..Bot::default()
            },
            guest,
            homeserver: Homeserver {
                rate_per_second: if strict_rate { 0.2 } else { 10.0 },
                burst: if strict_rate { 10 } else { 50 },
                latency_ms: [latency.0, latency.0 + latency.1],
                unavailable,
                lost_response,
                failed_joins: 0,
                timeline_limit: 50,
                ..Homeserver::default()
            },
            agent: Agent { connect_ms, reconnect_ms, replies, ..Agent::default() },
            faults: Faults::default(),
            rooms: vec![
                Room {
                    id: DM.into(),
                    direct: true,
                    members: vec![ALICE.into()],
                    joined: true,
                    history: Vec::new(),
                },
                Room {
                    id: GROUP.into(),
                    direct: false,
                    members: vec![ALICE.into(), BOB.into()],
                    joined: true,
                    history: Vec::new(),
                },
            ],
            steps,
        };
        (scenario, seed)
    }
}

fn config() -> Config {
    Config {
        cases: 256,
        max_shrink_iters: 512,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Save a failing scenario and say how to replay it.
fn replay_hint(scenario: &Scenario, seed: u64, rule: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/sim-failures");
    let name = format!("{}-{seed}.toml", rule.replace(' ', "-"));
    let path = dir.join(&name);
    let saved = std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&path, scenario.to_toml()))
        .is_ok();
    if saved {
        format!(
            "replay: {}",
            replay_command(&format!("target/sim-failures/{name}"), seed)
        )
    } else {
        format!("seed {seed}; scenario:\n{}", scenario.to_toml())
    }
}

fn simulate(scenario: &Scenario, seed: u64) -> Run {
    let guest = surfaces_sim::shipped_guest().expect("the shipped guest compiles");
    surfaces_sim::run(scenario, seed, guest)
}

fn holds(
    rule: &str,
    f: fn(&Run) -> Vec<String>,
    scenario: &Scenario,
    seed: u64,
) -> Result<(), TestCaseError> {
    let run = simulate(scenario, seed);
    let broken = f(&run);
    prop_assert!(
        broken.is_empty(),
        "{rule}: {broken:#?}\n{}",
        replay_hint(scenario, seed, rule)
    );
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn final_text_is_the_chunks_joined((scenario, seed) in world()) {
        holds("final text", check::final_texts, &scenario, seed)?;
    }

    #[test]
    fn every_message_ends_in_a_reply_or_an_error((scenario, seed) in world()) {
        holds("answered", check::answered, &scenario, seed)?;
    }

    #[test]
    fn no_message_is_left_queued_or_in_flight((scenario, seed) in world()) {
        holds("nothing waits", check::nothing_waits, &scenario, seed)?;
    }

    #[test]
    fn no_edit_names_an_edit((scenario, seed) in world()) {
        holds("edit of edit", check::no_edit_of_edit, &scenario, seed)?;
    }

    #[test]
    fn no_event_exceeds_the_size_limit((scenario, seed) in world()) {
        holds("size limit", check::size_limit, &scenario, seed)?;
    }

    #[test]
    fn at_most_one_update_per_interval((scenario, seed) in world()) {
        holds("throttle", check::throttle, &scenario, seed)?;
    }

    #[test]
    fn runs_settle_without_guest_failures((scenario, seed) in world()) {
        holds("settles", check::settles, &scenario, seed)?;
    }

    #[test]
    fn nothing_transient_is_left_in_the_store((scenario, seed) in world()) {
        holds("leftovers", check::no_leftovers, &scenario, seed)?;
    }

    #[test]
    fn same_seed_same_transcript((scenario, seed) in world()) {
        let a = simulate(&scenario, seed);
        let b = simulate(&scenario, seed);
        prop_assert!(
            a.transcript == b.transcript,
            "transcripts differ\n{}",
            replay_hint(&scenario, seed, "determinism")
        );
    }
}
