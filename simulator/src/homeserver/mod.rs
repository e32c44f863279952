//! A fake homeserver that keeps the Matrix rules a bot meets: edits must
//! name an original event, events over the size limit get 413, sends beyond
//! the rate limit get 429 with `retry_after_ms`, and a transaction id makes a
//! send idempotent. Membership changes are events in the rooms' timelines,
//! and [`sync`] serves them the way Synapse does.

pub mod sync;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use surfaces_embed::{MatrixError, MatrixErrorKind, MessageContent, matrix_content};

/// One event in a room's timeline.
#[derive(Clone, Debug)]
pub struct HsEvent {
    pub event_id: String,
    pub room_id: String,
    pub sender: String,
    pub ts: u64,
    /// `m.room.message`, `m.reaction`, `m.room.redaction` or
    /// `m.room.member`.
    pub kind: &'static str,
    /// Pruned to `{}` once the event is redacted, as Synapse serves it
    /// from then on.
    pub content: Value,
    /// For an edit: the event it replaces.
    pub replaces: Option<String>,
    /// For a membership event: whose membership, and what it became.
    pub member: Option<Member>,
    /// An encrypted message: when its key reaches the bot (never: `None`
    /// inside `Some`). Not encrypted: `None`.
    pub key_at: Option<Option<u64>>,
}

/// A membership event's subject and new state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub user: String,
    pub membership: Membership,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Membership {
    Invite,
    Join,
    Leave,
}

