//! The guest SDK, natively: the typed store, durable timers and the host
//! in memory that guest authors test with.

use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use surfaces_guest_sdk::store::{BAD, Prefix, Records, numbered};
use surfaces_guest_sdk::testing::{Effect, MemoryHost};
use surfaces_guest_sdk::{Host, timers};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Note {
    text: String,
}

const NOTES: Prefix<Note> = Prefix::new("note/");

#[test]
fn a_record_round_trips_under_its_typed_key() {
    let mut mem = MemoryHost::default();
    let host: &mut dyn Host = &mut mem;
    let key = NOTES.key("alice");
    assert_eq!(host.load(&key), Ok(None));
    host.save(&key, &Note { text: "hi".into() }).unwrap();
    assert_eq!(host.load(&key), Ok(Some(Note { text: "hi".into() })));
    assert_eq!(NOTES.id(&key), "alice");
    assert_eq!(host.scan(&NOTES), vec![key.clone()]);
    host.remove(&key);
    assert_eq!(host.load(&key), Ok(None));
}

#[test]
fn a_record_that_no_longer_decodes_is_set_aside_and_read_as_absent() {
    let mut mem = MemoryHost::default();
    mem.store.insert("note/bob".into(), b"{\"txt\":1}".to_vec());
    let host: &mut dyn Host = &mut mem;
    assert_eq!(host.load(&NOTES.key("bob")), Ok(None));
    assert_eq!(mem.store.get("note/bob"), None);
    assert_eq!(
        mem.store.get(&format!("{BAD}note/bob")),
        Some(&b"{\"txt\":1}".to_vec()),
        "the bytes are kept as they were"
    );
    assert!(
        mem.logs
            .iter()
            .any(|(_, m)| m.contains("note/bob does not decode"))
    );
}

#[test]
fn ids_are_fresh_for_the_bots_life() {
    let mut mem = MemoryHost::default();
    let host: &mut dyn Host = &mut mem;
    let a = host.next_id().unwrap();
    let b = host.next_id().unwrap();
    assert!(b > a);
    // A new instance reads the same counter.
    let mut again = MemoryHost {
        store: mem.store.clone(),
        ..MemoryHost::default()
    };
    let host: &mut dyn Host = &mut again;
    assert!(host.next_id().unwrap() > b);
}

#[test]
fn a_timer_knows_its_purpose_once() {
    let mut mem = MemoryHost::default();
    let host: &mut dyn Host = &mut mem;
    let id = timers::start(
        host,
        &Note {
            text: "later".into(),
        },
        5_000,
    )
    .unwrap();
    assert_eq!(
        timers::purpose::<Note>(host, id),
        Ok(Some(Note {
            text: "later".into()
        }))
    );
    assert_eq!(
        timers::take::<Note>(host, id),
        Ok(Some(Note {
            text: "later".into()
        }))
    );
    assert_eq!(timers::take::<Note>(host, id), Ok(None), "taken once");
    let other = timers::start(host, &Note { text: "x".into() }, 1).unwrap();
    timers::cancel(host, other);
    assert_eq!(timers::take::<Note>(host, other), Ok(None));
    assert_eq!(
        mem.take_effects(),
        vec![
            Effect::SetTimer {
                id,
                delay_ms: 5_000
            },
            Effect::SetTimer {
                id: other,
                delay_ms: 1
            },
            Effect::CancelTimer { id: other },
        ]
    );
}

proptest! {
    /// Paging through a prefix visits exactly the keys a scan returns, in
    /// order, whatever the page size and whatever else is in the store.
    #[test]
    fn pages_visit_what_a_scan_returns(
        keys in prop::collection::btree_set("(note/|nota|no|z)[a-c]{0,3}", 0..40),
        limit in 1u32..7,
    ) {
        let mut mem = MemoryHost::default();
        for k in &keys {
            mem.store.insert(k.clone(), b"{}".to_vec());
        }
        let host: &mut dyn Host = &mut mem;
        let scanned = host.scan(&NOTES);
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = host.page(&NOTES, after.as_ref(), limit);
            prop_assert!(page.len() <= limit as usize);
            let Some(last) = page.last().cloned() else { break };
            paged.extend(page);
            after = Some(last);
        }
        prop_assert_eq!(paged, scanned);
    }

    /// Keys with numbers in them are written as `format!` would write
    /// them (stored keys must not change), without its machinery.
    #[test]
    fn numbered_keys_are_what_format_writes(
        n in prop_oneof![0u64..1000, any::<u64>(), Just(u64::MAX), Just(u64::from(u32::MAX) + 1)],
        width in 0usize..26,
        chunk in any::<u32>(),
    ) {
        prop_assert_eq!(numbered("out/", n, width), format!("out/{n:0width$}"));
        let key = surfaces_guest::state::ChunkKey::new(n, chunk);
        prop_assert_eq!(key.as_str(), format!("chunk/{n:020}/{chunk:08}"));
        prop_assert_eq!(
            surfaces_guest::state::chunk_prefix(n),
            format!("chunk/{n:020}/")
        );
    }
}

