//! The receiving side of the Matrix front end: one sync loop that turns
//! what happens in rooms into guest events. What of a batch reaches the
//! guest is decided by the shared inbox ([`surfaces_embed::inbox`], which
//! the simulator drives too); this file is its I/O over matrix-sdk.
//!
//! - **Position.** The sync token is saved (in `surfaces.db`, beside the
//!   guest's records) only after the guest has handled every event of its
//!   batch ([`Control::Flush`]): a crash or a power cut replays the last
//!   batch, never skips one; the guest ignores a message it has handled
//!   before.
//! - **The inbox's rules** (first start, first contact after the invite,
//!   gaps, once per event, access, keys, member counts): see
//!   [`surfaces_embed::inbox`]. Here, `/messages` reads what it asks to
//!   read back, matrix-sdk decrypts, and declined invites are left.

use std::sync::Arc;
use std::time::Duration;

use matrix_sdk::config::{SyncSettings, SyncToken};
use matrix_sdk::deserialized_responses::{TimelineEvent, TimelineEventKind};
use matrix_sdk::room::MessagesOptions;
use matrix_sdk::ruma::api::client::filter::{self as filters, FilterDefinition, RoomEventFilter};
use matrix_sdk::ruma::api::client::membership::joined_members;
use matrix_sdk::ruma::api::client::sync::sync_events::v3::Filter;
use matrix_sdk::ruma::api::error::ErrorKind;
use matrix_sdk::ruma::events::AnySyncTimelineEvent;
use matrix_sdk::ruma::serde::Raw;
use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId, UInt};
use matrix_sdk::sync::{JoinedRoomUpdate, State, SyncResponse};
use matrix_sdk::{Client, Room, RoomMemberships, RoomState};
use serde::Deserialize;
use surfaces_embed::inbox::{self, Admit, Dropped, Inbox, Item, Out, Retry, Step, Why, Window};
use surfaces_embed::{Event, Invite, MembersChanged, Undecryptable};
use tokio::sync::{mpsc, oneshot, watch};

use super::convert::{self, Context, Skip};
use super::shared::Shared;
use crate::access::Access;
use crate::channels::{Control, InboundSender};
use crate::metrics::{Kind, Metrics};
use crate::store::HostMeta;
use crate::time::now_ms;

/// The handled position's key in `host_meta` (and, before, in
/// matrix-sdk's store).
const POSITION_KEY: &str = "surfaces.sync-position";
/// Pages of `/messages` read to fill one gap; older ones are left out.
const GAP_PAGES: usize = 10;
/// How long an undecryptable event is tried again.
const UTD_PATIENCE: Duration = Duration::from_secs(600);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The saved position: the inbox's, with matrix-sdk's raw events.
type Position = inbox::Position<Raw<AnySyncTimelineEvent>>;

#[derive(Clone)]
pub(crate) struct Receiver {
    pub client: Client,
    pub events: InboundSender,
    pub control: mpsc::UnboundedSender<Control>,
    pub access: Access,
    pub bot_user_id: String,
    pub bot_display_name: String,
    pub shared: Arc<Shared>,
    pub stop: watch::Receiver<bool>,
    pub timeout: Duration,
    /// Events per room one sync returns before it calls the timeline
    /// limited (the rest is read from `/messages`).
    pub timeline_limit: u32,
    pub metrics: Arc<Metrics>,
    pub position: Arc<HostMeta>,
}

struct Loop {
    r: Receiver,
    inbox: Inbox<Raw<AnySyncTimelineEvent>>,
    /// The position an older version kept in matrix-sdk's store is gone.
    older_position_forgotten: bool,
}

impl Receiver {
    pub async fn run(self) {
        let mut l = Loop {
            inbox: Inbox::new(
                &self.bot_user_id,
                self.access.clone(),
                UTD_PATIENCE.as_millis() as u64,
                None,
            ),
            r: self,
            older_position_forgotten: false,
        };
        l.run().await;
    }
}

