//! What the bot may ask of its host. Every call returns at once.

use crate::types::{AgentMessage, EditTarget, LogLevel, MessageContent};

pub trait Host {
    fn send(&mut self, request: u64, room_id: &str, content: &MessageContent);
    fn edit(&mut self, request: u64, room_id: &str, target: &EditTarget, content: &MessageContent);
    fn set_typing(&mut self, room_id: &str, typing: bool, timeout_ms: u32);
    fn read_receipt(&mut self, room_id: &str, event_id: &str);
    fn join(&mut self, request: u64, room_id: &str);
    fn leave(&mut self, request: u64, room_id: &str);
    fn agent_submit(&mut self, request: u64, context_id: &str, message: &AgentMessage);
    fn agent_cancel(&mut self, context_id: &str);
    fn agent_reset(&mut self, context_id: &str);
    fn store_get(&mut self, key: &str) -> Option<Vec<u8>>;
    fn store_put(&mut self, key: &str, value: &[u8]);
    fn store_delete(&mut self, key: &str);
    fn store_keys(&mut self, prefix: &str) -> Vec<String>;
    fn store_keys_page(&mut self, prefix: &str, after: Option<&str>, limit: u32) -> Vec<String>;
    fn now(&mut self) -> u64;
    fn set_timer(&mut self, id: u64, delay_ms: u64);
    fn cancel_timer(&mut self, id: u64);
    fn log(&mut self, level: LogLevel, message: &str);
    fn reload(&mut self, request: u64);
}

/// The component's imports.
pub struct WitHost;

impl Host for WitHost {
    fn send(&mut self, request: u64, room_id: &str, content: &MessageContent) {
        crate::bindings::surfaces::bot::matrix::send(request, room_id, content);
    }
    fn edit(&mut self, request: u64, room_id: &str, target: &EditTarget, content: &MessageContent) {
        crate::bindings::surfaces::bot::matrix::edit(request, room_id, target, content);
    }
    fn set_typing(&mut self, room_id: &str, typing: bool, timeout_ms: u32) {
        crate::bindings::surfaces::bot::matrix::set_typing(room_id, typing, timeout_ms);
    }
    fn read_receipt(&mut self, room_id: &str, event_id: &str) {
        crate::bindings::surfaces::bot::matrix::read_receipt(room_id, event_id);
    }
    fn join(&mut self, request: u64, room_id: &str) {
        crate::bindings::surfaces::bot::matrix::join(request, room_id);
    }
    fn leave(&mut self, request: u64, room_id: &str) {
        crate::bindings::surfaces::bot::matrix::leave(request, room_id);
    }
    fn agent_submit(&mut self, request: u64, context_id: &str, message: &AgentMessage) {
        crate::bindings::surfaces::bot::agent::submit(request, context_id, message);
    }
    fn agent_cancel(&mut self, context_id: &str) {
        crate::bindings::surfaces::bot::agent::cancel(context_id);
    }
    fn agent_reset(&mut self, context_id: &str) {
        crate::bindings::surfaces::bot::agent::reset(context_id);
    }
    fn store_get(&mut self, key: &str) -> Option<Vec<u8>> {
        crate::bindings::surfaces::bot::store::get(key)
    }
    fn store_put(&mut self, key: &str, value: &[u8]) {
        crate::bindings::surfaces::bot::store::put(key, value);
    }
    fn store_delete(&mut self, key: &str) {
        crate::bindings::surfaces::bot::store::delete(key);
    }
    fn store_keys(&mut self, prefix: &str) -> Vec<String> {
        crate::bindings::surfaces::bot::store::keys(prefix)
    }
    fn store_keys_page(&mut self, prefix: &str, after: Option<&str>, limit: u32) -> Vec<String> {
        crate::bindings::surfaces::bot::store::keys_page(prefix, after, limit)
    }
    fn now(&mut self) -> u64 {
        crate::bindings::surfaces::bot::clock::now()
    }
    fn set_timer(&mut self, id: u64, delay_ms: u64) {
        crate::bindings::surfaces::bot::clock::set_timer(id, delay_ms);
    }
    fn cancel_timer(&mut self, id: u64) {
        crate::bindings::surfaces::bot::clock::cancel_timer(id);
    }
    fn log(&mut self, level: LogLevel, message: &str) {
        crate::bindings::surfaces::bot::host::log(level, message);
    }
    fn reload(&mut self, request: u64) {
        crate::bindings::surfaces::bot::host::reload(request);
    }
}