mod schema {
    use surfaces_guest_sdk::Host;
    use surfaces_guest_sdk::schema::{self, Opened, Schema};
    use surfaces_guest_sdk::store::{Key, Records};
    use surfaces_guest_sdk::testing::MemoryHost;

    const V1: Schema = Schema {
        version: 1,
        readable_from: 1,
    };
    const V2: Schema = Schema {
        version: 2,
        readable_from: 2,
    };

    fn note() -> Key<serde_json::Value> {
        Key::new("note/alice".into())
    }

    /// v1 kept a note as a string; v2 keeps its lines.
    fn v1_to_v2(host: &mut dyn Host) -> Result<(), String> {
        if let Some(serde_json::Value::String(text)) = host.load(&note())? {
            let lines: Vec<&str> = text.lines().collect();
            host.save(&note(), &serde_json::json!({ "lines": lines }))?;
        }
        Ok(())
    }

    #[test]
    fn a_fresh_store_takes_the_guests_schema() {
        let mut mem = MemoryHost::default();
        let host: &mut dyn Host = &mut mem;
        assert_eq!(schema::open(host, "notes", V1, &[]), Ok(Opened::Current));
        assert_eq!(schema::stored(host, "notes"), Ok(V1));
        assert_eq!(schema::open(host, "notes", V1, &[]), Ok(Opened::Current));
    }

    #[test]
    fn a_store_from_before_schemas_is_at_the_oldest_version_migrated_from() {
        let mut mem = MemoryHost::default();
        let host: &mut dyn Host = &mut mem;
        host.save(&note(), &serde_json::json!("milk")).unwrap();
        assert_eq!(
            schema::open(host, "notes", V2, &[(1, v1_to_v2)]),
            Ok(Opened::Migrated { from: 1 })
        );
        assert_eq!(
            host.load(&note()),
            Ok(Some(serde_json::json!({ "lines": ["milk"] })))
        );
    }

    #[test]
    fn an_older_store_is_migrated_forward_once() {
        let mut mem = MemoryHost::default();
        let host: &mut dyn Host = &mut mem;
        schema::open(host, "notes", V1, &[]).unwrap();
        host.save(&note(), &serde_json::json!("milk\neggs"))
            .unwrap();
        assert_eq!(
            schema::open(host, "notes", V2, &[(1, v1_to_v2)]),
            Ok(Opened::Migrated { from: 1 })
        );
        assert_eq!(
            host.load(&note()),
            Ok(Some(serde_json::json!({ "lines": ["milk", "eggs"] })))
        );
        assert_eq!(
            schema::open(host, "notes", V2, &[(1, v1_to_v2)]),
            Ok(Opened::Current)
        );
    }

    #[test]
    fn a_store_only_newer_guests_read_is_refused_and_one_they_said_is_readable_is_not() {
        let mut mem = MemoryHost::default();
        let host: &mut dyn Host = &mut mem;
        schema::open(host, "notes", V2, &[]).unwrap();
        let refused = schema::open(host, "notes", V1, &[]).unwrap_err();
        assert!(
            refused.contains("guests before schema 2 cannot read"),
            "{refused}"
        );

        let additive = Schema {
            version: 3,
            readable_from: 1,
        };
        schema::open(host, "notes", additive, &[(2, |_| Ok(()))]).unwrap();
        assert_eq!(
            schema::open(host, "notes", V1, &[]),
            Ok(Opened::Newer { version: 3 })
        );
        assert_eq!(
            schema::stored(host, "notes"),
            Ok(additive),
            "a reader does not rewrite it"
        );
    }

