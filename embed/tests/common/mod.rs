//! Helpers shared by the embedding's tests.

use surfaces_embed::{Event, HostInfo, RoomMessage};

pub fn info(settings: &[(&str, &str)]) -> HostInfo {
    HostInfo {
        bot_user_id: "@bot:test".into(),
        bot_display_name: "bot".into(),
        host_version: "test".into(),
        settings: settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        max_event_bytes: 65_536,
        resumed: false,
        guest_hash: String::new(),
        max_attachment_bytes: 8 << 20,
    }
}

/// A direct message from Alice, with an event id of its own (the guest
/// ignores an id it has handled before).
pub fn dm(body: &str) -> Event {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    Event::Message(RoomMessage {
        room_id: "!room".into(),
        event_id: format!("${}", NEXT.fetch_add(1, Ordering::Relaxed)),
        sender: "@alice:test".into(),
        sender_display_name: None,
        body: body.into(),
        thread_root: None,
        reply_to: None,
        is_direct: true,
        mentions_bot: false,
        is_notice: false,
        origin_server_ts: 0,
        attachments: Vec::new(),
    })
}
