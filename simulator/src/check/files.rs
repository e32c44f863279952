//! Rules about files: every file sent for the bot reaches the agent with
//! its exact bytes, or its sender hears in words why not; every file the
//! agent sent with a reply that ended is in the room, whole.

use serde_json::Value;

use crate::world::{Outcome, Run};

/// Every file sent for the bot (in a direct chat, mentioning it) reaches
/// the agent byte for byte, or is refused in words: by name (too large,
/// not fetched), or with the message it went with (an error notice to a
/// message of its sender's sent with or after it). Excused: a file whose
/// message was deleted, or that the bot dropped when it left the room.
pub fn files_reach_the_agent(run: &Run) -> Vec<String> {
    let bot = &run.bot_user_id;
    let mut v = Vec::new();
    for f in &run.facts.files_sent {
        if !f.for_bot || run.facts.excused.contains(&f.event_id) {
            continue;
        }
        let redacted = run
            .facts
            .user_messages
            .iter()
            .any(|m| m.event_id == f.event_id && m.redacted);
        if redacted {
            continue;
        }
        let reached = run
            .facts
            .files_to_agent
            .iter()
            .any(|(name, bytes)| *name == f.name && *bytes == f.bytes);
        let sent_since = |target: &str| {
            run.homeserver
                .event(target)
                .is_some_and(|e| e.sender == f.sender && e.ts >= f.at)
        };
        let refused = run.homeserver.rendered(bot).iter().any(|(id, content)| {
            let body = content.get("body").and_then(Value::as_str).unwrap_or("");
            let in_room = run
                .homeserver
                .event(id)
                .is_some_and(|e| e.room_id == f.room_id);
            let named = body.contains(&f.name)
                && (body.contains("too large") || body.contains("did not reach the agent"));
            let error = body.starts_with("⚠️") || body.starts_with("🚫");
            let target = run
                .homeserver
                .event(id)
                .and_then(super::answers::replied_to)
                .map(str::to_string);
            in_room && (named || (error && target.as_deref().is_some_and(sent_since)))
        });
        if !reached && !refused {
            v.push(format!(
                "{} ({:?} from {}) never reached the agent and its sender was not told why",
                f.event_id, f.name, f.sender
            ));
        }
    }
    v
}

/// Every file the agent sent with a reply that ended is in the reply's
/// room, sent by the bot, its bytes whole.
pub fn agent_files_delivered(run: &Run) -> Vec<String> {
    let bot = &run.bot_user_id;
    let mut v = Vec::new();
    for f in &run.facts.agent_files {
        if run.facts.outcomes.get(&f.request) != Some(&Outcome::Ended) {
            continue;
        }
        let found = run.homeserver.events.iter().any(|e| {
            &e.sender == bot
                && e.content.get("filename").and_then(Value::as_str) == Some(f.name.as_str())
                && e.content
                    .get("url")
                    .and_then(Value::as_str)
                    .and_then(|uri| run.homeserver.media.get(uri))
                    .is_some_and(|b| *b == f.bytes)
        });
        if !found {
            v.push(format!(
                "the agent's file {:?} for request #{} never reached the room",
                f.name, f.request
            ));
        }
    }
    v
}
