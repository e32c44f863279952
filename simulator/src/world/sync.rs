//! The simulated host's sync loop: it long-polls the fake homeserver and
//! drives the shared inbox ([`surfaces_embed::inbox`]) over each batch the
//! way the native sync loop does (`host/src/matrix/sync.rs`), then saves
//! the position once the guest has handled the batch. The position lives
//! in the host's database: it survives a restart, and a crash before it is
//! saved replays the batch.

use serde_json::Value;
use surfaces_contract::mentions_bot;
use surfaces_embed::access::Access;
use surfaces_embed::inbox::{Admit, Dropped, Inbox, Item, Kind, Out, Retry, Step, Why, Window};
use surfaces_embed::{
    Event, Invite, MembersChanged, MessageEdited, Reaction, Redacted, RoomMessage, Undecryptable,
};

use super::{Pending, World};
use crate::homeserver::sync::{self as hs_sync, Batch};
use crate::homeserver::{HsEvent, Membership};

/// How long an undecryptable message waits for its key (as the native
/// host's `UTD_PATIENCE`).
pub(super) const UTD_PATIENCE_MS: u64 = 600_000;
/// A long-poll with nothing to say returns after this long (the native
/// host's sync timeout), but only while messages wait for keys: otherwise
/// it waits for news, so a quiet world settles.
const SYNC_TIMEOUT_MS: u64 = 30_000;
/// Pages of `/messages` read to fill one gap (as the native host).
const GAP_PAGES: usize = 10;

/// Where the sync loop is.
#[derive(Debug, Default)]
pub(super) struct SyncState {
    /// The saved position (the host's database).
    pub position: Option<surfaces_embed::inbox::Position<HsEvent>>,
    /// The position saved after the first sync: a `replay` restart goes
    /// back to it, as if no later one had been saved.
    pub first_position: Option<surfaces_embed::inbox::Position<HsEvent>>,
    /// A long-poll parked at the homeserver: (host run, asked from).
    pub parked: Option<(u64, usize)>,
    /// Bumped when a parked long-poll returns, so its timeout is stale.
    pub poll: u64,
}

