//! The embedding contains a misbehaving guest: traps, endless loops and
//! memory hogs become error values, their effects and writes are dropped,
//! and the next event runs on a fresh instance.

mod common;
use common::{dm, info};

use surfaces_embed::{
    BoxedKv, Budget, Effect, Embedding, Entropy, Guest, GuestComponent, GuestError, LogLevel,
    MatrixEffect, MemoryKv, Sandbox,
};

fn chaos(sandbox: Sandbox) -> GuestComponent {
    Embedding::new(sandbox)
        .expect("engine")
        .compile(surfaces_artifacts::CHAOS_WASM)
        .expect("chaos guest compiles")
}

fn fuel() -> Sandbox {
    Sandbox {
        budget: Budget::Fuel { units: 50_000_000 },
        memory_bytes: 32 << 20,
        entropy: Entropy::Os,
    }
}

fn sent(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Matrix(MatrixEffect::Send { content, .. }) => Some(content.body.clone()),
            _ => None,
        })
        .collect()
}

fn keys(kv: &BoxedKv) -> Vec<String> {
    kv.keys("").expect("memory kv")
}

#[test]
fn effects_and_writes_of_a_normal_event_go_through() {
    let c = chaos(fuel());
    let mut kv: BoxedKv = Box::<MemoryKv>::default();
    let (mut g, _) = Guest::start(&c, info(&[]), &mut kv, 0).expect("starts");
    let out = g.handle(&dm("write k1"), &mut kv, 0).expect("handled");
    assert!(out.effects.is_empty());
    assert_eq!(keys(&kv), vec!["k1"]);
    let out = g.handle(&dm("send hello"), &mut kv, 0).expect("handled");
    assert_eq!(sent(&out.effects), vec!["hello"]);
}

#[test]
fn a_trap_is_contained_and_loses_the_events_writes_and_effects() {
    let c = chaos(fuel());
    let mut kv: BoxedKv = Box::<MemoryKv>::default();
    let (mut g, _) = Guest::start(&c, info(&[]), &mut kv, 0).expect("starts");
    g.handle(&dm("count"), &mut kv, 0).expect("handled");
    let err = g.handle(&dm("write-then-trap k2"), &mut kv, 0).unwrap_err();
    assert!(matches!(err, GuestError::Trap(_)), "{err}");
    assert!(keys(&kv).is_empty(), "a trapped event's write was kept");
    // The next event runs on a fresh instance: its call counter restarts.
    let out = g.handle(&dm("count"), &mut kv, 0).expect("fresh instance");
    assert_eq!(sent(&out.effects), vec!["1"]);
    assert_eq!(g.instances(), 2);
}

#[test]
fn an_endless_loop_runs_out_of_fuel() {
    let c = chaos(fuel());
    let mut kv: BoxedKv = Box::<MemoryKv>::default();
    let (mut g, _) = Guest::start(&c, info(&[]), &mut kv, 0).expect("starts");
    let err = g.handle(&dm("loop"), &mut kv, 0).unwrap_err();
    assert!(matches!(err, GuestError::Timeout), "{err}");
    let out = g
        .handle(&dm("send still here"), &mut kv, 0)
        .expect("recovers");
    assert_eq!(sent(&out.effects), vec!["still here"]);
}

#[test]
fn an_endless_loop_hits_the_epoch_deadline() {
    let e = Embedding::new(Sandbox {
        budget: Budget::Epoch { ticks: 2 },
        memory_bytes: 32 << 20,
        entropy: Entropy::Os,
    })
    .expect("engine");
    let c = e.compile(surfaces_artifacts::CHAOS_WASM).expect("compiles");
    // No ticker here: the embedding advances its epoch while a call runs
    // (and only then).
    let mut kv: BoxedKv = Box::<MemoryKv>::default();
    let (mut g, _) = Guest::start(&c, info(&[]), &mut kv, 0).expect("starts");
    let err = g.handle(&dm("loop"), &mut kv, 0).unwrap_err();
    let ok = g.handle(&dm("send after"), &mut kv, 0);
    assert!(matches!(err, GuestError::Timeout), "{err}");
    assert_eq!(sent(&ok.expect("recovers").effects), vec!["after"]);
}

#[test]
fn a_memory_hog_hits_the_cap() {
    let c = chaos(fuel());
    let mut kv: BoxedKv = Box::<MemoryKv>::default();
    let (mut g, _) = Guest::start(&c, info(&[]), &mut kv, 0).expect("starts");
    let err = g.handle(&dm("oom"), &mut kv, 0).unwrap_err();
    assert!(matches!(err, GuestError::OutOfMemory), "{err}");
    g.handle(&dm("count"), &mut kv, 0).expect("recovers");
}

