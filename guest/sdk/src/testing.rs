//! A host in memory, to test a guest's logic natively with `cargo test`:
//! the store is a map, the clock is a field, and every effect is kept in
//! order for the test to read.
//!
//! ```ignore
//! let mut host = MemoryHost::default();
//! let mut bot = MyBot::init(testing::host_info(&[]), &mut host)?;
//! bot.handle(&mut host, Event::Message(testing::message("!dm", "@alice:example.org", "hi")))?;
//! assert_eq!(host.sent_bodies(), ["hi"]);
//! ```

use std::collections::BTreeMap;

use crate::host::Host;
use crate::types::{
    AgentFeedback, AgentMessage, AttachmentContent, EditTarget, HostInfo, LogLevel, MessageContent,
    RoomMessage,
};

/// What a guest asked of its host, in the order it asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    Send {
        request: u64,
        room_id: String,
        content: MessageContent,
    },
    SendAttachment {
        request: u64,
        room_id: String,
        content: AttachmentContent,
    },
    Edit {
        request: u64,
        room_id: String,
        target: EditTarget,
        content: MessageContent,
    },
    React {
        request: u64,
        room_id: String,
        event_id: String,
        key: String,
    },
    Typing {
        room_id: String,
        typing: bool,
        timeout_ms: u32,
    },
    ReadReceipt {
        room_id: String,
        event_id: String,
    },
    Join {
        request: u64,
        room_id: String,
    },
    Leave {
        request: u64,
        room_id: String,
    },
    AgentSubmit {
        request: u64,
        context_id: String,
        message: AgentMessage,
    },
    AgentCancel {
        context_id: String,
    },
    AgentReset {
        context_id: String,
    },
    AgentFeedback {
        context_id: String,
        feedback: AgentFeedback,
    },
    SetTimer {
        id: u64,
        delay_ms: u64,
    },
    CancelTimer {
        id: u64,
    },
    Reload {
        request: u64,
    },
    Rollback {
        request: u64,
    },
}

/// A host in memory. Unlike the real hosts it commits every write at
/// once, also of a call that fails.
#[derive(Debug, Default)]
pub struct MemoryHost {
    pub store: BTreeMap<String, Vec<u8>>,
    pub effects: Vec<Effect>,
    pub logs: Vec<(LogLevel, String)>,
    /// What `now` answers (ms since the epoch).
    pub now_ms: u64,
}

impl MemoryHost {
    /// The effects so far, leaving none.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// The bodies of the messages sent so far, in order.
    pub fn sent_bodies(&self) -> Vec<&str> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Send { content, .. } => Some(content.body.as_str()),
                _ => None,
            })
            .collect()
    }
}

impl Host for MemoryHost {
    fn send(&mut self, request: u64, room_id: &str, content: &MessageContent) {
        self.effects.push(Effect::Send {
            request,
            room_id: room_id.into(),
            content: content.clone(),
        });
    }
    fn send_attachment(&mut self, request: u64, room_id: &str, content: &AttachmentContent) {
        self.effects.push(Effect::SendAttachment {
            request,
            room_id: room_id.into(),
            content: content.clone(),
        });
    }
    fn edit(&mut self, request: u64, room_id: &str, target: &EditTarget, content: &MessageContent) {
        self.effects.push(Effect::Edit {
            request,
            room_id: room_id.into(),
            target: target.clone(),
            content: content.clone(),
        });
    }
    fn react(&mut self, request: u64, room_id: &str, event_id: &str, key: &str) {
        self.effects.push(Effect::React {
            request,
            room_id: room_id.into(),
            event_id: event_id.into(),
            key: key.into(),
        });
    }
    fn set_typing(&mut self, room_id: &str, typing: bool, timeout_ms: u32) {
        self.effects.push(Effect::Typing {
            room_id: room_id.into(),
            typing,
            timeout_ms,
        });
    }
    fn read_receipt(&mut self, room_id: &str, event_id: &str) {
        self.effects.push(Effect::ReadReceipt {
            room_id: room_id.into(),
            event_id: event_id.into(),
        });
    }
    fn join(&mut self, request: u64, room_id: &str) {
        self.effects.push(Effect::Join {
            request,
            room_id: room_id.into(),
        });
    }
    fn leave(&mut self, request: u64, room_id: &str) {
        self.effects.push(Effect::Leave {
            request,
            room_id: room_id.into(),
        });
    }
    fn agent_submit(&mut self, request: u64, context_id: &str, message: &AgentMessage) {
        self.effects.push(Effect::AgentSubmit {
            request,
            context_id: context_id.into(),
            message: message.clone(),
        });
    }
    fn agent_cancel(&mut self, context_id: &str) {
        self.effects.push(Effect::AgentCancel {
            context_id: context_id.into(),
        });
    }
    fn agent_reset(&mut self, context_id: &str) {
        self.effects.push(Effect::AgentReset {
            context_id: context_id.into(),
        });
    }
    fn agent_feedback(&mut self, context_id: &str, feedback: &AgentFeedback) {
        self.effects.push(Effect::AgentFeedback {
            context_id: context_id.into(),
            feedback: feedback.clone(),
        });
    }
    fn store_get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.store.get(key).cloned()
    }
    fn store_put(&mut self, key: &str, value: &[u8]) {
        self.store.insert(key.to_string(), value.to_vec());
    }
    fn store_delete(&mut self, key: &str) {
        self.store.remove(key);
    }
    fn store_keys(&mut self, prefix: &str) -> Vec<String> {
        self.store
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect()
    }
    fn store_keys_page(&mut self, prefix: &str, after: Option<&str>, limit: u32) -> Vec<String> {
        let start = after.unwrap_or(prefix).to_string();
        self.store
            .range(start..)
            .map(|(k, _)| k)
            .filter(|k| after.is_none_or(|a| k.as_str() > a))
            .take_while(|k| k.starts_with(prefix))
            .take(limit as usize)
            .cloned()
            .collect()
    }
    fn now(&mut self) -> u64 {
        self.now_ms
    }
    fn set_timer(&mut self, id: u64, delay_ms: u64) {
        self.effects.push(Effect::SetTimer { id, delay_ms });
    }
    fn cancel_timer(&mut self, id: u64) {
        self.effects.push(Effect::CancelTimer { id });
    }
    fn log(&mut self, level: LogLevel, message: &str) {
        self.logs.push((level, message.to_string()));
    }
    fn reload(&mut self, request: u64) {
        self.effects.push(Effect::Reload { request });
    }
    fn rollback(&mut self, request: u64) {
        self.effects.push(Effect::Rollback { request });
    }
}

/// What a host tells a fresh instance, with these settings.
pub fn host_info(settings: &[(&str, &str)]) -> HostInfo {
    HostInfo {
        bot_user_id: "@bot:example.org".into(),
        bot_display_name: "bot".into(),
        host_version: "surfaces-guest-sdk testing".into(),
        settings: settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        max_event_bytes: 65_536,
        resumed: false,
        guest_hash: "0".repeat(64),
        max_attachment_bytes: 8 << 20,
    }
}

/// A plain message in a direct chat with the bot, `$1` in `room_id`.
pub fn message(room_id: &str, sender: &str, body: &str) -> RoomMessage {
    RoomMessage {
        room_id: room_id.into(),
        event_id: "$1".into(),
        sender: sender.into(),
        sender_display_name: None,
        body: body.into(),
        thread_root: None,
        reply_to: None,
        is_direct: true,
        mentions_bot: false,
        is_notice: false,
        origin_server_ts: 0,
        attachments: Vec::new(),
    }
}