impl World<'_> {
    pub(super) fn new_inbox(&self) -> Inbox<HsEvent> {
        let bot = &self.scenario.bot.user_id;
        let server = bot.split_once(':').map_or("", |(_, s)| s);
        let access = Access::new(&self.scenario.bot.allow, &[], server);
        let inbox = Inbox::new(
            &self.scenario.bot.user_id,
            access,
            UTD_PATIENCE_MS,
            self.sync.position.clone(),
        );
        self.planted(inbox)
    }

    /// The inbox with its planted bug when the run asks for it. Built
    /// without the `planted` feature (as a library of the bot), there is
    /// no bug to plant: `--plant` is the simulator's own.
    #[cfg(feature = "planted")]
    fn planted(&self, mut inbox: Inbox<HsEvent>) -> Inbox<HsEvent> {
        if self.join_cutoff {
            inbox.plant_join_cutoff();
        }
        inbox
    }

    #[cfg(not(feature = "planted"))]
    fn planted(&self, inbox: Inbox<HsEvent>) -> Inbox<HsEvent> {
        let _ = self.join_cutoff;
        inbox
    }

    /// The host starts its sync loop: a first start syncs at once (the
    /// bot was there before anyone spoke); a restart offers again the
    /// invites it never joined, then long-polls.
    pub(super) fn start_sync(&mut self) {
        self.inbox = self.new_inbox();
        if self.inbox.is_first() {
            let batch = self.hs.sync(&self.scenario.bot.user_id, None, self.limit());
            self.handle_batch(batch);
        } else {
            let bot = self.scenario.bot.user_id.clone();
            let invites: Vec<(String, String)> = self
                .hs
                .rooms
                .iter()
                .filter_map(|(id, r)| r.invited.get(&bot).map(|i| (id.clone(), i.clone())))
                .collect();
            for (room, inviter) in invites {
                self.offer_invite(room, inviter);
            }
        }
        self.request_sync();
    }

    fn limit(&self) -> usize {
        self.scenario.homeserver.timeline_limit
    }

    fn request_sync(&mut self) {
        let d = self.latency();
        self.after(d, Pending::SyncArrive);
    }

    /// The sync request reaches the homeserver: it answers if there is
    /// news, else parks the request until there is.
    pub(super) fn sync_arrive(&mut self, epoch: u64) {
        if epoch != self.host_epoch {
            return;
        }
        if self.fault(self.scenario.faults.sync_unavailable) {
            self.log("fault: a sync fails with 503".into());
            // The native loop waits a second before it tries again.
            let d = self.latency();
            self.after(d + 1_000, Pending::SyncArrive);
            return;
        }
        let mut since = self.inbox.token().and_then(hs_sync::position);
        if self.fault(self.scenario.faults.duplicate_sync) {
            // The homeserver answers from a little before the position:
            // events the bot has had come again.
            let back = self.range(1, 4) as usize;
            since = since.map(|s| s.saturating_sub(back));
        }
        let batch = self
            .hs
            .sync(&self.scenario.bot.user_id, since, self.limit());
        if batch.is_empty() && !self.inbox.is_first() {
            self.sync.parked = Some((epoch, self.hs.position()));
            self.sync.poll += 1;
            if self.inbox.has_waiting() {
                let poll = self.sync.poll;
                self.after(SYNC_TIMEOUT_MS, Pending::SyncTimeout { poll });
            }
            return;
        }
        let d = self.latency();
        self.after(d, Pending::SyncReturn(Box::new(batch)));
    }

    /// After each step of the world: a parked long-poll returns once the
    /// homeserver has news.
    pub(super) fn wake_sync(&mut self) {
        if let Some((epoch, at)) = self.sync.parked
            && self.hs.position() > at
        {
            self.sync.parked = None;
            self.at_epoch(self.now, Pending::SyncArrive, epoch);
        }
    }

    /// A parked long-poll times out: an empty batch (the inbox tries the
    /// waiting messages again).
    pub(super) fn sync_timeout(&mut self, poll: u64) {
        if poll != self.sync.poll {
            return;
        }
        if let Some((epoch, _)) = self.sync.parked.take() {
            let batch = Batch {
                next_batch: hs_sync::token(self.hs.position()),
                ..Batch::default()
            };
            self.at_epoch(self.now, Pending::SyncReturn(Box::new(batch)), epoch);
        }
    }

    /// A batch reaches the host: the inbox decides, the guest handles,
    /// the position is saved, and the next long-poll goes out.
    pub(super) fn sync_return(&mut self, batch: Batch, epoch: u64) {
        if epoch != self.host_epoch || self.guest.is_none() {
            return;
        }
        self.handle_batch(batch);
        self.request_sync();
    }

    fn handle_batch(&mut self, batch: Batch) {
        for (room, inviter) in batch.invited {
            self.offer_invite(room, inviter);
        }
        let bot = self.scenario.bot.user_id.clone();
        for t in batch.joined {
            let now = self.now;
            let window = Window {
                room_id: t.room_id.clone(),
                older: t.prev_batch.filter(|_| t.limited),
                members_changed: false,
                items: t.events.into_iter().map(|e| item(e, &bot, now)).collect(),
            };
            let mut step = self.inbox.room(window, now);
            loop {
                match step {
                    Step::ReadBack {
                        room_id,
                        from,
                        to,
                        why,
                    } => {
                        let older = self.read_back(&room_id, &from, to.as_deref());
                        let what = match why {
                            Why::Invite => "the bot's invite",
                            Why::Gap => "a gap",
                        };
                        self.log(format!(
                            "sync: read back {} event(s) in {room_id} for {what}",
                            older.len()
                        ));
                        let items = older.into_iter().map(|e| item(e, &bot, now)).collect();
                        step = self.inbox.older(items, now);
                    }
                    Step::Done(outs) => {
                        for out in outs {
                            self.carry_out(out);
                        }
                        break;
                    }
                }
            }
        }
        for room in batch.left {
            self.inbox.left(&room);
        }
        self.retry_undecrypted();
        let p = self.inbox.handled(batch.next_batch);
        if self.sync.first_position.is_none() {
            self.sync.first_position = Some(p.clone());
        }
        self.sync.position = Some(p);
    }

    fn offer_invite(&mut self, room_id: String, inviter: String) {
        match self.inbox.invite(&inviter) {
            Admit::Offer => {
                let is_direct = self.hs.rooms.get(&room_id).is_some_and(|r| r.direct);
                self.deliver(Event::Invite(Invite {
                    room_id,
                    inviter,
                    is_direct,
                }));
            }
            Admit::Decline => {
                self.log(format!(
                    "sync: declining the invite to {room_id} from {inviter} (not allowed)"
                ));
                let bot = self.scenario.bot.user_id.clone();
                let _ = self.hs.leave(&bot, &room_id, self.now);
            }
        }
    }

    /// Events before `from`, back to `to` or at most [`GAP_PAGES`] pages,
    /// oldest first (as the native host's `read_back`).
    fn read_back(&self, room_id: &str, from: &str, to: Option<&str>) -> Vec<HsEvent> {
        let to = to.and_then(hs_sync::position);
        let mut pages = Vec::new();
        let mut from = hs_sync::position(from);
        for _ in 0..GAP_PAGES {
            let Some(f) = from.take() else { break };
            let page = self.hs.messages(room_id, f, to, self.limit().max(10));
            if page.chunk.is_empty() {
                break;
            }
            from = page.end.as_deref().and_then(hs_sync::position);
            let mut chunk = page.chunk;
            chunk.reverse();
            pages.push(chunk);
        }
        pages.reverse();
        pages.into_iter().flatten().collect()
    }

    fn carry_out(&mut self, out: Out<HsEvent>) {
        match out {
            Out::Deliver(e) => {
                if let Some(ev) = self.convert(&e) {
                    self.deliver(ev);
                }
            }
            Out::CountMembers(room_id) => {
                let joined = self.hs.rooms.get(&room_id).map_or(0, |r| r.members.len());
                self.deliver(Event::MembersChanged(MembersChanged {
                    room_id,
                    joined: u32::try_from(joined).unwrap_or(u32::MAX),
                }));
            }
            Out::Dropped(Dropped::NotAllowed { room_id, sender }) => {
                self.log(format!(
                    "sync: ignoring {sender} in {room_id} (not allowed)"
                ));
            }
            Out::Dropped(Dropped::JoinedWithGap { room_id }) => {
                self.log(format!(
                    "sync: joined {room_id} with a gap: earlier messages left out"
                ));
            }
        }
    }

    fn retry_undecrypted(&mut self) {
        for w in self.inbox.take_waiting() {
            let now = self.now;
            let decrypted = key_arrived(&w.event, now).then(|| w.event.clone());
            match self.inbox.retried(w, decrypted, now) {
                Retry::Deliver(e) => {
                    self.log(format!("sync: {} decrypted once its key came", e.event_id));
                    if let Some(ev) = self.convert(&e) {
                        self.deliver(ev);
                    }
                }
                Retry::Duplicate | Retry::Wait => {}
                Retry::NotAllowed(w) => {
                    self.log(format!(
                        "sync: dropping {}: {} is not allowed",
                        w.event_id, w.sender
                    ));
                }
                Retry::GiveUp(w) => {
                    self.log(format!(
                        "sync: gave up decrypting {}: its key never came",
                        w.event_id
                    ));
                    let is_direct = self.hs.rooms.get(&w.room_id).is_some_and(|r| r.direct);
                    self.deliver(Event::Undecryptable(Undecryptable {
                        room_id: w.room_id,
                        event_id: w.event_id,
                        sender: w.sender,
                        is_direct,
                    }));
                }
            }
        }
    }

    /// A person's event as the guest gets it (the native host's
    /// `convert::event`): a message, an edit (its new content), a reaction
    /// or a redaction; a redacted one (pruned) is none.
    fn convert(&self, e: &HsEvent) -> Option<Event> {
        let c = &e.content;
        let room = self.hs.rooms.get(&e.room_id)?;
        let str_at = |path: &str| c.pointer(path).and_then(Value::as_str).map(str::to_string);
        if e.sender == self.scenario.bot.user_id {
            return None;
        }
        match e.kind {
            "m.reaction" => {
                return Some(Event::Reaction(Reaction {
                    room_id: e.room_id.clone(),
                    event_id: e.event_id.clone(),
                    sender: e.sender.clone(),
                    sender_display_name: room.display_names.get(&e.sender).cloned(),
                    target: str_at("/m.relates_to/event_id")?,
                    key: str_at("/m.relates_to/key")?,
                    is_direct: room.direct,
                    origin_server_ts: e.ts,
                }));
            }
            "m.room.redaction" => {
                return Some(Event::Redacted(Redacted {
                    room_id: e.room_id.clone(),
                    event_id: e.event_id.clone(),
                    target: str_at("/redacts")?,
                    sender: e.sender.clone(),
                    reason: None,
                    origin_server_ts: e.ts,
                }));
            }
            _ => {}
        }
        if str_at("/m.relates_to/rel_type").as_deref() == Some("m.replace") {
            let new = c.get("m.new_content")?;
            let body = new.get("body")?.as_str()?.to_string();
            let bot = &self.scenario.bot.user_id;
            let mention = new
                .pointer("/m.mentions/user_ids")
                .and_then(Value::as_array)
                .is_some_and(|ids| ids.iter().any(|i| i.as_str() == Some(bot)));
            let display = &self.scenario.bot.display_name;
            return Some(Event::MessageEdited(MessageEdited {
                room_id: e.room_id.clone(),
                event_id: e.event_id.clone(),
                original: str_at("/m.relates_to/event_id")?,
                sender: e.sender.clone(),
                sender_display_name: room.display_names.get(&e.sender).cloned(),
                mentions_bot: mentions_bot(&body, mention, false, bot, display),
                body,
                is_notice: new.get("msgtype").and_then(Value::as_str) == Some("m.notice"),
                is_direct: room.direct,
                origin_server_ts: e.ts,
            }));
        }
        self.message(e, room).map(Event::Message)
    }

    /// A person's message: who is addressed is the contract's rule.
    fn message(&self, e: &HsEvent, room: &crate::homeserver::HsRoom) -> Option<RoomMessage> {
        let c = &e.content;
        let file = super::media::attachment(&e.room_id, &e.event_id, c);
        let body = match &file {
            Some((_, caption)) => caption.clone(),
            None => c.get("body")?.as_str()?.to_string(),
        };
        let bot = &self.scenario.bot.user_id;
        let str_at = |path: &str| c.pointer(path).and_then(Value::as_str).map(str::to_string);
        let thread_root = (str_at("/m.relates_to/rel_type").as_deref() == Some("m.thread"))
            .then(|| str_at("/m.relates_to/event_id"))
            .flatten();
        let reply_to = str_at("/m.relates_to/m.in_reply_to/event_id");
        let mention = c
            .pointer("/m.mentions/user_ids")
            .and_then(Value::as_array)
            .is_some_and(|ids| ids.iter().any(|i| i.as_str() == Some(bot)));
        let replies_to_bot = reply_to
            .as_deref()
            .and_then(|r| self.hs.event(r))
            .is_some_and(|r| &r.sender == bot);
        let display = &self.scenario.bot.display_name;
        Some(RoomMessage {
            room_id: e.room_id.clone(),
            event_id: e.event_id.clone(),
            sender: e.sender.clone(),
            sender_display_name: room.display_names.get(&e.sender).cloned(),
            mentions_bot: mentions_bot(&body, mention, replies_to_bot, bot, display),
            body,
            thread_root,
            reply_to,
            is_direct: room.direct,
            is_notice: str_at("/msgtype").as_deref() == Some("m.notice"),
            origin_server_ts: e.ts,
            attachments: file.map(|(m, _)| m).into_iter().collect(),
        })
    }
}

/// A timeline event as the inbox sees it.
fn item(e: HsEvent, bot: &str, now: u64) -> Item<HsEvent> {
    let kind = match &e.member {
        Some(m) if m.user == bot => match m.membership {
            Membership::Invite => Kind::BotInvited,
            Membership::Join => Kind::BotJoined,
            Membership::Leave => Kind::Member,
        },
        Some(_) => Kind::Member,
        None if !key_arrived(&e, now) => Kind::Undecryptable,
        None => Kind::Event,
    };
    Item {
        event_id: e.event_id.clone(),
        sender: e.sender.clone(),
        kind,
        event: e,
    }
}

/// Whether the bot can read an event at `now`.
fn key_arrived(e: &HsEvent, now: u64) -> bool {
    match e.key_at {
        None => true,
        Some(Some(at)) => at <= now,
        Some(None) => false,
    }
}
