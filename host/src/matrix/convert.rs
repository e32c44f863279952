//! Matrix timeline events as the guest sees them.
//!
//! Only what a person did reaches the guest: text, emotes and notices
//! (notices flagged, so bots never answer each other), images, files,
//! audio (voice flagged) and video (their file as a ref, their caption as
//! the text), edits of text (the new content, never the "* " fallback),
//! reactions and redactions. Events already redacted, other message types
//! and the bot's own events are left out.

use matrix_sdk::ruma::events::reaction::SyncReactionEvent;
use matrix_sdk::ruma::events::room::message::{
    MessageType, Relation, RoomMessageEventContent, SyncRoomMessageEvent,
};
use matrix_sdk::ruma::events::room::redaction::SyncRoomRedactionEvent;
use matrix_sdk::ruma::events::{AnySyncMessageLikeEvent, AnySyncTimelineEvent};
use matrix_sdk::ruma::serde::Raw;
use surfaces_embed::{Event, MessageEdited, Reaction, Redacted, RoomMessage};

/// What the front end knows about the room and the bot when it converts.
pub struct Context<'a> {
    pub room_id: &'a str,
    pub bot_user_id: &'a str,
    pub bot_display_name: &'a str,
    pub is_direct: bool,
    /// Whether the bot sent this event (a reply to it addresses the bot).
    pub sent_by_bot: &'a dyn Fn(&str) -> bool,
}

/// Why an event does not reach the guest (for debug logs and tests).
#[derive(Debug, PartialEq, Eq)]
pub enum Skip {
    NotAMessage,
    Redacted,
    Own,
    Unsupported(String),
    Malformed(String),
}

