//! The swarm: many seeds, each a world and a fault mix drawn from the seed
//! ([`world::draw`], [`Mix::draw`]), run until every fault has healed and
//! the world is quiet, then held to every rule ([`crate::check`]). Each
//! seed runs twice: two runs of one seed must write the same transcript.

pub mod mix;
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
    let (scenario, mix) = generate(seed);
    let run = crate::run(&scenario, seed, component);
    let mut broken = check::violations(&run);
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
    }
    Outcome { seed, mix, broken }
}

/// The command that replays a swarm seed.
pub fn replay_command(seed: u64) -> String {
    format!("cargo run -p surfaces-sim -- swarm --seeds 1 --from {seed} --verbose")
}

fn digest(lines: &[String]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    lines.hash(&mut h);
    h.finish()
}
