//! The contract as released at 0.2.0 (`wit/0.2.0/`, frozen), and its
//! adapters: a 0.2.0 guest's imports run through the newest ones, and the
//! newest host's values are given to it in 0.2.0's shapes.
//!
//! What 0.3.0 changed, and how a 0.2.0 guest sees it:
//! - the `reaction`, `message-edited` and `redacted` events are not
//!   delivered to it (it is not called for them);
//! - there is no `agent.feedback` import to call.

use crate::bindings::surfaces::bot as new;
use crate::ctx::Ctx;

wasmtime::component::bindgen!({
    path: "../wit/0.2.0",
    world: "bot",
    // As in the newest bindings: a failing host store fails the event.
    imports: {
        "surfaces:bot/store.get": trappable,
        "surfaces:bot/store.keys": trappable,
        "surfaces:bot/store.keys-page": trappable,
    },
});

use self::surfaces::bot as old;
use new::types as n;
use old::types as o;

// What the host gives the guest: newest to 0.2.0.
same_record!(n::HostInfo => o::HostInfo {
    bot_user_id, bot_display_name, host_version, settings, max_event_bytes, resumed, guest_hash,
});
same_record!(n::RoomMessage => o::RoomMessage {
    room_id, event_id, sender, sender_display_name, body, thread_root, reply_to,
    is_direct, mentions_bot, is_notice, origin_server_ts,
});
same_record!(n::Invite => o::Invite { room_id, inviter, is_direct });
same_record!(n::Undecryptable => o::Undecryptable { room_id, event_id, sender, is_direct });
same_record!(n::MembersChanged => o::MembersChanged { room_id, joined });
same_enum!(n::MatrixErrorKind => o::MatrixErrorKind {
    RateLimited, TooLarge, Forbidden, NotFound, Unavailable, Other,
});
same_record!(n::MatrixError => o::MatrixError { kind, message, retry_after_ms });
same_record!(n::AgentChunk => o::AgentChunk { request, text });
same_record!(n::AgentEnd => o::AgentEnd { request, tokens_used });
error_kind_before_0_4!(n::AgentErrorKind => o::AgentErrorKind);
same_record!(n::AgentError => o::AgentError { request, kind, message });
same_enum!(n::ConnectionState => o::ConnectionState { Connecting, Ready, Busy, Disconnected });
same_record!(n::AgentStatus => o::AgentStatus { context_id, state, context_tokens, detail });
same_record!(n::ReloadResult => o::ReloadResult { request, outcome });

impl From<n::MatrixResult> for o::MatrixResult {
    fn from(r: n::MatrixResult) -> Self {
        o::MatrixResult {
            request: r.request,
            outcome: r.outcome.map_err(Into::into),
        }
    }
}

impl From<n::ReloadOutcome> for o::ReloadOutcome {
    fn from(o: n::ReloadOutcome) -> Self {
        match o {
            n::ReloadOutcome::Swapped(v) => o::ReloadOutcome::Swapped(v),
            n::ReloadOutcome::Refused(why) => o::ReloadOutcome::Refused(why),
            n::ReloadOutcome::RolledBack(why) => o::ReloadOutcome::RolledBack(why),
        }
    }
}

/// The event in 0.2.0's shape, or `None` for one a 0.2.0 guest cannot
/// represent: the guest is not called.
pub(crate) fn event(e: &n::Event) -> Option<o::Event> {
    Some(match e.clone() {
        // A file: its caption alone, as a text; without one, nothing.
        n::Event::Message(m) if !m.attachments.is_empty() && m.body.is_empty() => return None,
        n::Event::Message(m) => o::Event::Message(m.into()),
        n::Event::Invite(i) => o::Event::Invite(i.into()),
        n::Event::MembersChanged(m) => o::Event::MembersChanged(m.into()),
        n::Event::MatrixResult(r) => o::Event::MatrixResult(r.into()),
        n::Event::AgentChunk(c) => o::Event::AgentChunk(c.into()),
        n::Event::AgentEnd(e) => o::Event::AgentEnd(e.into()),
        n::Event::AgentError(e) => o::Event::AgentError(e.into()),
        n::Event::AgentStatus(s) => o::Event::AgentStatus(s.into()),
        n::Event::Timer(id) => o::Event::Timer(id),
        n::Event::ReloadResult(r) => o::Event::ReloadResult(r.into()),
        n::Event::Undecryptable(u) => o::Event::Undecryptable(u.into()),
        n::Event::Reaction(_)
        | n::Event::MessageEdited(_)
        | n::Event::Redacted(_)
        | n::Event::AgentAttachment(_) => return None,
    })
}

