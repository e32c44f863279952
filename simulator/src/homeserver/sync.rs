//! `/sync` and `/messages` as Synapse serves them to one user.
//!
//! The homeserver's events form one stream; a sync token is a position in
//! it (`s{n}`: the events before the n-th are seen). A sync from a token
//! returns, per room:
//! - joined, and joined at the token: the events since, at most `limit` of
//!   them (the latest), `limited` with a `prev_batch` when there were more;
//! - joined since the token: the room's latest `limit` events, from before
//!   the join too (Synapse treats a newly joined room like an initial sync:
//!   the invite, the user's first message and the join can all be there;
//!   `limited` always, as Synapse marks a newly joined room);
//! - invited since the token (or, on an initial sync, invited now): the
//!   invite and who sent it;
//! - left since the token: the room id.
//!
//! Rooms with nothing new are left out. `/messages` pages backwards from a
//! token, down to an optional `to` token.

use super::{Homeserver, HsEvent, Membership};

/// A position in the event stream, as a token.
pub fn token(position: usize) -> String {
    format!("s{position}")
}

/// The position a token names; `None` for one this server never issued.
pub fn position(token: &str) -> Option<usize> {
    token.strip_prefix('s')?.parse().ok()
}

/// One sync response.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub next_batch: String,
    /// (room, inviter)
    pub invited: Vec<(String, String)>,
    pub joined: Vec<Timeline>,
    pub left: Vec<String>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.invited.is_empty() && self.joined.is_empty() && self.left.is_empty()
    }
}

/// A joined room's timeline in a sync response.
#[derive(Clone, Debug)]
pub struct Timeline {
    pub room_id: String,
    pub events: Vec<HsEvent>,
    pub limited: bool,
    pub prev_batch: Option<String>,
}

/// One page of `/messages`, newest first.
#[derive(Clone, Debug)]
pub struct Page {
    pub chunk: Vec<HsEvent>,
    /// Where the next (older) page starts; none at the room's start.
    pub end: Option<String>,
}

impl Homeserver {
    /// `GET /sync` for `user` from `since` (none: an initial sync).
    pub fn sync(&self, user: &str, since: Option<usize>, limit: usize) -> Batch {
        let now = self.events.len();
        let since = since.map(|s| s.min(now));
        let mut batch = Batch {
            next_batch: token(now),
            ..Batch::default()
        };
        for (room_id, room) in &self.rooms {
            let at_token = since.map(|s| self.membership_at(room_id, user, s));
            let joined_now = room.members.contains(user);
            if joined_now {
                match since {
                    Some(s)
                        if at_token == Some(Some(Membership::Join))
                            && !left_since(room, user, s) =>
                    {
                        let new: Vec<&HsEvent> = self.room_events(room_id, s, now).collect();
                        if !new.is_empty() {
                            batch.joined.push(self.window(room_id, &new, limit));
                        }
                    }
                    // Joined since the token (a rejoin too): Synapse serves
                    // it as newly joined, its timeline always `limited`.
                    Some(_) => {
                        let all: Vec<&HsEvent> = self.room_events(room_id, 0, now).collect();
                        let mut t = self.window(room_id, &all, limit);
                        t.limited = t.prev_batch.is_some();
                        batch.joined.push(t);
                    }
                    None => {
                        let all: Vec<&HsEvent> = self.room_events(room_id, 0, now).collect();
                        batch.joined.push(self.window(room_id, &all, limit));
                    }
                }
                continue;
            }
            if let Some(inviter) = room.invited.get(user) {
                let new_invite = match since {
                    None => true,
                    Some(s) => {
                        at_token != Some(Some(Membership::Invite)) || {
                            // Invited again after leaving, all since the token.
                            room.membership_log.iter().any(|(at, who, m)| {
                                *at >= s && who == user && *m == Membership::Invite
                            })
                        }
                    }
                };
                if new_invite {
                    batch.invited.push((room_id.clone(), inviter.clone()));
                }
                continue;
            }
            if let Some(s) = since
                && room
                    .membership_log
                    .iter()
                    .any(|(at, who, m)| *at >= s && who == user && *m == Membership::Leave)
            {
                batch.left.push(room_id.clone());
            }
        }
        batch
    }

    /// `GET /rooms/{room}/messages?dir=b&from=..&to=..&limit=..`.
    pub fn messages(&self, room_id: &str, from: usize, to: Option<usize>, limit: usize) -> Page {
        let from = from.min(self.events.len());
        let floor = to.unwrap_or(0).min(from);
        let chunk: Vec<HsEvent> = self.events[floor..from]
            .iter()
            .rev()
            .filter(|e| e.room_id == room_id)
            .take(limit)
            .cloned()
            .collect();
        let end = chunk
            .last()
            .and_then(|e| self.stream_index(&e.event_id))
            .filter(|i| *i > floor)
            .map(token);
        Page { chunk, end }
    }

    /// A room's events in positions `from..to`.
    fn room_events<'a>(
        &'a self,
        room_id: &'a str,
        from: usize,
        to: usize,
    ) -> impl Iterator<Item = &'a HsEvent> + 'a {
        self.events[from.min(to)..to]
            .iter()
            .filter(move |e| e.room_id == room_id)
    }

    /// The latest `limit` of `events`, limited when older ones were left
    /// out.
    fn window(&self, room_id: &str, events: &[&HsEvent], limit: usize) -> Timeline {
        let skip = events.len().saturating_sub(limit.max(1));
        let shown: Vec<HsEvent> = events[skip..].iter().map(|e| (*e).clone()).collect();
        let first = shown.first().and_then(|e| self.stream_index(&e.event_id));
        Timeline {
            room_id: room_id.to_string(),
            events: shown,
            limited: skip > 0,
            prev_batch: first.map(token),
        }
    }

    fn stream_index(&self, event_id: &str) -> Option<usize> {
        self.by_id.get(event_id).copied()
    }

    /// `user`'s membership of a room after the events before `position`.
    fn membership_at(&self, room_id: &str, user: &str, position: usize) -> Option<Membership> {
        let room = self.rooms.get(room_id)?;
        let from_events = room
            .membership_log
            .iter()
            .rev()
            .find(|(at, who, _)| *at < position && who == user)
            .map(|(_, _, m)| *m);
        // Members the world started with have no event.
        from_events.or_else(|| {
            self.initial
                .get(room_id)
                .is_some_and(|m| m.contains(user))
                .then_some(Membership::Join)
        })
    }
}

/// `user` left the room (or was removed) at or after position `since`.
fn left_since(room: &super::HsRoom, user: &str, since: usize) -> bool {
    room.membership_log
        .iter()
        .any(|(at, who, m)| *at >= since && who == user && *m == Membership::Leave)
}
