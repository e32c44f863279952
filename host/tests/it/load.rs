//! Load on the native host: 64 room contexts streaming at full speed from
//! the reference agent (in process: the same client and server code as
//! over a socket) for a minute. Every reply must end complete, nothing may
//! be left in the store, and memory must stay bounded. The figures
//! (replies, chunks per second, resident memory) are printed; timings are
//! never asserted (`cargo bench -p surfaces-host` measures throughput).

use std::time::{Duration, Instant};

use surfaces_embed::KvStore;
use surfaces_host::runtime::GuestSource;
use surfaces_host::store::SqliteStore;

use super::runtime::Setup;

const ROOMS: usize = 64;
const RUN: Duration = Duration::from_secs(60);
const CHUNKS: usize = 50;
/// Every wait is for progress, bounded by this.
const PATIENCE: Duration = Duration::from_secs(60);

/// The process's resident memory, in MiB (Linux).
fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

fn question(room: usize, n: u32) -> String {
    format!(
        "room {room}, question {n}: {}end",
        "stream me back. ".repeat(30)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_contexts_stream_for_a_minute_and_every_reply_ends_complete() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut setup = Setup::new(
        dir.path(),
        GuestSource::Builtin(surfaces_artifacts::GUEST_WASM),
    );
    setup.settings.push(("context_scope".into(), "room".into()));
    setup.server.chunks = CHUNKS;
    setup.server.chunk_delay = Duration::ZERO;
    setup.max_connections = ROOMS;
    let mut bot = setup.start();
    let rooms: Vec<String> = (0..ROOMS).map(|r| format!("!load{r}:test")).collect();
    // Per room: the question waiting for its answer (event id, n).
    let mut waiting: Vec<Option<(String, u32)>> = vec![None; ROOMS];
    let ask = |bot: &super::runtime::Bot, room: usize, n: u32| {
        let id = format!("$q{room}-{n}");
        bot.say_in(&rooms[room], &id, &question(room, n));
        (id, n)
    };
    let started = Instant::now();
    for (room, slot) in waiting.iter_mut().enumerate() {
        *slot = Some(ask(&bot, room, 0));
    }
    let mut answered = 0u64;
    let mut warm_rss = None;
    let mut peak_rss = rss_mib();
    while waiting.iter().any(Option::is_some) {
        let next = tokio::time::timeout(PATIENCE, bot.effects.recv()).await;
        let Ok(Some((effect, event_id))) = next else {
            panic!("no progress for {PATIENCE:?}; {answered} answered");
        };
        bot.replies.record(&effect, event_id);
        for (room, slot) in waiting.iter_mut().enumerate() {
            let Some((id, n)) = slot.clone() else {
                continue;
            };
            let Some(text) = bot.replies.final_text(&id) else {
                continue;
            };
            assert_eq!(text, question(room, n), "the reply to {id} is complete");
            answered += 1;
            *slot = (started.elapsed() < RUN).then(|| ask(&bot, room, n + 1));
        }
        if answered.is_multiple_of(ROOMS as u64) {
            peak_rss = peak_rss.max(rss_mib());
            if warm_rss.is_none() && started.elapsed() >= Duration::from_secs(10) {
                warm_rss = Some(rss_mib());
            }
        }
    }
    let elapsed = started.elapsed();
    let end_rss = rss_mib();
    let chunks = answered * CHUNKS as u64;
    eprintln!(
        "load: {answered} replies of {CHUNKS} chunks in {:.1}s from {ROOMS} contexts: \
         {:.0} chunks/s, {:.1} replies/s; resident memory {} MiB after 10 s, {peak_rss} MiB \
         at the peak, {end_rss} MiB at the end",
        elapsed.as_secs_f64(),
        chunks as f64 / elapsed.as_secs_f64(),
        answered as f64 / elapsed.as_secs_f64(),
        warm_rss.unwrap_or(0),
    );
    assert_eq!(bot.metric("surfaces_guest_failures_total"), 0);
    bot.stop().await;
    // Bounded: what the warm loop held is all it holds (the guest's memory
    // is capped at 64 MiB; every channel in between is bounded).
    if let Some(warm) = warm_rss {
        assert!(
            peak_rss <= warm + 256,
            "memory grew under steady load: {warm} MiB after 10 s, {peak_rss} MiB at the peak"
        );
    }
    let store = SqliteStore::open(&setup.db).expect("open");
    for prefix in ["reply/", "chunk/", "out/", "timer/", "route/", "wait/"] {
        let left = store.keys(prefix).expect("keys");
        assert!(left.is_empty(), "the store still holds {left:?}");
    }
}