#[test]
fn an_error_return_loses_the_events_writes_and_effects_like_a_trap() {
    let c = chaos(fuel());
    let mut kv: BoxedKv = Box::<MemoryKv>::default();
    let (mut g, _) = Guest::start(&c, info(&[]), &mut kv, 0).expect("starts");
    g.handle(&dm("count"), &mut kv, 0).expect("handled");
    let err = g
        .handle(&dm("write-then-error k3"), &mut kv, 0)
        .unwrap_err();
    assert!(
        matches!(err, GuestError::Failed(ref m) if m.contains("failed after writing")),
        "{err}"
    );
    assert!(keys(&kv).is_empty(), "a failed event's write was kept");
    // Its memory may be ahead of the store: the next event gets a fresh one.
    let out = g.handle(&dm("count"), &mut kv, 0).expect("fresh instance");
    assert_eq!(sent(&out.effects), vec!["1"]);
}

#[test]
fn a_failing_event_is_delivered_once_more_then_dropped_with_its_logs() {
    let c = chaos(fuel());
    let mut kv: BoxedKv = Box::<MemoryKv>::default();
    let (mut g, _) = Guest::start(&c, info(&[]), &mut kv, 0).expect("starts");
    let d = g.handle_retrying(&dm("write-then-error k4"), &mut kv, 0);
    assert!(d.output.is_none(), "a poison event is dropped");
    assert_eq!(d.failures.len(), 2, "tried on a fresh instance once more");
    for attempt in &d.failures {
        assert!(matches!(attempt.error, GuestError::Failed(_)));
        assert!(
            attempt
                .logs
                .iter()
                .any(|l| l.level == LogLevel::Warn && l.message == "failing after a write"),
            "the failed call's log lines are kept: {:?}",
            attempt.logs
        );
    }
    assert!(keys(&kv).is_empty());
    // A trap's panic message reaches the host as a log line.
    let d = g.handle_retrying(&dm("trap"), &mut kv, 0);
    assert!(d.output.is_none());
    assert!(
        d.failures[0]
            .logs
            .iter()
            .any(|l| l.level == LogLevel::Error && l.message.contains("asked to trap")),
        "{:?}",
        d.failures[0].logs
    );
    // A transient failure loses nothing: the next attempt goes through.
    let d = g.handle_retrying(&dm("send ok"), &mut kv, 0);
    assert!(d.failures.is_empty());
    assert_eq!(sent(&d.output.expect("handled").effects), vec!["ok"]);
}

#[test]
fn a_guest_refusing_its_config_does_not_start() {
    let c = chaos(fuel());
    let mut kv: BoxedKv = Box::<MemoryKv>::default();
    let err = Guest::start(&c, info(&[("refuse", "1")]), &mut kv, 0).unwrap_err();
    assert!(
        matches!(err, GuestError::Rejected(ref r) if r.contains("refused")),
        "{err}"
    );
}

#[test]
fn bytes_that_are_not_a_component_are_refused() {
    let e = Embedding::new(fuel()).expect("engine");
    let err = e.compile(b"\0asm not really").unwrap_err();
    assert!(
        err.to_string().contains("not a valid surfaces guest"),
        "{err}"
    );
}

#[test]
fn the_shipped_guest_starts_and_rejects_bad_settings() {
    let e = Embedding::new(fuel()).expect("engine");
    let c = e
        .compile(surfaces_artifacts::GUEST_WASM)
        .expect("shipped guest compiles");
    let mut kv: BoxedKv = Box::<MemoryKv>::default();
    let (g, _) = Guest::start(&c, info(&[]), &mut kv, 0).expect("starts");
    assert_eq!(g.info().name, "surfaces-guest");
    let err = Guest::start(&c, info(&[("edit_interval_ms", "soon")]), &mut kv, 0).unwrap_err();
    assert!(err.to_string().contains("edit_interval_ms"), "{err}");
}

#[test]
fn the_shipped_guest_sets_an_undecodable_record_aside_and_goes_on() {
    let e = Embedding::new(fuel()).expect("engine");
    let c = e
        .compile(surfaces_artifacts::GUEST_WASM)
        .expect("shipped guest compiles");
    let mut store = MemoryKv::default();
    // Records a newer or broken guest left behind, unreadable to this one.
    store.map.insert("ctx/shared".into(), b"{not json".to_vec());
    store
        .map
        .insert("user/@alice:test".into(), b"[1, 2".to_vec());
    let mut kv: BoxedKv = Box::new(store);
    let (mut g, _) = Guest::start(&c, info(&[]), &mut kv, 0).expect("starts");
    let out = g
        .handle(&dm("hello there"), &mut kv, 0)
        .expect("the message is handled");
    let submitted = out
        .effects
        .iter()
        .any(|e| matches!(e, Effect::Agent(surfaces_embed::AgentEffect::Submit { .. })));
    assert!(
        submitted,
        "the message went to the agent: {:?}",
        out.effects
    );
    assert!(
        out.logs
            .iter()
            .any(|l| l.level == LogLevel::Error && l.message.contains("set aside")),
        "{:?}",
        out.logs
    );
    assert_eq!(
        kv.get("bad/ctx/shared").expect("kv").as_deref(),
        Some(&b"{not json"[..])
    );
    assert!(kv.get("bad/user/@alice:test").expect("kv").is_some());
    let ctx = kv.get("ctx/shared").expect("kv").expect("a fresh context");
    assert!(serde_json::from_slice::<serde_json::Value>(&ctx).is_ok());
}

