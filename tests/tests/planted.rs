//! Every planted bug is caught by the swarm within the seed budget of one
//! CI run: the guest built with `planted` (never shipped) and the inbox's
//! planted join cut-off. Among them the two losses a new user met: the
//! first message of a lazy DM (`join-cutoff`) and a queue stranded by a
//! restart (`stranded-queue`). Prints how many seeds each took.

use std::sync::Mutex;

use surfaces_sim::swarm;

/// The swarm's seeds per CI run (scripts/test).
const BUDGET: u64 = 10_000;

#[test]
fn the_swarm_catches_every_planted_bug() {
    let guest = surfaces_sim::planted_guest().expect("the planted guest compiles");
    let bugs = swarm::planted_bugs();
    let found: Mutex<Vec<(&str, Option<swarm::Outcome>)>> = Mutex::new(Vec::new());
    let next = Mutex::new(bugs.clone().into_iter());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let Some(bug) = next.lock().expect("not poisoned").next() else {
                        return;
                    };
                    let caught = swarm::first_catch(bug, 1, BUDGET, guest);
                    found.lock().expect("not poisoned").push((bug, caught));
                }
            });
        }
    });
    let mut found = found.into_inner().expect("not poisoned");
    found.sort_by_key(|(bug, _)| bugs.iter().position(|b| b == bug));
    let mut missed = Vec::new();
    for (bug, caught) in &found {
        match caught {
            Some(o) => println!(
                "{bug}: caught at seed {} of {BUDGET}: {}",
                o.seed,
                o.broken.first().map(String::as_str).unwrap_or("")
            ),
            None => {
                println!("{bug}: not caught in {BUDGET} seeds");
                missed.push(*bug);
            }
        }
    }
    assert_eq!(found.len(), bugs.len());
    assert!(
        missed.is_empty(),
        "planted bugs the swarm missed: {missed:?}"
    );
}

/// A failing seed shrinks to a smaller world that breaks the same rule.
#[test]
fn a_failing_seed_shrinks_to_a_smaller_world_that_still_fails() {
    let guest = surfaces_sim::planted_guest().expect("the planted guest compiles");
    let caught = swarm::first_catch("stranded-queue", 1, BUDGET, guest).expect("caught");
    let (mut world, _) = swarm::generate(caught.seed);
    world.guest.insert(
        "planted".into(),
        toml::Value::String("stranded-queue".into()),
    );
    let steps = world.steps.len();
    let shrunk = swarm::shrink::shrink(world, caught.seed, guest, false).expect("it fails");
    println!(
        "seed {}: {steps} steps shrunk to {} in {} runs, still breaking {:?}",
        caught.seed,
        shrunk.scenario.steps.len(),
        shrunk.runs,
        shrunk.rule
    );
    assert!(!shrunk.broken.is_empty());
    assert!(shrunk.scenario.steps.len() < steps);
    let again = surfaces_sim::run(&shrunk.scenario, caught.seed, guest);
    let rule = surfaces_sim::check::RULES
        .iter()
        .find(|r| r.0 == shrunk.rule)
        .expect("a rule");
    assert!(
        !(rule.1)(&again).is_empty(),
        "the shrunk world replays its failure"
    );
}
