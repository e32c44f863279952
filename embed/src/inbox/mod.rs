//! The Matrix inbox, without I/O: what of the homeserver's sync batches
//! reaches the guest. Both hosts drive it (the native sync loop over
//! matrix-sdk, the simulator over its fake homeserver), as both drive
//! [`crate::AgentSession`] for the agent, so the simulator proves the
//! decisions the native host makes.
//!
//! A host hands it a batch a room at a time ([`Inbox::room`]) and carries
//! out the [`Step`]s it returns; once the guest has handled the batch, it
//! saves the [`Position`] that [`Inbox::handled`] gives.
//!
//! - **No history.** With no saved position (a new data dir) the first
//!   batch only learns the rooms: nothing already in them is answered.
//! - **First contact.** In a room the bot was not in at the last position,
//!   what came after its invite counts, what came before is history
//!   ([`cut`]); the invite may have to be read back from before the window.
//! - **Gaps.** A limited timeline in a known room is filled back to the
//!   last position ([`Step::ReadBack`]).
//! - **Once.** An event id is delivered at most once per run (a gap fill
//!   may overlap a sync; a homeserver may repeat an event). Across a
//!   restart the last batch is replayed; the guest remembers what it
//!   handled.
//! - **Access.** Invites from users outside the allow list are declined,
//!   their messages dropped; the bot's own events never reach the guest.
//! - **Encryption.** An event from an allowed user that could not be
//!   decrypted waits for its key (saved with the position), is tried again
//!   after each batch and, after `patience_ms`, reported so its sender can
//!   be told.
//! - **Members.** A room whose membership changed gets its members counted.

mod cut;
mod recent;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

pub use cut::{Cut, Mark, cut};
pub use recent::{REMEMBERED, Recent};

use crate::access::Access;

/// One event of a room's timeline, as the host read it: the little the
/// inbox needs to decide, and the host's own event (`E`), handed back to
/// it when the event is to be delivered.
#[derive(Clone, Debug)]
pub struct Item<E> {
    /// Empty when the event had none (it is then never de-duplicated).
    pub event_id: String,
    pub sender: String,
    pub kind: Kind,
    pub event: E,
}

/// What an event is, as far as the inbox is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The bot's membership became `invite`.
    BotInvited,
    /// The bot's membership became `join` (not a profile change).
    BotJoined,
    /// Any other membership event.
    Member,
    /// An encrypted event whose key has not arrived (yet).
    Undecryptable,
    /// Anything else: the host converts it into a message for the guest,
    /// or finds it is none.
    Event,
}

impl Kind {
    fn mark(self) -> Mark {
        match self {
            Kind::BotInvited => Mark::Invited,
            Kind::BotJoined => Mark::Joined,
            Kind::Member | Kind::Undecryptable | Kind::Event => Mark::Other,
        }
    }

    fn is_member(self) -> bool {
        match self {
            Kind::BotInvited | Kind::BotJoined | Kind::Member => true,
            Kind::Undecryptable | Kind::Event => false,
        }
    }
}

/// A joined room's part of a sync batch.
#[derive(Clone, Debug)]
pub struct Window<E> {
    pub room_id: String,
    /// The timeline, oldest first.
    pub items: Vec<Item<E>>,
    /// When the timeline was limited: where older events can be read from
    /// (its `prev_batch`).
    pub older: Option<String>,
    /// The batch's state section held membership events.
    pub members_changed: bool,
}

/// What the host does next for a room.
#[derive(Debug)]
pub enum Step<E> {
    /// Read the room's events before `from` (back to `to` when given; else
    /// as far as the host reads), and hand them, oldest first, to
    /// [`Inbox::older`].
    ReadBack {
        room_id: String,
        from: String,
        to: Option<String>,
        why: Why,
    },
    /// The room is decided: carry these out in order.
    Done(Vec<Out<E>>),
}

/// Why older events are wanted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// The bot's invite (or join) lies before the window.
    Invite,
    /// The timeline was limited: events since the last position are missing.
    Gap,
}

/// One thing to carry out for a room.
#[derive(Debug, PartialEq, Eq)]
pub enum Out<E> {
    /// Convert the event and hand it to the guest.
    Deliver(E),
    /// Count the room's joined members and tell the guest.
    CountMembers(String),
    /// Something was left out: for the host's log and metrics.
    Dropped(Dropped),
}

/// What was left out, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// From a user outside the allow list.
    NotAllowed { room_id: String, sender: String },
    /// A room joined with a gap: the window did not reach back to the
    /// bot's join, so nothing in it counts.
    JoinedWithGap { room_id: String },
}

