//! The cost of the guest: one event through wasm against the same logic
//! built natively, instantiation, and the stall of a swap.
//!
//! `cargo bench -p surfaces-embed`

use std::collections::BTreeMap;

use surfaces_embed::{
    AgentChunk, BoxedKv, Budget, Effect, Embedding, Entropy, Event, Guest, GuestComponent,
    HostInfo, MatrixEffect, MatrixResult, MemoryKv, RoomMessage, Sandbox,
};
use surfaces_guest::bot::Bot;
use surfaces_guest::host::Host;
use surfaces_guest::types as g;

fn main() {
    divan::main();
}

fn embedding() -> Embedding {
    Embedding::new(Sandbox {
        budget: Budget::Epoch {
            ticks: u64::MAX / 2,
        },
        memory_bytes: 64 << 20,
        entropy: Entropy::Os,
    })
    .expect("engine")
}

fn info() -> HostInfo {
    HostInfo {
        bot_user_id: "@bot:bench".into(),
        bot_display_name: "bot".into(),
        host_version: "bench".into(),
        settings: vec![],
        max_event_bytes: 65_536,
        resumed: false,
        guest_hash: String::new(),
        max_attachment_bytes: 8 << 20,
    }
}

fn message() -> RoomMessage {
    RoomMessage {
        room_id: "!dm".into(),
        event_id: "$1".into(),
        sender: "@alice:bench".into(),
        sender_display_name: Some("Alice".into()),
        body: "tell me something".into(),
        thread_root: None,
        reply_to: None,
        is_direct: true,
        mentions_bot: false,
        is_notice: false,
        origin_server_ts: 0,
        attachments: Vec::new(),
    }
}

/// The agent request id the guest gives the first message (after the
/// greeting notice took id 1).
const REQUEST: u64 = 2;

/// A wasm guest in the middle of streaming a reply.
fn streaming_wasm() -> (Guest, BoxedKv) {
    let e = embedding();
    let c = e.compile(surfaces_artifacts::GUEST_WASM).expect("compiles");
    streaming_wasm_of(&c)
}

/// The same, with the guest compiled once.
fn streaming_wasm_of(c: &GuestComponent) -> (Guest, BoxedKv) {
    let mut kv: BoxedKv = Box::<MemoryKv>::default();
    let (mut guest, _) = Guest::start(c, info(), &mut kv, 0).expect("starts");
    guest
        .handle(&Event::Message(message()), &mut kv, 0)
        .expect("message");
    (guest, kv)
}

/// The same logic natively, with a host that records effects in memory.
#[derive(Default)]
struct NativeHost {
    store: BTreeMap<String, Vec<u8>>,
    effects: usize,
    /// The last send's request id.
    sent: Option<u64>,
    now: u64,
}

impl Host for NativeHost {
    fn send(&mut self, request: u64, _: &str, _: &g::MessageContent) {
        self.effects += 1;
        self.sent = Some(request);
    }
    fn send_attachment(&mut self, _: u64, _: &str, _: &g::AttachmentContent) {
        self.effects += 1;
    }
    fn edit(&mut self, _: u64, _: &str, _: &g::EditTarget, _: &g::MessageContent) {
        self.effects += 1;
    }
    fn react(&mut self, _: u64, _: &str, _: &str, _: &str) {}
    fn set_typing(&mut self, _: &str, _: bool, _: u32) {}
    fn read_receipt(&mut self, _: &str, _: &str) {}
    fn join(&mut self, _: u64, _: &str) {}
    fn leave(&mut self, _: u64, _: &str) {}
    fn agent_submit(&mut self, _: u64, _: &str, _: &g::AgentMessage) {
        self.effects += 1;
    }
    fn agent_cancel(&mut self, _: &str) {}
    fn agent_reset(&mut self, _: &str) {}
    fn agent_feedback(&mut self, _: &str, _: &surfaces_guest::types::AgentFeedback) {}
    fn store_get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.store.get(key).cloned()
    }
    fn store_put(&mut self, key: &str, value: &[u8]) {
        self.store.insert(key.to_string(), value.to_vec());
    }
    fn store_delete(&mut self, key: &str) {
        self.store.remove(key);
    }
    fn store_keys(&mut self, prefix: &str) -> Vec<String> {
        self.store
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect()
    }
    fn store_keys_page(&mut self, prefix: &str, after: Option<&str>, limit: u32) -> Vec<String> {
        let mut keys = self.store_keys(prefix);
        keys.retain(|k| after.is_none_or(|a| k.as_str() > a));
        keys.truncate(limit as usize);
        keys
    }
    fn now(&mut self) -> u64 {
        self.now
    }
    fn set_timer(&mut self, _: u64, _: u64) {}
    fn cancel_timer(&mut self, _: u64) {}
    fn log(&mut self, _: g::LogLevel, _: &str) {}
    fn reload(&mut self, _: u64) {}
    fn rollback(&mut self, _: u64) {}
}

