use super::*;

const BOT: &str = "@bot:hs";
const ALICE: &str = "@alice:hs";
const ROOM: &str = "!r:hs";

fn access() -> Access {
    Access::new(&[], &[], "hs")
}

fn inbox(token: Option<&str>) -> Inbox<&'static str> {
    let position = token.map(|t| Position {
        token: t.to_string(),
        joined: Vec::new(),
        undecrypted: Vec::new(),
    });
    Inbox::new(BOT, access(), 600_000, position)
}

/// An inbox whose position already knows [`ROOM`].
fn known_room() -> Inbox<&'static str> {
    let known = Position {
        token: "t0".into(),
        joined: vec![ROOM.into()],
        undecrypted: Vec::new(),
    };
    Inbox::new(BOT, access(), 600_000, Some(known))
}

fn item(id: &'static str, sender: &str, kind: Kind) -> Item<&'static str> {
    Item {
        event_id: id.to_string(),
        sender: sender.to_string(),
        kind,
        event: id,
    }
}

fn msg(id: &'static str) -> Item<&'static str> {
    item(id, ALICE, Kind::Event)
}

fn window(items: Vec<Item<&'static str>>, older: Option<&str>) -> Window<&'static str> {
    Window {
        room_id: ROOM.to_string(),
        items,
        older: older.map(str::to_string),
        members_changed: false,
    }
}

fn delivered(step: Step<&'static str>) -> Vec<&'static str> {
    match step {
        Step::Done(out) => out
            .into_iter()
            .filter_map(|o| match o {
                Out::Deliver(e) => Some(e),
                Out::CountMembers(_) | Out::Dropped(_) => None,
            })
            .collect(),
        Step::ReadBack { .. } => panic!("expected a decision, got {step:?}"),
    }
}

#[test]
fn the_first_batch_answers_nothing_and_learns_the_rooms() {
    let mut i = inbox(None);
    let step = i.room(window(vec![msg("$1"), msg("$2")], None), 0);
    assert!(delivered(step).is_empty());
    i.handled("t1".into());
    // The room is known now: all of its next window counts.
    assert_eq!(delivered(i.room(window(vec![msg("$3")], None), 0)), ["$3"]);
}

#[test]
fn a_lazy_dm_s_first_message_counts() {
    let mut i = inbox(Some("t0"));
    let w = window(
        vec![
            item("$c", ALICE, Kind::Member),
            item("$i", ALICE, Kind::BotInvited),
            msg("$first"),
            item("$j", BOT, Kind::BotJoined),
            msg("$second"),
        ],
        None,
    );
    match i.room(w, 0) {
        Step::Done(out) => assert_eq!(
            out,
            [
                Out::Deliver("$first"),
                Out::Deliver("$second"),
                Out::CountMembers(ROOM.into())
            ]
        ),
        s => panic!("{s:?}"),
    }
}

#[test]
fn an_invite_before_the_window_is_read_back() {
    let mut i = inbox(Some("t0"));
    let w = window(
        vec![msg("$first"), item("$j", BOT, Kind::BotJoined)],
        Some("p"),
    );
    match i.room(w, 0) {
        Step::ReadBack { from, to, why, .. } => {
            assert_eq!((from.as_str(), to, why), ("p", None, Why::Invite));
        }
        s => panic!("{s:?}"),
    }
    let older = vec![msg("$history"), item("$i", ALICE, Kind::BotInvited)];
    assert_eq!(delivered(i.older(older, 0)), ["$first"]);
}

#[test]
fn a_gap_in_a_known_room_is_filled_once() {
    let mut i = known_room();
    assert_eq!(delivered(i.room(window(vec![msg("$1")], None), 0)), ["$1"]);
    i.handled("t1".into());
    match i.room(window(vec![msg("$3")], Some("p")), 0) {
        Step::ReadBack { to, why, .. } => assert_eq!((to.as_deref(), why), (Some("t1"), Why::Gap)),
        s => panic!("{s:?}"),
    }
    // The fill overlaps what was delivered: each event once.
    assert_eq!(
        delivered(i.older(vec![msg("$1"), msg("$2")], 0)),
        ["$2", "$3"]
    );
    assert!(delivered(i.room(window(vec![msg("$3")], None), 0)).is_empty());
}

#[test]
fn a_new_room_whose_join_is_out_of_reach_counts_nothing() {
    let mut i = inbox(Some("t0"));
    let step = i.room(window(vec![msg("$1")], None), 0);
    match step {
        Step::Done(out) => assert_eq!(
            out,
            [Out::Dropped(Dropped::JoinedWithGap {
                room_id: ROOM.into()
            })]
        ),
        s => panic!("{s:?}"),
    }
}

#[test]
fn strangers_and_the_bot_itself_are_not_delivered() {
    let mut i = inbox(Some("t0"));
    i.room(window(vec![], None), 0);
    let w = window(
        vec![
            item("$own", BOT, Kind::Event),
            item("$x", "@mallory:evil", Kind::Event),
        ],
        None,
    );
    match i.room(w, 0) {
        Step::Done(out) => assert_eq!(
            out,
            [Out::Dropped(Dropped::NotAllowed {
                room_id: ROOM.into(),
                sender: "@mallory:evil".into()
            })]
        ),
        s => panic!("{s:?}"),
    }
    assert_eq!(i.invite("@mallory:evil"), Admit::Decline);
    assert_eq!(i.invite(ALICE), Admit::Offer);
}

#[test]
fn an_undecryptable_event_waits_then_is_delivered_or_given_up() {
    let mut i = inbox(Some("t0"));
    i.room(window(vec![], None), 0);
    let w = window(
        vec![
            item("$late", ALICE, Kind::Undecryptable),
            item("$never", ALICE, Kind::Undecryptable),
        ],
        None,
    );
    assert!(delivered(i.room(w, 1_000)).is_empty());
    // Saved with the position: a restart keeps waiting.
    let saved = i.handled("t1".into());
    assert_eq!(saved.undecrypted.len(), 2);
    let mut i = Inbox::new(BOT, access(), 600_000, Some(saved));
    let mut outcomes = Vec::new();
    for w in i.take_waiting() {
        let key = (w.event_id == "$late").then_some("$late");
        outcomes.push(format!("{:?}", i.retried(w, key, 2_000)));
    }
    assert_eq!(outcomes, ["Deliver(\"$late\")", "Wait"]);
    let w = i.take_waiting().remove(0);
    match i.retried(w, None, 1_000 + 600_001) {
        Retry::GiveUp(w) => assert_eq!((w.event_id.as_str(), w.sender.as_str()), ("$never", ALICE)),
        r => panic!("{r:?}"),
    }
    assert!(!i.has_waiting());
}

#[test]
fn an_older_position_without_ids_still_loads() {
    let text = r#"{"token":"t","joined":["!r:hs"],"undecrypted":[{"room_id":"!r:hs","raw":"x","since_ms":5}]}"#;
    let p: Position<String> = serde_json::from_str(text).expect("decodes");
    assert_eq!(p.undecrypted[0].event, "x");
    assert_eq!(p.undecrypted[0].event_id, "");
}

#[test]
fn members_read_back_from_before_the_window_are_not_counted_again() {
    let mut i = known_room();
    let Step::ReadBack { .. } = i.room(window(vec![msg("$2")], Some("p")), 0) else {
        panic!("a gap is read back");
    };
    let older = vec![item("$j", BOT, Kind::BotJoined), msg("$1")];
    match i.older(older, 0) {
        Step::Done(out) => assert_eq!(out, [Out::Deliver("$1"), Out::Deliver("$2")]),
        s => panic!("{s:?}"),
    }
}