/// What an invite gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Hand it to the guest (which joins).
    Offer,
    /// Decline it: the inviter is not allowed.
    Decline,
}

/// An event waiting for its key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Waiting<E> {
    pub room_id: String,
    /// The host's encrypted event (`raw`: the name an older position used).
    #[serde(rename = "raw")]
    pub event: E,
    /// When it was first seen, ms since the Unix epoch.
    pub since_ms: u64,
    #[serde(default)]
    pub event_id: String,
    #[serde(default)]
    pub sender: String,
}

/// What became of a waiting event tried again.
#[derive(Debug)]
pub enum Retry<E> {
    /// Decrypted: hand it to the guest (late, but not lost).
    Deliver(E),
    /// Decrypted, but delivered before.
    Duplicate,
    /// Still waiting.
    Wait,
    /// Its key never came: tell the guest (its sender is told).
    GiveUp(Waiting<E>),
    /// Its sender is no longer allowed (the list changed while it waited).
    NotAllowed(Waiting<E>),
}

/// What the host saves once the guest has handled a batch: where the next
/// sync starts, the rooms the bot was in there (a room joined in an unsaved
/// batch is still new after a crash), and the events waiting for keys.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Position<E> {
    pub token: String,
    #[serde(default)]
    pub joined: Vec<String>,
    #[serde(default = "Vec::new")]
    pub undecrypted: Vec<Waiting<E>>,
}

/// A room whose window waits for older events.
struct Reading<E> {
    window: Window<E>,
    new: bool,
    why: Why,
}

/// The inbox: see the module's documentation.
pub struct Inbox<E> {
    bot: String,
    access: Access,
    patience_ms: u64,
    /// The handled position's token (none before the first batch).
    token: Option<String>,
    /// Rooms the bot was in at the handled position, and since.
    joined: BTreeSet<String>,
    delivered: Recent,
    waiting: Vec<Waiting<E>>,
    reading: Option<Reading<E>>,
    /// The planted bug of the simulator's test: history ends at the join.
    #[cfg(feature = "planted")]
    join_cutoff: bool,
}

impl<E: Clone> Inbox<E> {
    /// An inbox resuming from a saved position (or starting afresh).
    pub fn new(
        bot: &str,
        access: Access,
        patience_ms: u64,
        position: Option<Position<E>>,
    ) -> Inbox<E> {
        let (token, joined, waiting) = match position {
            Some(p) => (Some(p.token), p.joined.into_iter().collect(), p.undecrypted),
            None => (None, BTreeSet::new(), Vec::new()),
        };
        Inbox {
            bot: bot.to_string(),
            access,
            patience_ms,
            token,
            joined,
            delivered: Recent::default(),
            waiting,
            reading: None,
            #[cfg(feature = "planted")]
            join_cutoff: false,
        }
    }

    /// Plants the bug that lost a new DM's first message: what came before
    /// the bot's join is history, the invite notwithstanding. For the
    /// simulator's planted-bug test only.
    #[cfg(feature = "planted")]
    pub fn plant_join_cutoff(&mut self) {
        self.join_cutoff = true;
    }

    fn cut(&self, marks: &[Mark], new: bool, older: bool) -> Cut {
        #[cfg(feature = "planted")]
        if self.join_cutoff
            && !self.is_first()
            && let Some(j) = marks.iter().rposition(|m| *m == Mark::Joined)
        {
            return Cut::From(j + 1);
        }
        cut(marks, self.is_first(), new, older)
    }

    /// Where the next sync starts; none on a first start.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// No position yet: the batch being handled is the first.
    pub fn is_first(&self) -> bool {
        self.token.is_none()
    }

    /// Events wait for their keys: a host whose sync would otherwise wait
    /// for news should come back in time to give up on them.
    pub fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// An invite to a room the bot is not in.
    pub fn invite(&self, inviter: &str) -> Admit {
        if self.access.allows(inviter) {
            Admit::Offer
        } else {
            Admit::Decline
        }
    }

    /// A joined room's window: what to deliver, or older events first.
    pub fn room(&mut self, mut window: Window<E>, now_ms: u64) -> Step<E> {
        let new = self.joined.insert(window.room_id.clone());
        // Counted for what this sync says changed, not for membership
        // events read back from before it (old news; and a client that
        // stores them may briefly count the bot as merely invited).
        window.members_changed |= window.items.iter().any(|i| i.kind.is_member());
        let marks: Vec<Mark> = window.items.iter().map(|i| i.kind.mark()).collect();
        let from = window.older.take();
        match self.cut(&marks, new, from.is_some()) {
            Cut::NeedOlder => self.read_back(window, new, from, Why::Invite),
            Cut::From(0) if from.is_some() => self.read_back(window, new, from, Why::Gap),
            decided => self.finish(window, decided, new, now_ms),
        }
    }

