//! The cost of the guest: one event through wasm against the same logic
//! built natively, instantiation, and the stall of a swap.
//!
//! `cargo bench -p surfaces-embed`

mod states;

use states::{
    CHUNK, REQUEST, embedding, info, streaming_native, streaming_wasm, throttled_native,
    throttled_wasm,
};
use surfaces_embed::{AgentChunk, BoxedKv, Event, Guest, GuestComponent, MemoryKv};
use surfaces_guest::types as g;

fn main() {
    divan::main();
}

/// An agent chunk for a reply between two updates, each sample on a fresh
/// reply of the same length (a reply whose text grew with every sample
/// would time a different state at each).
#[divan::bench(name = "chunk_wasm", sample_size = 1)]
fn chunk_wasm(bencher: divan::Bencher) {
    let event = Event::AgentChunk(AgentChunk {
        request: REQUEST,
        text: CHUNK.into(),
    });
    let e = embedding();
    let c = e.compile(surfaces_artifacts::GUEST_WASM).expect("compiles");
    bencher
        .with_inputs(|| throttled_wasm(&c))
        .bench_local_refs(|(guest, kv)| guest.handle(&event, kv, 100).expect("chunk"));
}

#[divan::bench(name = "chunk_native", sample_size = 1)]
fn chunk_native(bencher: divan::Bencher) {
    bencher
        .with_inputs(throttled_native)
        .bench_local_refs(|(bot, host)| {
            bot.handle(
                host,
                g::Event::AgentChunk(g::AgentChunk {
                    request: REQUEST,
                    text: CHUNK.into(),
                }),
            )
            .expect("chunk")
        });
}

/// A timer nobody set: the cheapest event, mostly boundary cost.
#[divan::bench(name = "stray_timer_wasm")]
fn stray_timer_wasm(bencher: divan::Bencher) {
    let (mut guest, mut kv) = streaming_wasm();
    let event = Event::Timer(999_999);
    bencher.bench_local(|| guest.handle(&event, &mut kv, 0).expect("timer"));
}

#[divan::bench(name = "stray_timer_native")]
fn stray_timer_native(bencher: divan::Bencher) {
    let (mut bot, mut host) = streaming_native();
    bencher.bench_local(|| {
        bot.handle(&mut host, g::Event::Timer(999_999))
            .expect("timer")
    });
}

/// A fresh instance and its `init` (what a trap recovery costs).
#[divan::bench]
fn instantiate_and_init(bencher: divan::Bencher) {
    let e = embedding();
    let c: GuestComponent = e.compile(surfaces_artifacts::GUEST_WASM).expect("compiles");
    let mut kv: BoxedKv = Box::<MemoryKv>::default();
    bencher.bench_local(|| Guest::start(&c, info(), &mut kv, 0).expect("starts"));
}

/// Loading a precompiled guest from the cache (done off the event loop).
#[divan::bench]
fn load_precompiled(bencher: divan::Bencher) {
    let e = embedding();
    let dir = tempfile::tempdir().expect("tempdir");
    e.compile_cached(surfaces_artifacts::GUEST_WASM, dir.path())
        .expect("warm the cache");
    bencher.bench_local(|| {
        e.compile_cached(surfaces_artifacts::GUEST_WASM, dir.path())
            .expect("cached")
    });
}

/// The stall of a swap on the event loop, the new guest already loaded:
/// instantiate, `init`, switch.
#[divan::bench]
fn swap_stall(bencher: divan::Bencher) {
    let e = embedding();
    let next = e.compile(surfaces_artifacts::GUEST_WASM).expect("compiles");
    let (mut guest, mut kv) = streaming_wasm();
    bencher.bench_local(|| guest.swap(&next, &mut kv, 0).expect("swap"));
}

/// The floor: one event into a guest that does nothing with it (the test
/// guest ignores timers), i.e. the embedding's and wasmtime's cost of a
/// call, with no guest logic and no imports.
#[divan::bench]
fn empty_call_wasm(bencher: divan::Bencher) {
    let e = embedding();
    let c = e.compile(surfaces_artifacts::CHAOS_WASM).expect("compiles");
    let mut kv: BoxedKv = Box::<MemoryKv>::default();
    let (mut guest, _) = Guest::start(&c, info(), &mut kv, 0).expect("starts");
    let event = Event::Timer(1);
    bencher.bench_local(|| guest.handle(&event, &mut kv, 0).expect("timer"));
}