/// The guest's event for `raw` (a message, an edit, a reaction or a
/// redaction), or why there is none.
pub fn event(
    raw: &Raw<AnySyncTimelineEvent>,
    sender_display_name: impl FnOnce(&str) -> Option<String>,
    cx: &Context<'_>,
) -> Result<Event, Skip> {
    let event = raw
        .deserialize()
        .map_err(|e| Skip::Malformed(e.to_string()))?;
    let AnySyncTimelineEvent::MessageLike(event) = event else {
        return Err(Skip::NotAMessage);
    };
    if event.sender().as_str() == cx.bot_user_id {
        return Err(Skip::Own);
    }
    let event = match event {
        AnySyncMessageLikeEvent::RoomMessage(SyncRoomMessageEvent::Original(e)) => e,
        AnySyncMessageLikeEvent::Reaction(SyncReactionEvent::Original(e)) => {
            let sender = e.sender.to_string();
            return Ok(Event::Reaction(Reaction {
                room_id: cx.room_id.to_string(),
                event_id: e.event_id.to_string(),
                sender_display_name: sender_display_name(&sender),
                sender,
                target: e.content.relates_to.event_id.to_string(),
                key: e.content.relates_to.key,
                is_direct: cx.is_direct,
                origin_server_ts: u64::from(e.origin_server_ts.0),
            }));
        }
        AnySyncMessageLikeEvent::RoomRedaction(SyncRoomRedactionEvent::Original(e)) => {
            // `redacts` moved into the content in room version 11; Synapse
            // serves both, older servers one.
            let Some(target) = e.content.redacts.or(e.redacts) else {
                return Err(Skip::Malformed("a redaction that names no event".into()));
            };
            return Ok(Event::Redacted(Redacted {
                room_id: cx.room_id.to_string(),
                event_id: e.event_id.to_string(),
                target: target.to_string(),
                sender: e.sender.to_string(),
                reason: e.content.reason,
                origin_server_ts: u64::from(e.origin_server_ts.0),
            }));
        }
        AnySyncMessageLikeEvent::RoomMessage(_)
        | AnySyncMessageLikeEvent::Reaction(_)
        | AnySyncMessageLikeEvent::RoomRedaction(_) => return Err(Skip::Redacted),
        _ => return Err(Skip::NotAMessage),
    };
    let sender = event.sender.to_string();
    let RoomMessageEventContent {
        msgtype,
        relates_to,
        mentions,
        ..
    } = event.content;
    let (body, is_notice, attachments) = match msgtype {
        MessageType::Text(t) => (t.body, false, Vec::new()),
        MessageType::Emote(e) => (e.body, false, Vec::new()),
        MessageType::Notice(n) => (n.body, true, Vec::new()),
        // A file: its caption is the text ("" when it has none).
        other => match super::media::file_of(&other, cx.room_id, event.event_id.as_str()) {
            Some((file, caption)) => (caption, false, vec![file]),
            None => return Err(Skip::Unsupported(other.msgtype().to_string())),
        },
    };
    let (thread_root, reply_to) = match relates_to {
        Some(Relation::Replacement(r)) => {
            // The new content, never the fallback body; an edit carries no
            // thread or reply of its own (the original's stand).
            let (body, is_notice) = match r.new_content.msgtype {
                MessageType::Text(t) => (t.body, false),
                MessageType::Emote(e) => (e.body, false),
                MessageType::Notice(n) => (n.body, true),
                other => return Err(Skip::Unsupported(other.msgtype().to_string())),
            };
            let pill = r
                .new_content
                .mentions
                .as_ref()
                .is_some_and(|m| m.user_ids.iter().any(|u| u.as_str() == cx.bot_user_id));
            let mentions_bot = surfaces_contract::mentions_bot(
                &body,
                pill,
                false,
                cx.bot_user_id,
                cx.bot_display_name,
            );
            return Ok(Event::MessageEdited(MessageEdited {
                room_id: cx.room_id.to_string(),
                event_id: event.event_id.to_string(),
                original: r.event_id.to_string(),
                sender_display_name: sender_display_name(&sender),
                sender,
                body,
                mentions_bot,
                is_notice,
                is_direct: cx.is_direct,
                origin_server_ts: u64::from(event.origin_server_ts.0),
            }));
        }
        Some(Relation::Thread(t)) => (
            Some(t.event_id.to_string()),
            // A fallback reply only points at the thread's latest event.
            t.in_reply_to
                .filter(|_| !t.is_falling_back)
                .map(|r| r.event_id.to_string()),
        ),
        Some(Relation::Reply(r)) => (None, Some(r.in_reply_to.event_id.to_string())),
        _ => (None, None),
    };
    let pill = mentions
        .as_ref()
        .is_some_and(|m| m.user_ids.iter().any(|u| u.as_str() == cx.bot_user_id));
    let replied = reply_to.as_deref().is_some_and(|id| (cx.sent_by_bot)(id));
    // The one rule of who is addressed, shared with the guest and the
    // simulator.
    let mentions_bot =
        surfaces_contract::mentions_bot(&body, pill, replied, cx.bot_user_id, cx.bot_display_name);
    Ok(Event::Message(RoomMessage {
        room_id: cx.room_id.to_string(),
        event_id: event.event_id.to_string(),
        sender_display_name: sender_display_name(&sender),
        sender,
        body,
        thread_root,
        reply_to,
        is_direct: cx.is_direct,
        mentions_bot,
        is_notice,
        origin_server_ts: u64::from(event.origin_server_ts.0),
        attachments,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use surfaces_embed::MediaKind;

    const BOT: &str = "@surfaces:home.org";

    fn raw(kind: &str, content: serde_json::Value, sender: &str) -> Raw<AnySyncTimelineEvent> {
        let event = json!({
            "type": kind,
            "event_id": "$e1",
            "sender": sender,
            "origin_server_ts": 1_700_000_000_000u64,
            "content": content,
        });
        Raw::from_json(serde_json::value::to_raw_value(&event).expect("json"))
    }

    fn convert(content: serde_json::Value) -> Result<RoomMessage, Skip> {
        convert_from(content, "@alice:home.org")
    }

    fn convert_from(content: serde_json::Value, sender: &str) -> Result<RoomMessage, Skip> {
        match convert_event("m.room.message", content, sender)? {
            Event::Message(m) => Ok(m),
            other => panic!("not a message: {other:?}"),
        }
    }

    fn convert_event(kind: &str, content: serde_json::Value, sender: &str) -> Result<Event, Skip> {
        let sent = |id: &str| id == "$bot";
        let cx = Context {
            room_id: "!r:home.org",
            bot_user_id: BOT,
            bot_display_name: "surfaces",
            is_direct: false,
            sent_by_bot: &sent,
        };
        event(&raw(kind, content, sender), |_| Some("Alice".into()), &cx)
    }

    #[test]
    fn an_edit_gives_the_new_content_and_the_original() {
        let edit = json!({"msgtype": "m.text", "body": "* surfaces: fixed",
            "m.new_content": {"msgtype": "m.text", "body": "surfaces: fixed",
                "m.mentions": {"user_ids": [BOT]}},
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$e0"}});
        let Ok(Event::MessageEdited(e)) = convert_event("m.room.message", edit, "@alice:home.org")
        else {
            panic!("an edit");
        };
        assert_eq!(
            (e.original.as_str(), e.body.as_str()),
            ("$e0", "surfaces: fixed")
        );
        assert_eq!(e.event_id, "$e1");
        assert!(e.mentions_bot && !e.is_notice);
        // An edit without new content is no edit (the spec: ignore it).
        let broken = json!({"msgtype": "m.text", "body": "* x",
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$e0"}});
        assert!(convert_event("m.room.message", broken, "@alice:home.org").is_err());
    }

    #[test]
    fn reactions_and_redactions_name_their_target() {
        let react = json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": "$q",
            "key": "\u{1f6d1}\u{fe0f}"}});
        let Ok(Event::Reaction(r)) = convert_event("m.reaction", react, "@alice:home.org") else {
            panic!("a reaction");
        };
        assert_eq!((r.target.as_str(), r.key.as_str()), ("$q", "🛑\u{fe0f}"));
        assert_eq!(r.sender_display_name.as_deref(), Some("Alice"));
        // Room version 11 puts `redacts` in the content.
        let redact = json!({"redacts": "$q", "reason": "oops"});
        let Ok(Event::Redacted(d)) = convert_event("m.room.redaction", redact, "@alice:home.org")
        else {
            panic!("a redaction");
        };
        assert_eq!(
            (d.target.as_str(), d.reason.as_deref()),
            ("$q", Some("oops"))
        );
        let own =
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": "$q", "key": "👀"}});
        assert_eq!(convert_event("m.reaction", own, BOT).err(), Some(Skip::Own));
    }

    #[test]
    fn plain_text() {
        let m = convert(json!({"msgtype": "m.text", "body": "hello"})).expect("message");
        assert_eq!(m.body, "hello");
        assert_eq!(m.sender, "@alice:home.org");
        assert_eq!(m.sender_display_name.as_deref(), Some("Alice"));
        assert_eq!(m.origin_server_ts, 1_700_000_000_000);
        assert!(!m.mentions_bot && !m.is_notice);
        assert_eq!((m.thread_root, m.reply_to), (None, None));
    }

    #[test]
    fn notices_are_flagged() {
        let m = convert(json!({"msgtype": "m.notice", "body": "beep"})).expect("message");
        assert!(m.is_notice);
    }

    #[test]
    fn mentions_by_pill_name_or_reply() {
        let pill = json!({"msgtype": "m.text", "body": "hey", "m.mentions": {"user_ids": [BOT]}});
        assert!(convert(pill).expect("message").mentions_bot);
        let name = json!({"msgtype": "m.text", "body": "Surfaces: what is up"});
        assert!(convert(name).expect("message").mentions_bot);
        let id = json!({"msgtype": "m.text", "body": "ask @surfaces:home.org"});
        assert!(convert(id).expect("message").mentions_bot);
        let reply = json!({"msgtype": "m.text", "body": "and?",
            "m.relates_to": {"m.in_reply_to": {"event_id": "$bot"}}});
        let m = convert(reply).expect("message");
        assert!(m.mentions_bot);
        assert_eq!(m.reply_to.as_deref(), Some("$bot"));
        let other = json!({"msgtype": "m.text", "body": "I like surfaces a lot"});
        assert!(!convert(other).expect("message").mentions_bot);
    }

    #[test]
    fn threads_keep_their_root_and_drop_fallback_replies() {
        let falling_back = json!({"msgtype": "m.text", "body": "in thread",
            "m.relates_to": {"rel_type": "m.thread", "event_id": "$root",
                "is_falling_back": true, "m.in_reply_to": {"event_id": "$latest"}}});
        let m = convert(falling_back).expect("message");
        assert_eq!(m.thread_root.as_deref(), Some("$root"));
        assert_eq!(m.reply_to, None);
        let real = json!({"msgtype": "m.text", "body": "in thread",
            "m.relates_to": {"rel_type": "m.thread", "event_id": "$root",
                "is_falling_back": false, "m.in_reply_to": {"event_id": "$bot"}}});
        let m = convert(real).expect("message");
        assert_eq!(m.reply_to.as_deref(), Some("$bot"));
        assert!(m.mentions_bot);
    }

    #[test]
    fn files_come_as_refs_with_their_caption_as_the_text() {
        let image = json!({"msgtype": "m.image", "body": "cat.png", "url": "mxc://x/y",
            "info": {"mimetype": "image/png", "size": 3}});
        let m = convert(image).expect("message");
        assert_eq!(m.body, "");
        let f = &m.attachments[0];
        assert_eq!(
            (f.name.as_str(), f.mime.as_str(), f.size, f.kind),
            ("cat.png", "image/png", Some(3), MediaKind::Image)
        );
        assert_eq!(
            surfaces_embed::media::MediaRef::parse(&f.id),
            Some(surfaces_embed::media::MediaRef::Event {
                room_id: "!r:home.org".into(),
                event_id: m.event_id.clone()
            })
        );
        let captioned = json!({"msgtype": "m.file", "body": "what is this?",
            "filename": "r.pdf", "url": "mxc://x/z"});
        let m = convert(captioned).expect("message");
        assert_eq!(m.body, "what is this?");
        assert_eq!(m.attachments[0].name, "r.pdf");
        assert_eq!(m.attachments[0].mime, "application/octet-stream");
        assert_eq!(m.attachments[0].size, None);
        let voice = json!({"msgtype": "m.audio", "body": "Voice message", "url": "mxc://x/v",
            "org.matrix.msc1767.audio": {"duration": 1000}, "org.matrix.msc3245.voice": {}});
        assert_eq!(
            convert(voice).expect("message").attachments[0].kind,
            MediaKind::Voice
        );
    }

    #[test]
    fn skipped() {
        let edit = json!({"msgtype": "m.text", "body": "* fixed",
            "m.new_content": {"msgtype": "m.text", "body": "fixed"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$e0"}});
        assert!(matches!(
            convert_event("m.room.message", edit, "@alice:home.org"),
            Ok(Event::MessageEdited(_))
        ));
        let own = json!({"msgtype": "m.text", "body": "hello"});
        assert_eq!(convert_from(own, BOT).err(), Some(Skip::Own));
        let location = json!({"msgtype": "m.location", "body": "here", "geo_uri": "geo:1,2"});
        assert_eq!(
            convert(location).err(),
            Some(Skip::Unsupported("m.location".into()))
        );
        let broken = json!({"msgtype": "m.text"});
        assert!(matches!(convert(broken), Err(Skip::Malformed(_))));
    }
}
