//! The swarm: many seeds, each a world and a fault mix drawn from the seed
//! ([`world::draw`], [`Mix::draw`]), run until every fault has healed and
//! the world is quiet, then held to every rule ([`crate::check`]). Each
//! seed runs twice: two runs of one seed must write the same transcript.

pub mod mix;
pub mod shrink;
pub mod world;

use std::hash::{Hash, Hasher};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use surfaces_embed::GuestComponent;

pub use mix::{Fault, Mix};

use crate::{Scenario, check};

/// What one seed came to.
#[derive(Debug)]
pub struct Outcome {
    pub seed: u64,
    pub mix: Mix,
    /// The rules it broke, each with its witness (empty: all hold).
    pub broken: Vec<String>,
    /// For each broken rule, the transcript steps behind it
    /// ([`check::witness`]).
    pub witnesses: Vec<Vec<String>>,
    /// The virtual time simulated for it, ms (both runs).
    pub virtual_ms: u64,
}

/// The world and mix of a seed.
pub fn generate(seed: u64) -> (Scenario, Mix) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mix = Mix::draw(&mut rng);
    let mut scenario = world::draw(&mut rng, &mix);
    scenario.description = format!("swarm seed {seed}: {mix}");
    scenario.seed = Some(seed);
    (scenario, mix)
}

/// Run a seed (twice) and check it.
pub fn run_seed(seed: u64, component: &GuestComponent) -> Outcome {
    run_planted(seed, component, None)
}

/// [`run_seed`] with a planted bug switched on (by name, on the planted
/// guest: see `guest/src/planted.rs` and [`crate::JOIN_CUTOFF`]).
pub fn run_planted(seed: u64, component: &GuestComponent, plant: Option<&str>) -> Outcome {
    let (mut scenario, mix) = generate(seed);
    let join_cutoff = plant == Some(crate::JOIN_CUTOFF);
    if let Some(name) = plant.filter(|_| !join_cutoff) {
        scenario
            .guest
            .insert("planted".into(), toml::Value::String(name.into()));
    }
    let run = crate::run_planted(&scenario, seed, component, join_cutoff);
    let mut broken = check::violations(&run);
    let mut witnesses: Vec<Vec<String>> = broken.iter().map(|b| check::witness(&run, b)).collect();
    if plant.is_some() {
        return Outcome {
            seed,
            mix,
            broken,
            witnesses,
            virtual_ms: run.virtual_ms,
        };
    }
    let again = crate::run(&scenario, seed, component);
    if digest(&run.transcript) != digest(&again.transcript) {
        let at = run
            .transcript
            .iter()
            .zip(&again.transcript)
            .position(|(a, b)| a != b)
            .unwrap_or(run.transcript.len().min(again.transcript.len()));
        broken.push(format!(
            "not deterministic: the second run differs from line {}",
            at + 1
        ));
        witnesses.push(vec![
            format!(
                "first:  {}",
                run.transcript.get(at).map_or("(ended)", |l| l)
            ),
            format!(
                "second: {}",
                again.transcript.get(at).map_or("(ended)", |l| l)
            ),
        ]);
    }
    Outcome {
        seed,
        mix,
        broken,
        witnesses,
        virtual_ms: run.virtual_ms + again.virtual_ms,
    }
}

/// The command that replays a swarm seed.
pub fn replay_command(seed: u64, plant: Option<&str>) -> String {
    let plant = plant.map(|p| format!(" --plant {p}")).unwrap_or_default();
    format!("cargo run -p surfaces-sim -- swarm --seeds 1 --from {seed}{plant} --verbose")
}

/// The bugs that can be planted, by name: the guest's and the inbox's.
pub fn planted_bugs() -> Vec<&'static str> {
    let mut names = vec![crate::JOIN_CUTOFF];
    names.extend(PLANTED.iter().copied());
    names
}

/// The guest's planted bugs (`guest/src/planted.rs`, `Bug::name`).
const PLANTED: [&str; 23] = [
    "stranded-queue",
    "final-edit-dropped-on-429",
    "retry-posts-twice",
    "split-loses-char",
    "throttle-off",
    "wrong-thread",
    "wrong-message",
    "queue-position-skipped",
    "tokens-not-counted",
    "greeting-twice",
    "edit-of-edit",
    "retry-after-ignored",
    "unsafe-links",
    "edit-budget-ignored",
    "withdrawn-still-sent",
    "edit-not-reasked",
    "collect-drops-one",
    "quota-ignores-in-flight",
    "held-file-dropped",
    "deleted-file-sent",
    "agent-file-lost-silently",
    "final-waits-interval",
    "finals-unreserved",
];

/// The first seed from `from` (within `budget` seeds) whose world breaks
/// a rule with `plant` switched on.
pub fn first_catch(
    plant: &str,
    from: u64,
    budget: u64,
    component: &GuestComponent,
) -> Option<Outcome> {
    (from..from.saturating_add(budget))
        .map(|seed| run_planted(seed, component, Some(plant)))
        .find(|o| !o.broken.is_empty())
}

fn digest(lines: &[String]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    lines.hash(&mut h);
    h.finish()
}
