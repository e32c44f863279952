//! Agent chunks between two updates, in a loop, for counting instructions
//! (the guest-call benchmark's state, `benches/guest.rs`): wall time on
//! this machine is too noisy to compare a change of a few hundred
//! instructions. `scripts/count-chunk` runs it under callgrind.
//!
//! `chunk_loop wasm|native|empty N`: N chunks through the wasm guest, the
//! same logic natively, or N empty calls (the test guest ignores timers).

#[path = "../benches/states/mod.rs"]
mod states;

use std::path::PathBuf;

use surfaces_embed::{AgentChunk, BoxedKv, Event, Guest, MemoryKv};
use surfaces_guest::types as g;

use states::{CHUNK, REQUEST, embedding, info, throttled_native, throttled_wasm};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let n: u64 = args.next().unwrap_or_default().parse()?;
    // Compiled once and loaded after: a compile in the count would swamp it.
    let cache = std::env::var_os("CHUNK_LOOP_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("surfaces-chunk-loop"));
    std::fs::create_dir_all(&cache)?;
    let e = embedding();
    match mode.as_str() {
        "wasm" => {
            let (c, _) = e.compile_cached(surfaces_artifacts::GUEST_WASM, &cache)?;
            let (mut guest, mut kv) = throttled_wasm(&c);
            let event = Event::AgentChunk(AgentChunk {
                request: REQUEST,
                text: CHUNK.into(),
            });
            for _ in 0..n {
                guest.handle(&event, &mut kv, 100)?;
            }
        }
        "native" => {
            let (mut bot, mut host) = throttled_native();
            for _ in 0..n {
                let chunk = g::Event::AgentChunk(g::AgentChunk {
                    request: REQUEST,
                    text: CHUNK.into(),
                });
                bot.handle(&mut host, chunk).map_err(anyhow::Error::msg)?;
            }
        }
        "empty" => {
            let (c, _) = e.compile_cached(surfaces_artifacts::CHAOS_WASM, &cache)?;
            let mut kv: BoxedKv = Box::<MemoryKv>::default();
            let (mut guest, _) = Guest::start(&c, info(), &mut kv, 0)?;
            for _ in 0..n {
                guest.handle(&Event::Timer(1), &mut kv, 0)?;
            }
        }
        other => anyhow::bail!("chunk_loop wasm|native|empty N (not {other:?})"),
    }
    Ok(())
}