// What the guest gives the host: 0.2.0 to newest.
same_record!(o::GuestInfo => n::GuestInfo { name, version });
same_record!(o::Sender => n::Sender { id, display_name });
same_record!(o::Attachment => n::Attachment { name, mime, url });
same_enum!(o::LogLevel => n::LogLevel { Trace, Debug, Info, Warn, Error });
same_record!(o::MessageContent => n::MessageContent {
    body, formatted_body, notice, live, thread_root, reply_to, mentions,
});

impl From<o::EditTarget> for n::EditTarget {
    fn from(t: o::EditTarget) -> Self {
        match t {
            o::EditTarget::Request(r) => n::EditTarget::Request(r),
            o::EditTarget::Event(e) => n::EditTarget::Event(e),
        }
    }
}

impl From<o::AgentMessage> for n::AgentMessage {
    fn from(m: o::AgentMessage) -> Self {
        n::AgentMessage {
            text: m.text,
            sender: m.sender.into(),
            skills: m.skills,
            attachments: m.attachments.into_iter().map(Into::into).collect(),
        }
    }
}

// The imports: each runs the newest one.
impl o::Host for Ctx {}

impl old::matrix::Host for Ctx {
    fn send(&mut self, request: u64, room_id: String, content: o::MessageContent) {
        new::matrix::Host::send(self, request, room_id, content.into())
    }

    fn edit(
        &mut self,
        request: u64,
        room_id: String,
        target: o::EditTarget,
        content: o::MessageContent,
    ) {
        new::matrix::Host::edit(self, request, room_id, target.into(), content.into())
    }

    fn react(&mut self, request: u64, room_id: String, event_id: String, key: String) {
        new::matrix::Host::react(self, request, room_id, event_id, key)
    }

    fn set_typing(&mut self, room_id: String, typing: bool, timeout_ms: u32) {
        new::matrix::Host::set_typing(self, room_id, typing, timeout_ms)
    }

    fn read_receipt(&mut self, room_id: String, event_id: String) {
        new::matrix::Host::read_receipt(self, room_id, event_id)
    }

    fn join(&mut self, request: u64, room_id: String) {
        new::matrix::Host::join(self, request, room_id)
    }

    fn leave(&mut self, request: u64, room_id: String) {
        new::matrix::Host::leave(self, request, room_id)
    }
}

impl old::agent::Host for Ctx {
    fn submit(&mut self, request: u64, context_id: String, message: o::AgentMessage) {
        new::agent::Host::submit(self, request, context_id, message.into())
    }

    fn cancel(&mut self, context_id: String) {
        new::agent::Host::cancel(self, context_id)
    }

    fn reset(&mut self, context_id: String) {
        new::agent::Host::reset(self, context_id)
    }
}

impl old::store::Host for Ctx {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        new::store::Host::get(self, key)
    }

    fn put(&mut self, key: String, value: Vec<u8>) {
        new::store::Host::put(self, key, value)
    }

    fn delete(&mut self, key: String) {
        new::store::Host::delete(self, key)
    }

    fn keys(&mut self, prefix: String) -> wasmtime::Result<Vec<String>> {
        new::store::Host::keys(self, prefix)
    }

    fn keys_page(
        &mut self,
        prefix: String,
        after: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Vec<String>> {
        new::store::Host::keys_page(self, prefix, after, limit)
    }
}

impl old::clock::Host for Ctx {
    fn now(&mut self) -> u64 {
        new::clock::Host::now(self)
    }

    fn set_timer(&mut self, id: u64, delay_ms: u64) {
        new::clock::Host::set_timer(self, id, delay_ms)
    }

    fn cancel_timer(&mut self, id: u64) {
        new::clock::Host::cancel_timer(self, id)
    }
}

impl old::host::Host for Ctx {
    fn log(&mut self, level: o::LogLevel, message: String) {
        new::host::Host::log(self, level.into(), message)
    }

    fn reload(&mut self, request: u64) {
        new::host::Host::reload(self, request)
    }

    fn rollback(&mut self, request: u64) {
        new::host::Host::rollback(self, request)
    }
}