fn native_info() -> g::HostInfo {
    g::HostInfo {
        bot_user_id: "@bot:bench".into(),
        bot_display_name: "bot".into(),
        host_version: "bench".into(),
        settings: vec![],
        max_event_bytes: 65_536,
        resumed: false,
        guest_hash: String::new(),
        max_attachment_bytes: 8 << 20,
    }
}

fn streaming_native() -> (Bot, NativeHost) {
    let mut host = NativeHost::default();
    let mut bot = Bot::new(native_info(), &mut host).expect("starts");
    bot.handle(
        &mut host,
        g::Event::Message(g::RoomMessage {
            room_id: "!dm".into(),
            event_id: "$1".into(),
            sender: "@alice:bench".into(),
            sender_display_name: Some("Alice".into()),
            body: "tell me something".into(),
            thread_root: None,
            reply_to: None,
            is_direct: true,
            mentions_bot: false,
            is_notice: false,
            origin_server_ts: 0,
            attachments: Vec::new(),
        }),
    )
    .expect("message");
    (bot, host)
}

/// Chunks of the reply the guest is streaming, before the timed one: the
/// benchmark's reply (`scripts/bench-matrix`) is 50 chunks, 1 KB.
const CHUNKS_BEFORE: u64 = 25;
const CHUNK: &str = "word word word word ";

/// A wasm guest whose reply shows its first text (sent, answered) and has
/// had more chunks since: the state most chunks meet (between two
/// updates, so the chunk makes no Matrix request).
fn throttled_wasm(c: &GuestComponent) -> (Guest, BoxedKv) {
    let (mut guest, mut kv) = streaming_wasm_of(c);
    let chunk = |t: &str| {
        Event::AgentChunk(AgentChunk {
            request: REQUEST,
            text: t.into(),
        })
    };
    let out = guest.handle(&chunk(CHUNK), &mut kv, 0).expect("chunk");
    let sent = out
        .effects
        .iter()
        .find_map(|e| match e {
            Effect::Matrix(MatrixEffect::Send { request, .. }) => Some(*request),
            _ => None,
        })
        .expect("the first chunk is sent");
    let answer = Event::MatrixResult(MatrixResult {
        request: sent,
        outcome: Ok("$reply".into()),
    });
    guest.handle(&answer, &mut kv, 10).expect("answer");
    for n in 1..CHUNKS_BEFORE {
        let out = guest.handle(&chunk(CHUNK), &mut kv, 10 + n).expect("chunk");
        // The state the benchmark is for: between two updates.
        assert!(
            !out.effects.iter().any(|e| matches!(e, Effect::Matrix(_))),
            "a chunk between two updates makes no Matrix request"
        );
    }
    (guest, kv)
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

fn throttled_native() -> (Bot, NativeHost) {
    let (mut bot, mut host) = streaming_native();
    let chunk = || {
        g::Event::AgentChunk(g::AgentChunk {
            request: REQUEST,
            text: CHUNK.into(),
        })
    };
    bot.handle(&mut host, chunk()).expect("chunk");
    let sent = host.sent.take().expect("the first chunk is sent");
    host.now = 10;
    bot.handle(
        &mut host,
        g::Event::MatrixResult(g::MatrixResult {
            request: sent,
            outcome: Ok("$reply".into()),
        }),
    )
    .expect("answer");
    let before = host.effects;
    for n in 1..CHUNKS_BEFORE {
        host.now = 10 + n;
        bot.handle(&mut host, chunk()).expect("chunk");
    }
    // The state the benchmark is for: between two updates.
    assert_eq!(
        host.effects, before,
        "a chunk between two updates makes no request"
    );
    host.now = 100;
    (bot, host)
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
