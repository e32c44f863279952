//! The guest component, built by `build.rs` from `guest/`.

/// Path of the built guest `.wasm`.
pub const GUEST_WASM_PATH: &str = env!("SURFACES_GUEST_WASM");

/// The built guest `.wasm` (the one that ships, embedded).
pub static GUEST_WASM: &[u8] = include_bytes!(env!("SURFACES_GUEST_WASM"));

/// A guest that loops, traps or eats memory on request (sandbox tests).
pub static CHAOS_WASM: &[u8] = include_bytes!(env!("SURFACES_CHAOS_WASM"));

/// Path of the component without the `handle` export.
pub const BROKEN_WASM_PATH: &str = env!("SURFACES_BROKEN_WASM");

/// A component without the `handle` export (swap refusal tests).
pub static BROKEN_WASM: &[u8] = include_bytes!(env!("SURFACES_BROKEN_WASM"));

/// The guest built with its planted bugs (`guest/src/planted.rs`), for the
/// simulator's test that the swarm catches each. It never ships.
pub static PLANTED_WASM: &[u8] = include_bytes!(env!("SURFACES_PLANTED_WASM"));

/// The shipped guest as its next release might be (feature `next-schema`):
/// queued messages carry a field more, schema 2, still readable by the
/// shipped guest's schema 1. It never ships.
pub static GUEST_NEXT_WASM: &[u8] = include_bytes!(env!("SURFACES_GUEST_NEXT_WASM"));

/// Path of the echo example (`guest/examples/echo`, the template of
/// `surfaces guest new`): a guest on the SDK that is not the bot.
pub const ECHO_WASM_PATH: &str = env!("SURFACES_ECHO_WASM");

/// The echo example's `.wasm`.
pub static ECHO_WASM: &[u8] = include_bytes!(env!("SURFACES_ECHO_WASM"));

/// Path of the chaos guest (it answers nothing unless told to misbehave).
pub const CHAOS_WASM_PATH: &str = env!("SURFACES_CHAOS_WASM");

/// The notes example (`guest/examples/notes`), first version: notes as
/// one text, schema 1.
pub static NOTES_V1_WASM: &[u8] = include_bytes!(env!("SURFACES_NOTES_V1_WASM"));

/// The notes example's second version: notes as lines, schema 2, with
/// the migration from 1.
pub static NOTES_V2_WASM: &[u8] = include_bytes!(env!("SURFACES_NOTES_V2_WASM"));

/// Path of the echo example as it was built for contract 0.1.0 (at commit
/// e7af78e), kept frozen: a guest built for an older contract must keep
/// loading and keep the promises.
pub const ECHO_0_1_0_WASM_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/guests/echo-0.1.0.wasm"
);

/// The frozen 0.1.0 echo's `.wasm`.
pub static ECHO_0_1_0_WASM: &[u8] = include_bytes!("../../tests/guests/echo-0.1.0.wasm");

/// Path of the echo example as it was built for contract 0.2.0 (at commit
/// 9efa373), kept frozen like the 0.1.0 one.
pub const ECHO_0_2_0_WASM_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/guests/echo-0.2.0.wasm"
);

/// The frozen 0.2.0 echo's `.wasm`.
pub static ECHO_0_2_0_WASM: &[u8] = include_bytes!("../../tests/guests/echo-0.2.0.wasm");

/// Path of the echo example as it was built for contract 0.3.0 (at commit
/// 2545917), kept frozen like the older ones.
pub const ECHO_0_3_0_WASM_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/guests/echo-0.3.0.wasm"
);

/// The frozen 0.3.0 echo's `.wasm`.
pub static ECHO_0_3_0_WASM: &[u8] = include_bytes!("../../tests/guests/echo-0.3.0.wasm");
