//! The guest SDK, natively: the typed store, durable timers and the host
//! in memory that guest authors test with.

use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use surfaces_guest_sdk::store::{BAD, Prefix, Records};
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
}
