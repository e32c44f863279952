//! The states the guest-call benchmark times, built alike for the wasm
//! guest and the same logic natively: shared by `benches/guest.rs` and
//! `examples/chunk_loop.rs` (instruction counts under callgrind).

#![allow(dead_code)] // each user takes what it needs

use std::collections::BTreeMap;

use surfaces_embed::{
    AgentChunk, BoxedKv, Budget, Effect, Embedding, Entropy, Event, Guest, GuestComponent,
    HostInfo, MatrixEffect, MatrixResult, MemoryKv, RoomMessage, Sandbox,
};
use surfaces_guest::bot::Bot;
use surfaces_guest::host::Host;
use surfaces_guest::types as g;

pub fn embedding() -> Embedding {
    Embedding::new(Sandbox {
        budget: Budget::Epoch {
            ticks: u64::MAX / 2,
        },
        memory_bytes: 64 << 20,
        entropy: Entropy::Os,
    })
    .expect("engine")
}

pub fn info() -> HostInfo {
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

pub fn message() -> RoomMessage {
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
pub const REQUEST: u64 = 2;

/// A wasm guest in the middle of streaming a reply.
pub fn streaming_wasm() -> (Guest, BoxedKv) {
    let e = embedding();
    let c = e.compile(surfaces_artifacts::GUEST_WASM).expect("compiles");
    streaming_wasm_of(&c)
}

/// The same, with the guest compiled once.
pub fn streaming_wasm_of(c: &GuestComponent) -> (Guest, BoxedKv) {
    let mut kv: BoxedKv = Box::<MemoryKv>::default();
    let (mut guest, _) = Guest::start(c, info(), &mut kv, 0).expect("starts");
    guest
        .handle(&Event::Message(message()), &mut kv, 0)
        .expect("message");
    (guest, kv)
}

/// The same logic natively, with a host that records effects in memory.
#[derive(Default)]
pub struct NativeHost {
    pub store: BTreeMap<String, Vec<u8>>,
    pub effects: usize,
    /// The last send's request id.
    pub sent: Option<u64>,
    pub now: u64,
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

pub fn native_info() -> g::HostInfo {
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

pub fn streaming_native() -> (Bot, NativeHost) {
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
pub const CHUNKS_BEFORE: u64 = 25;
pub const CHUNK: &str = "word word word word ";

/// A wasm guest whose reply shows its first text (sent, answered) and has
/// had more chunks since: the state most chunks meet (between two
/// updates, so the chunk makes no Matrix request).
pub fn throttled_wasm(c: &GuestComponent) -> (Guest, BoxedKv) {
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

pub fn throttled_native() -> (Bot, NativeHost) {
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
