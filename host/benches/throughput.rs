//! Chunks per second through the whole native host: the reference agent
//! (in process, the same client and server code as over a socket), the
//! event loop, the wasm guest, SQLite, and a front end that answers every
//! Matrix request at once. Each iteration, 16 room contexts each get one
//! question and stream a 50-chunk answer at full speed, with no edit
//! throttle (every chunk may cost an edit: the most work per chunk); divan
//! reports the chunks per second.
//!
//! `cargo bench -p surfaces-host`

use std::sync::Arc;
use std::time::Duration;

use divan::counter::ItemsCount;
use surfaces_embed::{
    Budget, Entropy, Event, HostInfo, MatrixEffect, MatrixResult, RoomMessage, Sandbox,
};
use surfaces_host::agent::client::{Backend, ClientConfig};
use surfaces_host::agent::pool::AgentPool;
use surfaces_host::agent::server::ServerConfig;
use surfaces_host::channels::{self, EventSender, Handle};
use surfaces_host::front::FrontEnd;
use surfaces_host::metrics::Metrics;
use surfaces_host::runtime::{GuestSource, Runtime, RuntimeConfig};
use surfaces_host::store::SqliteStore;
use tokio::sync::mpsc;

const ROOMS: usize = 16;
const CHUNKS: usize = 50;

fn main() {
    divan::main();
}

/// Answers every request at once; says when a reply is final.
struct Instant {
    events: EventSender,
    finished: mpsc::UnboundedSender<()>,
    next: u64,
}

impl FrontEnd for Instant {
    fn execute(&mut self, effect: MatrixEffect) {
        let (request, last) = match &effect {
            MatrixEffect::Send {
                request, content, ..
            }
            | MatrixEffect::Edit {
                request, content, ..
            } => (Some(*request), !content.live && !content.notice),
            MatrixEffect::React { request, .. }
            | MatrixEffect::SendAttachment { request, .. }
            | MatrixEffect::Join { request, .. }
            | MatrixEffect::Leave { request, .. } => (Some(*request), false),
            MatrixEffect::SetTyping { .. } | MatrixEffect::ReadReceipt { .. } => (None, false),
        };
        if let Some(request) = request {
            self.next += 1;
            let _ = self.events.send(Event::MatrixResult(MatrixResult {
                request,
                outcome: Ok(format!("$e{}", self.next)),
            }));
        }
        if last {
            let _ = self.finished.send(());
        }
    }
}

struct Host {
    rt: tokio::runtime::Runtime,
    handle: Handle,
    finished: mpsc::UnboundedReceiver<()>,
    asked: u64,
    _dir: tempfile::TempDir,
}

fn host() -> Host {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let dir = tempfile::tempdir().expect("temp dir");
    let channels = channels::channels();
    let handle = channels.handle.clone();
    let (finished_tx, finished) = mpsc::unbounded_channel();
    let front = Instant {
        events: handle.events.clone(),
        finished: finished_tx,
        next: 0,
    };
    let server = ServerConfig {
        chunks: CHUNKS,
        chunk_delay: Duration::ZERO,
        ..ServerConfig::default()
    };
    let kv = Box::new(SqliteStore::open(&dir.path().join("surfaces.db")).expect("db"));
    let config = RuntimeConfig {
        source: GuestSource::Builtin(surfaces_artifacts::GUEST_WASM),
        cache_dir: dir.path().join("guest-cache"),
        sandbox: Sandbox {
            budget: Budget::epoch_ms(200),
            memory_bytes: 64 << 20,
            entropy: Entropy::Os,
        },
        host_info: HostInfo {
            bot_user_id: "@bot:bench".into(),
            bot_display_name: "bot".into(),
            host_version: "bench".into(),
            settings: vec![
                ("context_scope".into(), "room".into()),
                ("edit_interval_ms".into(), "0".into()),
            ],
            max_event_bytes: 65_536,
            resumed: false,
            guest_hash: String::new(),
            max_attachment_bytes: 8 << 20,
        },
        shutdown_grace: Duration::from_secs(5),
        swap_check: surfaces_host::swapcheck::SwapCheck::Contract,
        kept_dir: dir.path().join("guests"),
    };
    let runtime = rt.block_on(async {
        let agents = AgentPool::new(
            ClientConfig::new(Backend::Echo(server)),
            ROOMS,
            Duration::from_secs(600),
            handle.events.clone(),
            handle.inbound.clone(),
        );
        let metrics: Arc<Metrics> = Metrics::new();
        Runtime::start(config, channels, kv, agents, Box::new(front), metrics).expect("starts")
    });
    rt.spawn(runtime.run());
    Host {
        rt,
        handle,
        finished,
        asked: 0,
        _dir: dir,
    }
}

impl Host {
    /// One question per room; returns once every answer is final.
    fn round(&mut self) {
        for room in 0..ROOMS {
            self.asked += 1;
            let _ = self.handle.events.send(Event::Message(RoomMessage {
                room_id: format!("!bench{room}:test"),
                event_id: format!("$q{}", self.asked),
                sender: "@alice:test".into(),
                sender_display_name: None,
                body: "stream this back to me, please, piece by piece ".repeat(8),
                thread_root: None,
                reply_to: None,
                is_direct: true,
                mentions_bot: false,
                is_notice: false,
                origin_server_ts: 0,
                attachments: Vec::new(),
            }));
        }
        let finished = &mut self.finished;
        self.rt.block_on(async {
            for _ in 0..ROOMS {
                finished.recv().await.expect("the host runs");
            }
        });
    }
}

#[divan::bench(sample_count = 20, sample_size = 1)]
fn chunks_through_the_host(bencher: divan::Bencher) {
    let mut host = host();
    host.round(); // warm: connections open, the guest compiled and greeting
    bencher
        .counter(ItemsCount::new(ROOMS * CHUNKS))
        .bench_local(|| host.round());
}
