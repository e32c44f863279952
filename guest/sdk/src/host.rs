//! What a guest may ask of its host. Every call returns at once: a Matrix
//! request, an agent submit or a timer is only recorded, and its outcome
//! comes back later as an event with the id the guest chose.

use crate::bindings::surfaces::bot as wit;
use crate::types::{
    AgentFeedback, AgentMessage, AttachmentContent, EditTarget, LogLevel, MessageContent,
};

pub trait Host {
    /// Send a message; its outcome comes back as a `matrix-result` with
    /// `request` (reuse the id for a retry: the homeserver de-duplicates).
    fn send(&mut self, request: u64, room_id: &str, content: &MessageContent);
    /// Send a file the host keeps (a `media` id) as a message of its own.
    fn send_attachment(&mut self, request: u64, room_id: &str, content: &AttachmentContent);
    /// Replace a message's content (an `m.replace` edit).
    fn edit(&mut self, request: u64, room_id: &str, target: &EditTarget, content: &MessageContent);
    /// React to an event with `key` (an emoji).
    fn react(&mut self, request: u64, room_id: &str, event_id: &str, key: &str);
    fn set_typing(&mut self, room_id: &str, typing: bool, timeout_ms: u32);
    fn read_receipt(&mut self, room_id: &str, event_id: &str);
    fn join(&mut self, request: u64, room_id: &str);
    fn leave(&mut self, request: u64, room_id: &str);
    /// Give a message to the agent in `context_id`; its reply comes back as
    /// `agent-chunk`s and one `agent-end` (or `agent-error`) with `request`.
    fn agent_submit(&mut self, request: u64, context_id: &str, message: &AgentMessage);
    fn agent_cancel(&mut self, context_id: &str);
    fn agent_reset(&mut self, context_id: &str);
    /// Pass a reaction on an answer to the agent in `context_id` (best
    /// effort: dropped when the context has no open connection).
    fn agent_feedback(&mut self, context_id: &str, feedback: &AgentFeedback);
    /// The guest's own namespace in the host's store. Writes of a call are
    /// committed when it returns `Ok`, and dropped on an error or a trap.
    fn store_get(&mut self, key: &str) -> Option<Vec<u8>>;
    fn store_put(&mut self, key: &str, value: &[u8]);
    fn store_delete(&mut self, key: &str);
    fn store_keys(&mut self, prefix: &str) -> Vec<String>;
    fn store_keys_page(&mut self, prefix: &str, after: Option<&str>, limit: u32) -> Vec<String>;
    /// Milliseconds since the epoch; one value for the whole call.
    fn now(&mut self) -> u64;
    /// A `timer` event with `id` after `delay_ms` (see [`crate::timers`]
    /// for timers that know what they are for).
    fn set_timer(&mut self, id: u64, delay_ms: u64);
    fn cancel_timer(&mut self, id: u64);
    fn log(&mut self, level: LogLevel, message: &str);
    /// Ask the host to swap in the guest file again; the outcome comes
    /// back as a `reload-result` with `request`.
    fn reload(&mut self, request: u64);
    /// Ask the host to go back to the guest that ran before this one; the
    /// outcome comes back as a `reload-result` with `request`, to whichever
    /// guest runs after.
    fn rollback(&mut self, request: u64);

    fn debug(&mut self, message: &str) {
        self.log(LogLevel::Debug, message);
    }
    fn info(&mut self, message: &str) {
        self.log(LogLevel::Info, message);
    }
    fn warn(&mut self, message: &str) {
        self.log(LogLevel::Warn, message);
    }
    fn error(&mut self, message: &str) {
        self.log(LogLevel::Error, message);
    }
}

/// The component's imports.
pub struct WitHost;

impl Host for WitHost {
    fn send(&mut self, request: u64, room_id: &str, content: &MessageContent) {
        wit::matrix::send(request, room_id, content);
    }
    fn send_attachment(&mut self, request: u64, room_id: &str, content: &AttachmentContent) {
        wit::matrix::send_attachment(request, room_id, content);
    }
    fn edit(&mut self, request: u64, room_id: &str, target: &EditTarget, content: &MessageContent) {
        wit::matrix::edit(request, room_id, target, content);
    }
    fn react(&mut self, request: u64, room_id: &str, event_id: &str, key: &str) {
        wit::matrix::react(request, room_id, event_id, key);
    }
    fn set_typing(&mut self, room_id: &str, typing: bool, timeout_ms: u32) {
        wit::matrix::set_typing(room_id, typing, timeout_ms);
    }
    fn read_receipt(&mut self, room_id: &str, event_id: &str) {
        wit::matrix::read_receipt(room_id, event_id);
    }
    fn join(&mut self, request: u64, room_id: &str) {
        wit::matrix::join(request, room_id);
    }
    fn leave(&mut self, request: u64, room_id: &str) {
        wit::matrix::leave(request, room_id);
    }
    fn agent_submit(&mut self, request: u64, context_id: &str, message: &AgentMessage) {
        wit::agent::submit(request, context_id, message);
    }
    fn agent_cancel(&mut self, context_id: &str) {
        wit::agent::cancel(context_id);
    }
    fn agent_reset(&mut self, context_id: &str) {
        wit::agent::reset(context_id);
    }
    fn agent_feedback(&mut self, context_id: &str, feedback: &AgentFeedback) {
        wit::agent::feedback(context_id, feedback);
    }
    fn store_get(&mut self, key: &str) -> Option<Vec<u8>> {
        wit::store::get(key)
    }
    fn store_put(&mut self, key: &str, value: &[u8]) {
        wit::store::put(key, value);
    }
    fn store_delete(&mut self, key: &str) {
        wit::store::delete(key);
    }
    fn store_keys(&mut self, prefix: &str) -> Vec<String> {
        wit::store::keys(prefix)
    }
    fn store_keys_page(&mut self, prefix: &str, after: Option<&str>, limit: u32) -> Vec<String> {
        wit::store::keys_page(prefix, after, limit)
    }
    fn now(&mut self) -> u64 {
        wit::clock::now()
    }
    fn set_timer(&mut self, id: u64, delay_ms: u64) {
        wit::clock::set_timer(id, delay_ms);
    }
    fn cancel_timer(&mut self, id: u64) {
        wit::clock::cancel_timer(id);
    }
    fn log(&mut self, level: LogLevel, message: &str) {
        wit::host::log(level, message);
    }
    fn reload(&mut self, request: u64) {
        wit::host::reload(request);
    }
    fn rollback(&mut self, request: u64) {
        wit::host::rollback(request);
    }
}