    #[test]
    fn each_family_has_its_own_schema_and_a_broken_one_stops_the_start() {
        let mut mem = MemoryHost::default();
        let host: &mut dyn Host = &mut mem;
        schema::open(host, "notes", V2, &[]).unwrap();
        // Another kind of guest on the same store is not bound by it.
        assert_eq!(schema::open(host, "echo", V1, &[]), Ok(Opened::Current));
        // A schema record that does not decode: no migration runs again.
        host.store_put("meta/schema/notes", b"two");
        let broken = schema::open(host, "notes", V2, &[(1, |_| Err("ran".into()))]).unwrap_err();
        assert!(
            broken.contains("meta/schema/notes does not decode"),
            "{broken}"
        );
        let backwards = Schema {
            version: 1,
            readable_from: 2,
        };
        let refused = schema::open(host, "echo", backwards, &[]).unwrap_err();
        assert!(
            refused.contains("cannot be readable only from"),
            "{refused}"
        );
    }

    #[test]
    fn a_missing_or_failing_migration_refuses_the_start() {
        let mut mem = MemoryHost::default();
        let host: &mut dyn Host = &mut mem;
        schema::open(host, "notes", V1, &[]).unwrap();
        let missing = schema::open(host, "notes", V2, &[]).unwrap_err();
        assert!(
            missing.contains("no migration from it to schema 2"),
            "{missing}"
        );
        let failing =
            schema::open(host, "notes", V2, &[(1, |_| Err("disk full".into()))]).unwrap_err();
        assert!(
            failing.contains("migrating the store from schema 1: disk full"),
            "{failing}"
        );
        assert_eq!(schema::stored(host, "notes"), Ok(V1));
    }
}

mod outbox {
    use surfaces_guest_sdk::outbox;
    use surfaces_guest_sdk::testing::{Effect, MemoryHost};
    use surfaces_guest_sdk::types::{MatrixError, MatrixErrorKind, MatrixResult, MessageContent};

    fn content() -> MessageContent {
        MessageContent {
            body: "hi".into(),
            formatted_body: None,
            notice: false,
            live: false,
            thread_root: None,
            reply_to: Some("$q".into()),
            mentions: vec![],
        }
    }

    fn limited(request: u64, ms: u64) -> MatrixResult {
        MatrixResult {
            request,
            outcome: Err(MatrixError {
                kind: MatrixErrorKind::RateLimited,
                message: "slow down".into(),
                retry_after_ms: Some(ms),
            }),
        }
    }

    #[test]
    fn a_send_waits_out_a_rate_limit_across_a_host_restart() {
        let mut host = MemoryHost::default();
        let request = outbox::send(&mut host, "!r", &content()).unwrap();
        assert!(outbox::on_result(&mut host, &limited(request, 7_000)).unwrap());
        host.take_effects();
        // The host restarts: its timers are gone.
        outbox::resume(&mut host, false).unwrap();
        let effects = host.take_effects();
        assert!(
            matches!(
                effects.as_slice(),
                [Effect::SetTimer {
                    delay_ms: 7_000,
                    ..
                }]
            ),
            "it must wait again, not send at once: {effects:?}"
        );
        let Effect::SetTimer { id, .. } = effects[0] else {
            unreachable!()
        };
        assert!(outbox::on_timer(&mut host, id).unwrap());
        assert!(matches!(
            host.take_effects().as_slice(),
            [Effect::Send { request: again, .. }] if *again == request
        ));
        let done = MatrixResult {
            request,
            outcome: Ok("$a".into()),
        };
        assert!(outbox::on_result(&mut host, &done).unwrap());
        assert!(
            host.store.keys().all(|k| !k.starts_with("out/")),
            "{:?}",
            host.store.keys()
        );
        // Not the outbox's: the guest's own.
        assert!(!outbox::on_timer(&mut host, 999).unwrap());
        assert!(!outbox::on_result(&mut host, &limited(999, 1)).unwrap());
    }

    #[test]
    fn a_send_never_confirmed_goes_again_after_a_restart_and_a_refusal_gives_up() {
        let mut host = MemoryHost::default();
        let request = outbox::send(&mut host, "!r", &content()).unwrap();
        host.take_effects();
        outbox::resume(&mut host, true).unwrap();
        assert!(host.take_effects().is_empty(), "a swap keeps requests live");
        outbox::resume(&mut host, false).unwrap();
        assert!(matches!(
            host.take_effects().as_slice(),
            [Effect::Send { request: again, .. }] if *again == request
        ));
        let forbidden = MatrixResult {
            request,
            outcome: Err(MatrixError {
                kind: MatrixErrorKind::Forbidden,
                message: "not in room".into(),
                retry_after_ms: None,
            }),
        };
        assert!(outbox::on_result(&mut host, &forbidden).unwrap());
        assert!(host.store.keys().all(|k| !k.starts_with("out/")));
        assert!(
            host.logs
                .iter()
                .any(|(_, m)| m.contains("gave up on request"))
        );
    }
}