    /// The events before a window, oldest first, as [`Step::ReadBack`]
    /// asked (empty when they could not be read).
    pub fn older(&mut self, mut items: Vec<Item<E>>, now_ms: u64) -> Step<E> {
        let Some(Reading {
            mut window,
            new,
            why,
        }) = self.reading.take()
        else {
            return Step::Done(Vec::new());
        };
        items.append(&mut window.items);
        window.items = items;
        let decided = match why {
            Why::Invite => {
                let marks: Vec<Mark> = window.items.iter().map(|i| i.kind.mark()).collect();
                self.cut(&marks, new, false)
            }
            Why::Gap => Cut::From(0),
        };
        self.finish(window, decided, new, now_ms)
    }

    /// The bot left (or was removed from) a room.
    pub fn left(&mut self, room_id: &str) {
        self.joined.remove(room_id);
    }

    /// The events waiting for keys, for the host to try again; each goes
    /// back through [`Inbox::retried`].
    pub fn take_waiting(&mut self) -> Vec<Waiting<E>> {
        std::mem::take(&mut self.waiting)
    }

    /// A waiting event tried again: `decrypted` when its key came.
    pub fn retried(&mut self, w: Waiting<E>, decrypted: Option<E>, now_ms: u64) -> Retry<E> {
        if !self.access.allows(&w.sender) {
            return Retry::NotAllowed(w);
        }
        match decrypted {
            Some(event) => {
                if self.first_time(&w.event_id) {
                    Retry::Deliver(event)
                } else {
                    Retry::Duplicate
                }
            }
            None if now_ms.saturating_sub(w.since_ms) > self.patience_ms => Retry::GiveUp(w),
            None => {
                self.waiting.push(w);
                Retry::Wait
            }
        }
    }

    /// The guest has handled the batch that ended at `next`: the position
    /// to save.
    pub fn handled(&mut self, next: String) -> Position<E> {
        self.token = Some(next.clone());
        Position {
            token: next,
            joined: self.joined.iter().cloned().collect(),
            undecrypted: self.waiting.clone(),
        }
    }

    fn read_back(
        &mut self,
        window: Window<E>,
        new: bool,
        from: Option<String>,
        why: Why,
    ) -> Step<E> {
        let Some(from) = from else {
            return Step::Done(Vec::new());
        };
        // A known room reads back to the last position; a new one as far
        // as the host goes (its invite may be older than that position).
        let to = if new { None } else { self.token.clone() };
        let room_id = window.room_id.clone();
        self.reading = Some(Reading { window, new, why });
        Step::ReadBack {
            room_id,
            from,
            to,
            why,
        }
    }

    fn finish(&mut self, window: Window<E>, decided: Cut, new: bool, now_ms: u64) -> Step<E> {
        let Window {
            room_id,
            items,
            members_changed,
            ..
        } = window;
        let mut out = Vec::new();
        let start = match decided {
            Cut::From(i) => i,
            Cut::Nothing | Cut::NeedOlder => {
                if new && !self.is_first() {
                    out.push(Out::Dropped(Dropped::JoinedWithGap {
                        room_id: room_id.clone(),
                    }));
                }
                items.len()
            }
        };
        for item in items.into_iter().skip(start) {
            if item.sender == self.bot {
                continue;
            }
            match item.kind {
                Kind::BotInvited | Kind::BotJoined | Kind::Member => {}
                Kind::Undecryptable | Kind::Event if !self.access.allows(&item.sender) => {
                    out.push(Out::Dropped(Dropped::NotAllowed {
                        room_id: room_id.clone(),
                        sender: item.sender,
                    }));
                }
                Kind::Undecryptable => {
                    let known = self.waiting.iter().any(|w| w.event_id == item.event_id);
                    if !known && !self.delivered.contains(&item.event_id) {
                        self.waiting.push(Waiting {
                            room_id: room_id.clone(),
                            event: item.event,
                            since_ms: now_ms,
                            event_id: item.event_id,
                            sender: item.sender,
                        });
                    }
                }
                Kind::Event => {
                    if self.first_time(&item.event_id) {
                        out.push(Out::Deliver(item.event));
                    }
                }
            }
        }
        if members_changed {
            out.push(Out::CountMembers(room_id));
        }
        Step::Done(out)
    }

    /// Marks an event delivered; false when it was before.
    fn first_time(&mut self, event_id: &str) -> bool {
        event_id.is_empty() || self.delivered.insert(event_id.to_string())
    }
}

#[cfg(test)]
mod tests;