impl Loop {
    async fn run(&mut self) {
        let position = self.load_position().await;
        let resumed = position.is_some();
        // matrix-sdk's store was lost (removed, or a new device after a
        // recovery) while ours kept the position: the first sync brings
        // every room's whole state, or the new store would not know the
        // rooms (nor that they are encrypted) until they changed.
        let mut full_state = position.as_ref().is_some_and(|p| !p.joined.is_empty())
            && self.r.client.joined_rooms().is_empty();
        if full_state {
            tracing::info!(
                "matrix-sdk's store is new: the first sync brings the rooms' whole state"
            );
        }
        self.inbox = Inbox::new(
            &self.r.bot_user_id,
            self.r.access.clone(),
            UTD_PATIENCE.as_millis() as u64,
            position,
        );
        if resumed {
            // An invite the last run saw but never joined (it crashed, or
            // the join kept failing) is not in any later batch: offer it
            // again (the guest joins; joining twice is harmless).
            for room in self.r.client.invited_rooms() {
                self.on_invite(&room.room_id().to_owned()).await;
            }
        }
        let mut backoff = Duration::from_secs(1);
        let mut filter = FilterDefinition::default();
        filter.room.timeline.limit = Some(UInt::from(self.r.timeline_limit));
        // Typing notices, read receipts (the bot's own among them) and
        // presence reach no guest; left in, each would end a long poll,
        // and matrix-sdk saves its crypto account on every sync
        // (matrix-rust-sdk#2448). Synapse holds a poll whose filtered
        // answer is empty.
        filter.room.ephemeral = RoomEventFilter::ignore_all();
        filter.presence = filters::Filter::ignore_all();
        loop {
            if *self.r.stop.borrow() {
                return;
            }
            let mut settings =
                SyncSettings::default().filter(Filter::FilterDefinition(filter.clone()));
            settings = match self.inbox.token() {
                Some(token) => settings.token(token.to_string()).timeout(self.r.timeout),
                // The first sync only learns the rooms: a full one (not
                // matrix-sdk's own stored token), answered at once.
                None => settings.token(SyncToken::NoToken).timeout(Duration::ZERO),
            };
            if full_state {
                settings = settings.full_state(true).timeout(Duration::ZERO);
            }
            let mut stop = self.r.stop.clone();
            let result = tokio::select! {
                r = self.r.client.sync_once(settings) => r,
                _ = stop.wait_for(|s| *s) => return,
            };
            let ok = if result.is_ok() { "ok" } else { "error" };
            self.r
                .metrics
                .matrix_syncs
                .get_or_create(&Kind { kind: ok })
                .inc();
            let response = match result {
                Ok(response) => response,
                Err(e) => {
                    if let Some(ErrorKind::UnknownToken { .. }) = e.client_api_error_kind() {
                        let _ = self.r.control.send(Control::Fail(
                            "the homeserver says the bot's session was logged out".into(),
                        ));
                        return;
                    }
                    tracing::warn!(retry_in = ?backoff, "sync failed: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            backoff = Duration::from_secs(1);
            full_state = false;
            self.r.metrics.sync_succeeded(now_ms());
            let first = self.inbox.is_first();
            let next = response.next_batch.clone();
            let delivered = self.handle(response).await;
            // Saved only once the loop has handled the batch; if the loop is
            // gone, the batch may not have been handled: keep the old one.
            if self.r.events.is_closed() || (delivered > 0 && !self.flush().await) {
                return;
            }
            let p = self.inbox.handled(next);
            if self.save_position(&p) {
                self.forget_older_position().await;
            }
            if first {
                tracing::info!(
                    rooms = p.joined.len(),
                    "first sync done: what was already in the rooms is history, left unanswered"
                );
            }
        }
    }

    /// Deliver a batch; returns how many events went to the loop.
    async fn handle(&mut self, response: SyncResponse) -> usize {
        let mut sent = 0;
        for room_id in response.rooms.invited.keys() {
            sent += self.on_invite(room_id).await;
        }
        for (room_id, update) in response.rooms.joined {
            let Some(room) = self.r.client.get_room(&room_id) else {
                continue;
            };
            sent += self.on_joined(&room, update).await;
        }
        for room_id in response.rooms.left.keys() {
            self.inbox.left(room_id.as_str());
        }
        sent += self.retry_undecrypted().await;
        sent
    }

    async fn on_invite(&mut self, room_id: &OwnedRoomId) -> usize {
        let Some(room) = self.r.client.get_room(room_id) else {
            return 0;
        };
        if room.state() != RoomState::Invited {
            return 0;
        }
        let inviter = match room.invite_details().await {
            Ok(invite) => invite.inviter_id.to_string(),
            Err(e) => {
                tracing::warn!(room = %room_id, "cannot read the invite: {e}");
                return 0;
            }
        };
        match self.inbox.invite(&inviter) {
            Admit::Offer => {}
            Admit::Decline => {
                tracing::info!(room = %room_id, %inviter, "declining an invite from a user not allowed");
                self.ignored("invite_not_allowed");
                tokio::spawn(async move {
                    if let Err(e) = room.leave().await {
                        tracing::warn!(room = %room.room_id(), "cannot decline the invite: {e}");
                    }
                });
                return 0;
            }
        }
        let is_direct = room.is_direct().await.unwrap_or(false);
        self.send(Event::Invite(Invite {
            room_id: room_id.to_string(),
            inviter,
            is_direct,
        }))
        .await
    }

    async fn on_joined(&mut self, room: &Room, update: JoinedRoomUpdate) -> usize {
        let bot = self.r.bot_user_id.clone();
        let window = Window {
            room_id: room.room_id().to_string(),
            members_changed: state_has_member_event(&update),
            older: update
                .timeline
                .prev_batch
                .filter(|_| update.timeline.limited),
            items: update
                .timeline
                .events
                .into_iter()
                .map(|e| item(e, &bot))
                .collect(),
        };
        let mut step = self.inbox.room(window, now_ms());
        loop {
            match step {
                Step::ReadBack { from, to, why, .. } => {
                    if why == Why::Invite {
                        // Element's first message in a new DM is sent
                        // between the invite and the join.
                        tracing::info!(room = %room.room_id(), "looking for the bot's invite before the sync window");
                    }
                    let older = self.read_back(room, from, to.as_deref()).await;
                    let items = older.into_iter().map(|e| item(e, &bot)).collect();
                    step = self.inbox.older(items, now_ms());
                }
                Step::Done(outs) => {
                    let mut sent = 0;
                    for out in outs {
                        sent += self.carry_out(room, out).await;
                    }
                    return sent;
                }
            }
        }
    }

    async fn carry_out(&mut self, room: &Room, out: Out<Raw<AnySyncTimelineEvent>>) -> usize {
        match out {
            Out::Deliver(raw) => self.deliver_message(room, &raw).await,
            // Counted by the homeserver, not from matrix-sdk's store or
            // the room summary: the summary lags, and the store can hold a
            // membership read back from history (the bot as merely
            // invited) for a moment; a count of 1 makes the guest leave.
            Out::CountMembers(_) => match self.joined_members(room).await {
                Ok(joined) => {
                    self.send(Event::MembersChanged(MembersChanged {
                        room_id: room.room_id().to_string(),
                        joined,
                    }))
                    .await
                }
                Err(e) => {
                    tracing::warn!(room = %room.room_id(), "cannot count the members: {e}");
                    0
                }
            },
            Out::Dropped(Dropped::NotAllowed { sender, .. }) => {
                tracing::debug!(%sender, room = %room.room_id(), "ignoring a user not allowed");
                self.ignored("sender_not_allowed");
                0
            }
            Out::Dropped(Dropped::JoinedWithGap { .. }) => {
                tracing::info!(room = %room.room_id(), "joined with a gap: earlier messages left out");
                0
            }
        }
    }

    /// How many members the room has joined, as the homeserver says.
    async fn joined_members(&self, room: &Room) -> Result<u32, matrix_sdk::HttpError> {
        let request = joined_members::v3::Request::new(room.room_id().to_owned());
        let response = self.r.client.send(request).await?;
        Ok(u32::try_from(response.joined.len()).unwrap_or(u32::MAX))
    }

    /// Events before `prev_batch`, back to `to` (the previous sync
    /// position) or at most [`GAP_PAGES`] pages, oldest first.
    async fn read_back(
        &self,
        room: &Room,
        prev_batch: String,
        to: Option<&str>,
    ) -> Vec<TimelineEvent> {
        let mut pages: Vec<Vec<TimelineEvent>> = Vec::new();
        let mut from = Some(prev_batch);
        for _ in 0..GAP_PAGES {
            let Some(token) = from.take() else { break };
            let mut options = MessagesOptions::backward().from(Some(token.as_str()));
            options.to = to.map(str::to_string);
            options.limit = UInt::from(self.r.timeline_limit.max(10));
            match room.messages(options).await {
                Ok(page) => {
                    let done = page.chunk.is_empty();
                    from = page.end.filter(|_| !done);
                    let mut chunk = page.chunk;
                    chunk.reverse();
                    pages.push(chunk);
                }
                Err(e) => {
                    tracing::warn!(room = %room.room_id(), "cannot fill a sync gap: {e}");
                    break;
                }
            }
        }
        if from.is_some() {
            tracing::warn!(room = %room.room_id(), "a sync gap longer than {GAP_PAGES} pages: older messages left out");
        }
        pages.reverse();
        let events: Vec<TimelineEvent> = pages.into_iter().flatten().collect();
        tracing::info!(room = %room.room_id(), events = events.len(), "filled a sync gap");
        events
    }

    async fn deliver_message(&mut self, room: &Room, raw: &Raw<AnySyncTimelineEvent>) -> usize {
        let Ok(Some(event_id)) = raw.get_field::<String>("event_id") else {
            return 0;
        };
        let is_direct = is_direct(room).await;
        let sender = raw.get_field::<String>("sender").ok().flatten();
        let display = match sender.as_deref().map(matrix_sdk::ruma::UserId::parse) {
            Some(Ok(user)) => room
                .get_member_no_sync(&user)
                .await
                .ok()
                .flatten()
                .and_then(|m| m.display_name().map(str::to_string)),
            _ => None,
        };
        let converted = {
            let shared = self.r.shared.clone();
            let sent_by_bot = move |id: &str| shared.was_sent(id);
            let cx = Context {
                room_id: room.room_id().as_str(),
                bot_user_id: &self.r.bot_user_id,
                bot_display_name: &self.r.bot_display_name,
                is_direct,
                sent_by_bot: &sent_by_bot,
            };
            convert::event(raw, |_| display, &cx)
        };
        let mut message = match converted {
            Ok(Event::Message(m)) => m,
            Ok(other) => return self.send(other).await,
            Err(Skip::Malformed(why)) => {
                tracing::warn!(room = %room.room_id(), %event_id, "ignoring a malformed message: {why}");
                self.ignored("malformed");
                return 0;
            }
            Err(why) => {
                tracing::trace!(%event_id, ?why, "not for the guest");
                return 0;
            }
        };
        // A reply to one of the bot's messages addresses it; the memory of
        // what this run sent does not reach back past a restart, the
        // homeserver does.
        if !message.mentions_bot
            && !message.is_direct
            && let Some(id) = message.reply_to.as_deref()
            && let Ok(id) = OwnedEventId::try_from(id)
        {
            match room.load_or_fetch_event(&id, None).await {
                Ok(replied) => {
                    let sender = replied.raw().get_field::<String>("sender").ok().flatten();
                    message.mentions_bot = sender.as_deref() == Some(self.r.bot_user_id.as_str());
                }
                Err(e) => tracing::debug!(%id, "cannot fetch the event replied to: {e}"),
            }
        }
        self.send(Event::Message(message)).await
    }

    /// Try the events still waiting for their keys; the inbox gives up on
    /// old ones.
    async fn retry_undecrypted(&mut self) -> usize {
        let mut sent = 0;
        for w in self.inbox.take_waiting() {
            let Ok(room_id) = OwnedRoomId::try_from(w.room_id.as_str()) else {
                continue;
            };
            let Some(room) = self.r.client.get_room(&room_id) else {
                continue;
            };
            let decrypted = match room.decrypt_event(w.event.cast_ref_unchecked(), None).await {
                Ok(event) if !matches!(event.kind, TimelineEventKind::UnableToDecrypt { .. }) => {
                    Some(event.raw().clone())
                }
                _ => None,
            };
            match self.inbox.retried(w, decrypted, now_ms()) {
                Retry::Deliver(raw) => {
                    // Later than messages sent after it, but not lost.
                    tracing::info!(room = %room_id, "a message was decrypted once its key arrived");
                    sent += self.deliver_message(&room, &raw).await;
                }
                Retry::Duplicate | Retry::Wait => {}
                Retry::NotAllowed(w) => {
                    tracing::debug!(sender = %w.sender, room = %room_id, "dropping a waiting message: its sender is no longer allowed");
                    self.ignored("sender_not_allowed");
                }
                Retry::GiveUp(w) => {
                    tracing::warn!(room = %room_id, event = %w.event_id, "gave up decrypting a message: its key never arrived");
                    self.ignored("undecryptable");
                    // Its sender is told (the guest says it, once a day).
                    let is_direct = is_direct(&room).await;
                    sent += self
                        .send(Event::Undecryptable(Undecryptable {
                            room_id: w.room_id,
                            event_id: w.event_id,
                            sender: w.sender,
                            is_direct,
                        }))
                        .await;
                }
            }
        }
        sent
    }

    fn ignored(&self, reason: &'static str) {
        self.r
            .metrics
            .matrix_ignored
            .get_or_create(&Kind { kind: reason })
            .inc();
    }

    /// Waits while the loop is behind: the sync reads no further meanwhile.
    async fn send(&self, event: Event) -> usize {
        usize::from(self.r.events.send(event).await.is_ok())
    }

    /// Wait until the loop has handled everything sent so far.
    async fn flush(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.r.control.send(Control::Flush(tx)).is_err() {
            return false;
        }
        rx.await.is_ok()
    }

    /// The saved position: ours in `surfaces.db`, or (once, from an older
    /// version) the one kept in matrix-sdk's store.
    async fn load_position(&self) -> Option<Position> {
        let bytes = match self.r.position.get(POSITION_KEY) {
            Ok(Some(text)) => text.into_bytes(),
            Ok(None) => match self
                .r
                .client
                .state_store()
                .get_custom_value(POSITION_KEY.as_bytes())
                .await
            {
                Ok(Some(bytes)) => bytes,
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!("cannot read the older sync position, starting afresh: {e}");
                    return None;
                }
            },
            Err(e) => {
                tracing::warn!("cannot read the sync position, starting afresh: {e}");
                return None;
            }
        };
        match serde_json::from_slice::<Position>(&bytes) {
            Ok(mut p) => {
                // An older version saved waiting events without their ids.
                for w in &mut p.undecrypted {
                    if w.event_id.is_empty() {
                        w.event_id = field(&w.event, "event_id");
                        w.sender = field(&w.event, "sender");
                    }
                }
                Some(p)
            }
            Err(e) => {
                tracing::warn!("the saved sync position is unreadable, starting afresh: {e}");
                None
            }
        }
    }

    /// Saved in the guest's database, after the batch's commits there: a
    /// power cut loses the newest commits first, so the position is never
    /// ahead of what the guest has handled. True once saved.
    fn save_position(&self, position: &Position) -> bool {
        let text = match serde_json::to_string(position) {
            Ok(text) => text,
            Err(e) => {
                tracing::warn!("cannot encode the sync position: {e}");
                return false;
            }
        };
        match self.r.position.put(POSITION_KEY, &text) {
            Ok(()) => true,
            Err(e) => {
                // The next start replays from the older position: the
                // guest ignores what it has handled.
                tracing::warn!("cannot save the sync position: {e}");
                false
            }
        }
    }

    /// Once the position is in `surfaces.db`, the one an older version kept
    /// in matrix-sdk's store goes: were `surfaces.db` replaced later, a
    /// stale position would replay everything since to a guest that has
    /// seen none of it (without one, that start answers no history).
    async fn forget_older_position(&mut self) {
        if self.older_position_forgotten {
            return;
        }
        let store = self.r.client.state_store();
        match store.remove_custom_value(POSITION_KEY.as_bytes()).await {
            Ok(_) => self.older_position_forgotten = true,
            Err(e) => tracing::warn!("cannot remove the older sync position: {e}"),
        }
    }
}

/// A direct chat: marked so, or the bot and one other person.
async fn is_direct(room: &Room) -> bool {
    room.is_direct().await.unwrap_or(false)
        || room
            .members_no_sync(RoomMemberships::JOIN)
            .await
            .is_ok_and(|m| m.len() == 2)
}

/// A timeline event as the inbox sees it.
fn item(event: TimelineEvent, bot: &str) -> Item<Raw<AnySyncTimelineEvent>> {
    let undecryptable = matches!(event.kind, TimelineEventKind::UnableToDecrypt { .. });
    let raw = event.into_raw();
    // A reaction's relation stays in the clear: one that cannot be
    // decrypted is dropped quietly (as an event for no one), its sender
    // never told of a message that was not one.
    let undecryptable = undecryptable && !is_annotation(&raw);
    let kind = if undecryptable {
        inbox::Kind::Undecryptable
    } else {
        membership(&raw, bot)
    };
    Item {
        event_id: field(&raw, "event_id"),
        sender: field(&raw, "sender"),
        kind,
        event: raw,
    }
}

/// An (encrypted) event whose clear relation is an `m.annotation`.
fn is_annotation(raw: &Raw<AnySyncTimelineEvent>) -> bool {
    #[derive(Deserialize)]
    struct Encrypted {
        content: Content,
    }
    #[derive(Deserialize)]
    struct Content {
        #[serde(rename = "m.relates_to")]
        relates_to: Option<Rel>,
    }
    #[derive(Deserialize)]
    struct Rel {
        rel_type: Option<String>,
    }
    raw.deserialize_as_unchecked::<Encrypted>()
        .ok()
        .and_then(|e| e.content.relates_to?.rel_type)
        .as_deref()
        == Some("m.annotation")
}

/// A string field of an event, empty when absent.
fn field(raw: &Raw<AnySyncTimelineEvent>, name: &str) -> String {
    raw.get_field::<String>(name)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// What an event says of membership: the bot invited, the bot joined (not
/// a profile change of a member already joined), another change, or none.
fn membership(raw: &Raw<AnySyncTimelineEvent>, bot: &str) -> inbox::Kind {
    #[derive(Deserialize)]
    struct Member {
        #[serde(rename = "type")]
        kind: String,
        state_key: Option<String>,
        content: MemberContent,
        #[serde(default)]
        unsigned: Unsigned,
    }
    #[derive(Deserialize, Default)]
    struct Unsigned {
        prev_content: Option<MemberContent>,
    }
    #[derive(Deserialize)]
    struct MemberContent {
        membership: Option<String>,
    }
    let Ok(m) = raw.deserialize_as_unchecked::<Member>() else {
        return inbox::Kind::Event;
    };
    if m.kind != "m.room.member" {
        return inbox::Kind::Event;
    }
    if m.state_key.as_deref() != Some(bot) {
        return inbox::Kind::Member;
    }
    let was = m.unsigned.prev_content.and_then(|p| p.membership);
    match m.content.membership.as_deref() {
        Some("invite") if was.as_deref() != Some("invite") => inbox::Kind::BotInvited,
        Some("join") if was.as_deref() != Some("join") => inbox::Kind::BotJoined,
        _ => inbox::Kind::Member,
    }
}

/// The state section of a room's update holds membership events.
fn state_has_member_event(update: &JoinedRoomUpdate) -> bool {
    let state = match &update.state {
        State::Before(events) | State::After(events) => events,
    };
    state
        .iter()
        .any(|e| e.get_field::<String>("type").ok().flatten().as_deref() == Some("m.room.member"))
}