#[test]
fn the_shipped_guest_tells_a_sender_once_a_day_that_a_message_could_not_be_decrypted() {
    use surfaces_embed::{Event, Undecryptable};
    let e = Embedding::new(fuel()).expect("engine");
    let c = e
        .compile(surfaces_artifacts::GUEST_WASM)
        .expect("shipped guest compiles");
    let mut kv: BoxedKv = Box::<MemoryKv>::default();
    let (mut g, _) = Guest::start(&c, info(&[]), &mut kv, 0).expect("starts");
    let utd = |room: &str, event: &str| {
        Event::Undecryptable(Undecryptable {
            room_id: room.into(),
            event_id: event.into(),
            sender: "@alice:test".into(),
            is_direct: true,
        })
    };
    let mut notices = |event: Event, now: u64| -> Vec<String> {
        sent(&g.handle(&event, &mut kv, now).expect("handled").effects)
    };
    let hour = 3600 * 1000;
    let first = notices(utd("!a", "$1"), hour);
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].contains("could not decrypt"), "{first:?}");
    // A run of them is one problem; another room is another.
    let again = notices(utd("!a", "$2"), 2 * hour);
    assert!(again.is_empty(), "{again:?}");
    let other = notices(utd("!b", "$3"), 2 * hour);
    assert_eq!(other.len(), 1);
    let next_day = notices(utd("!a", "$4"), 30 * hour);
    assert_eq!(next_day.len(), 1);
}

#[test]
fn a_call_that_hands_over_too_much_fails_like_a_trap() {
    let c = chaos(Sandbox {
        budget: Budget::Fuel {
            units: 2_000_000_000,
        },
        memory_bytes: 32 << 20,
        entropy: Entropy::Os,
    });
    let mut kv: BoxedKv = Box::<MemoryKv>::default();
    let (mut g, _) = Guest::start(&c, info(&[]), &mut kv, 0).expect("starts");
    let out = g
        .handle(&dm("flood 100"), &mut kv, 0)
        .expect("within the caps");
    assert_eq!(out.effects.len(), 100);
    let err = g.handle(&dm("flood 20000"), &mut kv, 0).unwrap_err();
    assert!(matches!(err, GuestError::OverCap("effects")), "{err}");
    let err = g.handle(&dm("shout 2000"), &mut kv, 0).unwrap_err();
    assert!(matches!(err, GuestError::OverCap("log bytes")), "{err}");
    // The next call runs on a fresh instance, with fresh caps.
    let out = g.handle(&dm("send fine"), &mut kv, 0).expect("recovers");
    assert_eq!(sent(&out.effects), vec!["fine"]);
}

/// What the guest reads from WASI's clocks and random streams, through
/// std and the raw import, on a fresh instance at `now_ms`.
fn wasi_view(entropy: Entropy, now_ms: u64) -> String {
    let c = chaos(Sandbox { entropy, ..fuel() });
    let mut kv: BoxedKv = Box::<MemoryKv>::default();
    let (mut g, _) = Guest::start(&c, info(&[]), &mut kv, now_ms).expect("starts");
    let out = g.handle(&dm("wasi"), &mut kv, now_ms).expect("handled");
    sent(&out.effects).concat()
}

#[test]
fn wasi_clocks_read_the_call_s_time_and_seeded_random_streams_replay() {
    let seen = wasi_view(Entropy::Seeded(7), 1_700_000_000_123);
    assert!(seen.starts_with("wall=1700000000123 "), "{seen}");
    // The same seed and time: the very same view, secure random included.
    assert_eq!(wasi_view(Entropy::Seeded(7), 1_700_000_000_123), seen);
    // Another seed draws another secure stream.
    let secure = |v: &str| {
        v.split(' ')
            .find(|w| w.starts_with("secure="))
            .map(str::to_string)
    };
    assert_ne!(
        secure(&wasi_view(Entropy::Seeded(8), 1_700_000_000_123)),
        secure(&seen)
    );
    // The native host's entropy is the system's: two instances differ.
    assert_ne!(
        secure(&wasi_view(Entropy::Os, 5)),
        secure(&wasi_view(Entropy::Os, 5))
    );
}
