//! The surfaces simulator: a deterministic host for the shipped guest.
//!
//! [`run`] plays a [`Scenario`] with a seed: virtual time, a seeded RNG, a
//! fake homeserver ([`homeserver`]) and fake agent servers, all in one
//! thread. The same seed gives a byte-identical transcript. [`check`] holds
//! the rules every run must keep; [`swarm`] draws worlds and fault mixes
//! from seeds and runs thousands of them.

pub mod check;
pub mod homeserver;
pub mod scenario;
pub mod swarm;
pub mod trial;
pub mod world;

use std::sync::OnceLock;

use surfaces_embed::{Budget, Embedding, Entropy, GuestComponent, Sandbox};

pub use scenario::Scenario;
pub use world::{Run, run, run_planted};

/// Fuel per guest call: far above what a real event needs, low enough to
/// stop a looping guest quickly and at the same point on every run.
pub const FUEL_PER_CALL: u64 = 2_000_000_000;

/// The simulator's embedding: deterministic in all the guest can see: a
/// fuel budget, not a wall-clock one; WASI's random streams seeded; and
/// WASI's clocks reading the call's virtual time (as on every host).
pub fn embedding() -> Result<Embedding, surfaces_embed::EmbedError> {
    Embedding::new(Sandbox {
        budget: Budget::Fuel {
            units: FUEL_PER_CALL,
        },
        memory_bytes: 256 << 20,
        entropy: Entropy::Seeded(0x5eed),
    })
}

type Compiled = OnceLock<Result<GuestComponent, String>>;

/// The shipped guest, compiled once per process.
pub fn shipped_guest() -> Result<&'static GuestComponent, String> {
    static GUEST: Compiled = OnceLock::new();
    compiled_once(&GUEST, surfaces_artifacts::GUEST_WASM)
}

/// The guest built with its planted bugs (never shipped), compiled once
/// per process: `planted = NAME` in its settings switches one on.
pub fn planted_guest() -> Result<&'static GuestComponent, String> {
    static GUEST: Compiled = OnceLock::new();
    compiled_once(&GUEST, surfaces_artifacts::PLANTED_WASM)
}

fn compiled_once(cell: &'static Compiled, wasm: &[u8]) -> Result<&'static GuestComponent, String> {
    cell.get_or_init(|| {
        let e = embedding().map_err(|e| e.to_string())?;
        e.compile(wasm).map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// The planted bug that lives in the shared inbox, not the guest.
pub const JOIN_CUTOFF: &str = "join-cutoff";

/// The command that replays a run.
pub fn replay_command(scenario: &str, seed: u64) -> String {
    format!("cargo run -p surfaces-sim -- run {scenario} --seed {seed}")
}