impl Membership {
    pub fn as_str(self) -> &'static str {
        match self {
            Membership::Invite => "invite",
            Membership::Join => "join",
            Membership::Leave => "leave",
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct HsRoom {
    /// Joined members.
    pub members: BTreeSet<String>,
    /// Invited, not yet joined: user -> who invited them.
    pub invited: BTreeMap<String, String>,
    pub direct: bool,
    /// Display names people set, by user id.
    pub display_names: BTreeMap<String, String>,
    /// Membership events: (stream position, user, membership), in order.
    pub membership_log: Vec<(usize, String, Membership)>,
}

/// Leaky bucket as Synapse's ratelimiter: the level drains at `rate` per
/// second; an action that would lift it above `burst` is refused.
#[derive(Clone, Debug)]
struct Bucket {
    level: f64,
    last_ms: u64,
}

pub struct Homeserver {
    pub rooms: BTreeMap<String, HsRoom>,
    /// The members each room started with (they have no join event).
    pub initial: BTreeMap<String, BTreeSet<String>>,
    pub events: Vec<HsEvent>,
    by_id: BTreeMap<String, usize>,
    txns: BTreeMap<(String, String), String>,
    buckets: BTreeMap<String, Bucket>,
    rate_per_second: f64,
    burst: f64,
    pub max_event_bytes: usize,
    next_event: u64,
    /// Rule breaks a real homeserver accepts but clients ignore.
    pub violations: Vec<String>,
    pub rejected_too_large: u32,
    pub rate_limited: u32,
    /// The media repository: `mxc://` URI -> bytes.
    pub media: BTreeMap<String, Vec<u8>>,
}

impl Homeserver {
    pub fn new(rate_per_second: f64, burst: u32, max_event_bytes: usize) -> Self {
        Homeserver {
            rooms: BTreeMap::new(),
            initial: BTreeMap::new(),
            events: Vec::new(),
            by_id: BTreeMap::new(),
            txns: BTreeMap::new(),
            buckets: BTreeMap::new(),
            rate_per_second,
            burst: f64::from(burst),
            max_event_bytes,
            next_event: 1,
            violations: Vec::new(),
            rejected_too_large: 0,
            rate_limited: 0,
            media: BTreeMap::new(),
        }
    }

    /// Upload a file: its `mxc://` URI.
    pub fn upload(&mut self, bytes: Vec<u8>) -> String {
        let uri = format!("mxc://sim/m{}", self.media.len() + 1);
        self.media.insert(uri.clone(), bytes);
        uri
    }

    /// Send a file message (`m.file`, `m.image`, ...) as `sender`, under
    /// the same rules as a text: membership, the rate limit, the
    /// transaction id.
    pub fn send_file(
        &mut self,
        sender: &str,
        txn: &str,
        room_id: &str,
        content: Value,
        now: u64,
    ) -> Result<String, MatrixError> {
        if let Some(id) = self.txns.get(&(sender.to_string(), txn.to_string())) {
            return Ok(id.clone());
        }
        if !self
            .rooms
            .get(room_id)
            .is_some_and(|r| r.members.contains(sender))
        {
            return Err(err(
                MatrixErrorKind::Forbidden,
                "M_FORBIDDEN: not in the room",
            ));
        }
        self.check_rate(sender, now)?;
        let id = self.append(room_id, sender, now, content, None);
        self.txns
            .insert((sender.to_string(), txn.to_string()), id.clone());
        Ok(id)
    }

    pub fn event(&self, id: &str) -> Option<&HsEvent> {
        self.by_id.get(id).map(|i| &self.events[*i])
    }

    /// A message from a (simulated) person: no limits apply to them.
    /// `key_at`: see [`HsEvent::key_at`].
    pub fn post_user_message(
        &mut self,
        room_id: &str,
        sender: &str,
        ts: u64,
        content: Value,
        key_at: Option<Option<u64>>,
    ) -> String {
        let id = self.append(room_id, sender, ts, content, None);
        if let Some(e) = self.events.last_mut() {
            e.key_at = key_at;
        }
        id
    }

    /// Where the stream of events is now (a sync token's position).
    pub fn position(&self) -> usize {
        self.events.len()
    }

    fn append(
        &mut self,
        room_id: &str,
        sender: &str,
        ts: u64,
        content: Value,
        replaces: Option<String>,
    ) -> String {
        let event_id = format!("$e{}", self.next_event);
        self.next_event += 1;
        self.by_id.insert(event_id.clone(), self.events.len());
        self.events.push(HsEvent {
            event_id: event_id.clone(),
            room_id: room_id.to_string(),
            sender: sender.to_string(),
            ts,
            kind: "m.room.message",
            content,
            replaces,
            member: None,
            key_at: None,
        });
        event_id
    }

    /// A person edits their message: `new_content` replaces it (the body
    /// outside it is the "* " fallback clients send).
    pub fn post_edit(
        &mut self,
        room_id: &str,
        sender: &str,
        ts: u64,
        original: &str,
        new_content: Value,
    ) -> String {
        let fallback = format!(
            "* {}",
            new_content
                .get("body")
                .and_then(Value::as_str)
                .unwrap_or("")
        );
        let content = json!({
            "msgtype": "m.text",
            "body": fallback,
            "m.new_content": new_content,
            "m.relates_to": { "rel_type": "m.replace", "event_id": original },
        });
        self.append(room_id, sender, ts, content, Some(original.to_string()))
    }

    /// A person reacts to an event with `key`.
    pub fn post_reaction(
        &mut self,
        room_id: &str,
        sender: &str,
        ts: u64,
        target: &str,
        key: &str,
    ) -> String {
        let content = json!({
            "m.relates_to": { "rel_type": "m.annotation", "event_id": target, "key": key },
        });
        let id = self.append(room_id, sender, ts, content, None);
        if let Some(e) = self.events.last_mut() {
            e.kind = "m.reaction";
        }
        id
    }

    /// A person redacts an event: a redaction in the timeline, and the
    /// event's content pruned for every later read (a redacted message has
    /// no body; a redacted reaction or edit, no relation).
    pub fn redact(&mut self, room_id: &str, sender: &str, ts: u64, target: &str) -> String {
        let id = self.append(room_id, sender, ts, json!({ "redacts": target }), None);
        if let Some(e) = self.events.last_mut() {
            e.kind = "m.room.redaction";
        }
        if let Some(i) = self.by_id.get(target).copied() {
            self.events[i].content = json!({});
        }
        id
    }

    /// A membership event (`sender` changes `user`'s membership).
    fn append_member(
        &mut self,
        room_id: &str,
        sender: &str,
        user: &str,
        membership: Membership,
        ts: u64,
    ) {
        let content = json!({ "membership": membership.as_str() });
        let position = self.events.len();
        if let Some(r) = self.rooms.get_mut(room_id) {
            r.membership_log
                .push((position, user.to_string(), membership));
        }
        self.append(room_id, sender, ts, content, None);
        if let Some(e) = self.events.last_mut() {
            e.kind = "m.room.member";
            e.member = Some(Member {
                user: user.to_string(),
                membership,
            });
        }
    }

    fn check_rate(&mut self, sender: &str, now: u64) -> Result<(), MatrixError> {
        let rate = self.rate_per_second;
        let b = self.buckets.entry(sender.to_string()).or_insert(Bucket {
            level: 0.0,
            last_ms: now,
        });
        let elapsed = (now.saturating_sub(b.last_ms)) as f64 / 1000.0;
        b.level = (b.level - elapsed * rate).max(0.0);
        b.last_ms = now;
        if b.level + 1.0 > self.burst {
            self.rate_limited += 1;
            let wait_ms = ((b.level + 1.0 - self.burst) / rate * 1000.0).ceil() as u64;
            return Err(MatrixError {
                kind: MatrixErrorKind::RateLimited,
                message: "M_LIMIT_EXCEEDED: Too Many Requests".into(),
                retry_after_ms: Some(wait_ms.max(1)),
            });
        }
        b.level += 1.0;
        Ok(())
    }

    /// `PUT /rooms/{room}/send/m.room.message/{txn}`: a message or an edit.
    pub fn send(
        &mut self,
        sender: &str,
        txn: &str,
        room_id: &str,
        content: &MessageContent,
        replaces: Option<&str>,
        now: u64,
    ) -> Result<String, MatrixError> {
        if let Some(id) = self.txns.get(&(sender.to_string(), txn.to_string())) {
            return Ok(id.clone());
        }
        let Some(room) = self.rooms.get(room_id) else {
            return Err(err(MatrixErrorKind::NotFound, "M_NOT_FOUND: unknown room"));
        };
        if !room.members.contains(sender) {
            return Err(err(
                MatrixErrorKind::Forbidden,
                "M_FORBIDDEN: not in the room",
            ));
        }
        if let Some(target) = replaces {
            match self.event(target) {
                None => {
                    return Err(err(
                        MatrixErrorKind::Other,
                        "M_BAD_JSON: edit of an unknown event",
                    ));
                }
                Some(orig) => {
                    if orig.sender != sender {
                        return Err(err(
                            MatrixErrorKind::Forbidden,
                            "M_FORBIDDEN: edit of another user's event",
                        ));
                    }
                    if orig.replaces.is_some() {
                        // Synapse accepts this; clients ignore it.
                        self.violations.push(format!("edit of an edit: {target}"));
                    }
                }
            }
        }
        self.check_rate(sender, now)?;
        let body = matrix_content(content, replaces);
        let event = json!({
            "type": "m.room.message",
            "room_id": room_id,
            "sender": sender,
            "event_id": format!("$e{}", self.next_event),
            "origin_server_ts": now,
            "content": body,
            "unsigned": {"transaction_id": txn},
        });
        let size = serde_json::to_vec(&event)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > self.max_event_bytes {
            self.rejected_too_large += 1;
            return Err(err(
                MatrixErrorKind::TooLarge,
                &format!(
                    "M_TOO_LARGE: event is {size} bytes, over {}",
                    self.max_event_bytes
                ),
            ));
        }
        let id = self.append(room_id, sender, now, body, replaces.map(str::to_string));
        self.txns
            .insert((sender.to_string(), txn.to_string()), id.clone());
        Ok(id)
    }

    /// `inviter` invites `user` (a no-op for a member or one invited).
    pub fn invite(
        &mut self,
        inviter: &str,
        user: &str,
        room_id: &str,
        now: u64,
    ) -> Result<(), MatrixError> {
        let Some(r) = self.rooms.get_mut(room_id) else {
            return Err(err(MatrixErrorKind::NotFound, "M_NOT_FOUND: unknown room"));
        };
        if r.members.contains(user) || r.invited.contains_key(user) {
            return Ok(());
        }
        r.invited.insert(user.to_string(), inviter.to_string());
        self.append_member(room_id, inviter, user, Membership::Invite, now);
        Ok(())
    }

    /// Joining a room one is in already changes nothing.
    pub fn join(&mut self, user: &str, room_id: &str, now: u64) -> Result<(), MatrixError> {
        let Some(r) = self.rooms.get_mut(room_id) else {
            return Err(err(MatrixErrorKind::NotFound, "M_NOT_FOUND: unknown room"));
        };
        r.invited.remove(user);
        if r.members.insert(user.to_string()) {
            self.append_member(room_id, user, user, Membership::Join, now);
        }
        Ok(())
    }

    /// Leaves (or declines an invite); returns how many stay joined.
    pub fn leave(&mut self, user: &str, room_id: &str, now: u64) -> Result<u32, MatrixError> {
        let Some(r) = self.rooms.get_mut(room_id) else {
            return Err(err(MatrixErrorKind::NotFound, "M_NOT_FOUND: unknown room"));
        };
        let was = r.members.remove(user) | r.invited.remove(user).is_some();
        let joined = r.members.len() as u32;
        if was {
            self.append_member(room_id, user, user, Membership::Leave, now);
        }
        Ok(joined)
    }

    /// What a client shows for each message of `sender`: the content of the
    /// last valid edit (or the original), keyed by the original event id, in
    /// timeline order.
    pub fn rendered(&self, sender: &str) -> Vec<(String, Value)> {
        let mut order = Vec::new();
        let mut latest: BTreeMap<String, Value> = BTreeMap::new();
        for e in &self.events {
            if e.sender != sender || e.kind != "m.room.message" {
                continue;
            }
            match &e.replaces {
                None => {
                    order.push(e.event_id.clone());
                    latest.insert(e.event_id.clone(), e.content.clone());
                }
                Some(target) => {
                    let valid = self.event(target).is_some_and(|o| o.replaces.is_none());
                    if valid && let Some(new) = e.content.get("m.new_content") {
                        latest.insert(target.clone(), new.clone());
                    }
                }
            }
        }
        order
            .into_iter()
            .filter_map(|id| latest.remove(&id).map(|c| (id, c)))
            .collect()
    }
}

fn err(kind: MatrixErrorKind, message: &str) -> MatrixError {
    MatrixError {
        kind,
        message: message.to_string(),
        retry_after_ms: None,
    }
}
