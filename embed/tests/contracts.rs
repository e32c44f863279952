//! Contract versions: a guest built for an older `surfaces:bot` keeps
//! loading and working through its adapters, and the newest contract's
//! additions reach a guest built for it.

mod common;
use common::{dm, info};

use sha2::{Digest, Sha256};
use surfaces_embed::{
    BoxedKv, Budget, Contract, Effect, Embedding, Entropy, Event, Guest, MatrixEffect,
    MatrixResult, Media, MediaKind, MemoryKv, Reaction, ReloadOutcome, ReloadResult, Sandbox,
    content_hash,
};

fn embedding() -> Embedding {
    Embedding::new(Sandbox {
        budget: Budget::Fuel { units: 500_000_000 },
        memory_bytes: 64 << 20,
        entropy: Entropy::Os,
    })
    .expect("engine")
}

/// The sends of one call: (request, body).
fn sends(out: &surfaces_embed::Output) -> Vec<(u64, String)> {
    out.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Matrix(MatrixEffect::Send {
                request, content, ..
            }) => Some((*request, content.body.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_released_contract_is_never_changed() {
    // A guest built for a released version links against its file's names
    // and types: change it and such guests stop loading. A new contract is
    // a new version next to it (see `embed/src/version`).
    for (file, frozen, expected) in [
        (
            "wit/0.1.0/surfaces.wit",
            &include_bytes!("../../wit/0.1.0/surfaces.wit")[..],
            "82190382bca138dad27bd0e80dd95eac72f393587c437d8ebe61199aeafe4801",
        ),
        (
            "wit/0.2.0/surfaces.wit",
            &include_bytes!("../../wit/0.2.0/surfaces.wit")[..],
            "fd127f3b12332bb7cfb3ceb24036d27e8d8238045f4426129053216f4f05ea53",
        ),
        (
            "wit/0.3.0/surfaces.wit",
            &include_bytes!("../../wit/0.3.0/surfaces.wit")[..],
            "433ee72f38be0a98e45d33510e308899128bb8db2f375704797138aff5e230b7",
        ),
    ] {
        let hash: String = Sha256::digest(frozen)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hash, expected, "{file} changed");
    }
}

#[test]
fn a_frozen_0_1_0_guest_loads_answers_and_keeps_its_outbox_through_the_adapters() {
    frozen_guest_keeps_its_promises(surfaces_artifacts::ECHO_0_1_0_WASM, Contract::V0_1_0);
}

#[test]
fn a_frozen_0_2_0_guest_loads_answers_and_keeps_its_outbox_through_the_adapters() {
    frozen_guest_keeps_its_promises(surfaces_artifacts::ECHO_0_2_0_WASM, Contract::V0_2_0);
}

#[test]
fn a_frozen_0_3_0_guest_loads_answers_and_keeps_its_outbox_through_the_adapters() {
    frozen_guest_keeps_its_promises(surfaces_artifacts::ECHO_0_3_0_WASM, Contract::V0_3_0);
}

/// A frozen echo built for `contract`: loads, answers, keeps its outbox
/// through a rate limit, takes every swap outcome and is never called
/// with an event its contract lacks.
fn frozen_guest_keeps_its_promises(wasm: &[u8], contract: Contract) {
    let e = embedding();
    let old = e
        .compile(wasm)
        .expect("a guest built for an older contract compiles on this host");
    assert_eq!(old.contract(), contract);
    let mut kv: BoxedKv = Box::<MemoryKv>::default();
    let (mut g, _) = Guest::start(&old, info(&[]), &mut kv, 0).expect("starts");
    assert_eq!(g.info().name, "surfaces-echo-guest");

    // A message in, the echo out: the event and the send both cross the
    // adapters.
    let out = g.handle(&dm("hello there"), &mut kv, 1).expect("handled");
    let sent = sends(&out);
    assert_eq!(sent.len(), 1, "{:?}", out.effects);
    let (request, body) = sent[0].clone();
    assert_eq!(body, "hello there");

    // Rate limited: the outbox keeps it and sends again after the timer.
    let limited = Event::MatrixResult(MatrixResult {
        request,
        outcome: Err(surfaces_embed::MatrixError {
            kind: surfaces_embed::MatrixErrorKind::RateLimited,
            message: "slow down".into(),
            retry_after_ms: Some(500),
        }),
    });
    let out = g.handle(&limited, &mut kv, 2).expect("handled");
    let timer = out
        .effects
        .iter()
        .find_map(|e| match e {
            Effect::Timer(surfaces_embed::TimerEffect::Set { id, delay_ms }) => {
                Some((*id, *delay_ms))
            }
            _ => None,
        })
        .expect("a timer to send again");
    assert!(timer.1 >= 500, "waits out retry_after: {timer:?}");
    let out = g
        .handle(&Event::Timer(timer.0), &mut kv, 600)
        .expect("handled");
    assert_eq!(
        sends(&out).into_iter().map(|(_, b)| b).collect::<Vec<_>>(),
        ["hello there"]
    );

    // Events of a later contract are not delivered (the call is skipped,
    // nothing fails).
    let reaction = Event::Reaction(Reaction {
        room_id: "!dm:sim".into(),
        event_id: "$r".into(),
        sender: "@alice:sim".into(),
        sender_display_name: None,
        target: "$1".into(),
        key: "🛑".into(),
        is_direct: true,
        origin_server_ts: 650,
    });
    let out = g.handle(&reaction, &mut kv, 650).expect("skipped");
    assert!(out.effects.is_empty(), "{:?}", out.effects);
    // A file (contract 0.4.0) is never shown to an older guest, which
    // would take its empty body for a message.
    let Event::Message(mut file) = dm("") else {
        unreachable!("dm makes a message")
    };
    file.attachments.push(Media {
        id: "surfaces-media:event !dm:sim $f".into(),
        name: "cat.png".into(),
        mime: "image/png".into(),
        size: Some(3),
        kind: MediaKind::Image,
    });
    let out = g
        .handle(&Event::Message(file), &mut kv, 660)
        .expect("skipped");
    assert!(out.effects.is_empty(), "{:?}", out.effects);

    // Every kind of swap outcome of the newest contract reaches it in
    // its own shape without failing it.
    for outcome in [
        ReloadOutcome::Swapped("v".into()),
        ReloadOutcome::Refused("no".into()),
        ReloadOutcome::RolledBack("back".into()),
    ] {
        let r = Event::ReloadResult(ReloadResult {
            request: 0,
            outcome,
        });
        g.handle(&r, &mut kv, 700).expect("handled");
    }
    let out = g.handle(&dm("!count"), &mut kv, 800).expect("handled");
    assert_eq!(
        sends(&out).into_iter().map(|(_, b)| b).collect::<Vec<_>>(),
        ["I have echoed 1 of your messages."]
    );
}

#[test]
fn a_swap_crosses_contract_versions_both_ways_on_one_store() {
    let e = embedding();
    let old = e
        .compile(surfaces_artifacts::ECHO_0_1_0_WASM)
        .expect("compiles");
    let new = e.compile(surfaces_artifacts::ECHO_WASM).expect("compiles");
    assert_eq!(new.contract(), Contract::newest());
    let mut kv: BoxedKv = Box::<MemoryKv>::default();
    let (mut g, _) = Guest::start(&old, info(&[]), &mut kv, 0).expect("starts");
    g.handle(&dm("one"), &mut kv, 1).expect("handled");
    g.swap(&new, &mut kv, 2).expect("0.1.0 to the newest");
    g.handle(&dm("two"), &mut kv, 3).expect("handled");
    g.swap(&old, &mut kv, 4).expect("and back");
    let out = g.handle(&dm("!count"), &mut kv, 5).expect("handled");
    assert_eq!(
        sends(&out).into_iter().map(|(_, b)| b).collect::<Vec<_>>(),
        ["I have echoed 2 of your messages."]
    );
}

#[test]
fn the_guest_is_told_its_own_file_hash() {
    let e = embedding();
    let shipped = e.compile(surfaces_artifacts::GUEST_WASM).expect("compiles");
    assert_eq!(shipped.contract(), Contract::newest());
    let hash = content_hash(surfaces_artifacts::GUEST_WASM);
    let mut kv: BoxedKv = Box::<MemoryKv>::default();
    let (mut g, _) = Guest::start(&shipped, info(&[]), &mut kv, 0).expect("starts");
    let out = g.handle(&dm("!status"), &mut kv, 1).expect("handled");
    let status = sends(&out)
        .into_iter()
        .map(|(_, b)| b)
        .find(|b| b.contains("**Status**"))
        .expect("a status");
    assert!(
        status.contains(&format!("(sha256 {})", &hash[..12])),
        "{status}"
    );
}
