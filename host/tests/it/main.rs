//! The native host's integration tests, as one binary (in the manner of
//! wasmtime's `tests/all`): wasmtime and matrix-sdk are linked once, not
//! once per file. A module per subject:
//!
//! - `agent`: the agent client against real WebSocket servers on loopback.
//! - `bench`: the footprint benchmark on Synapse (ignored; `scripts/bench-matrix`).
//! - `cli`: the `surfaces` command line, run as a user would.
//! - `guestkit`: `surfaces guest new | build | test`, as a guest author runs them.
//! - `load`: 64 contexts streaming at full speed for a minute.
//! - `matrix`: end to end on a real Synapse.
//! - `recovery`: the bot's encryption identity beyond its store, on Synapse.
//! - `runtime`: the event loop with its real parts.
//! - `store`: the SQLite store.
//! - `terminal`: the terminal front end.
//! - `verification`: an admin verifies the bot by emoji, on Synapse.

// matrix-sdk's futures are deep: proving them Send needs more than the default.
#![recursion_limit = "256"]

mod agent;
mod bench;
mod cli;
mod guestkit;
mod load;
mod matrix;
mod recovery;
mod runtime;
mod store;
mod terminal;
mod verification;
