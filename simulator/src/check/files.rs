//! Rules about files: every file sent for the bot reaches the agent with
//! its exact bytes, or its sender hears in words why not; every file the
//! agent sent with a reply that ended is in the room, whole.

use serde_json::Value;

use crate::world::{FileSent, Outcome, Run, UserMessage};

/// What an answer says when its question did not get to the agent, or
/// not whole: an error, a refusal, a stop, a withdrawal.
const NOT_ASKED: &[&str] = &["⚠️", "🚫", "⏹️", "⏭️", "✏️", "🗑️"];

/// Every file sent for the bot (in a direct chat, mentioning it), or
/// taken by its sender's next text for the bot in the same place within
/// the wait (`attachment_wait_ms`), reaches
/// the agent byte for byte, or is refused in words: by name (too large,
/// not fetched), or with the question it went with (the question's answer
/// says it failed or was stopped before the agent answered). Excused: a file whose
/// message, or the text it went with, was deleted, or that the bot
/// dropped when it left the room. Vacuous for a guest that never submits
/// to the agent.
pub fn files_reach_the_agent(run: &Run) -> Vec<String> {
    let bot = &run.bot_user_id;
    let mut v = Vec::new();
    // A guest that never talks to the agent (an echo bot) owes it nothing.
    if run.facts.submits.is_empty() {
        return v;
    }
    // How long a file waits for its text (the guest's setting).
    let wait = run
        .facts
        .settings
        .iter()
        .find(|(k, _)| k == "attachment_wait_ms")
        .and_then(|(_, v)| v.parse::<u64>().ok())
        .unwrap_or(20_000);
    for f in &run.facts.files_sent {
        if !f.seen || run.facts.excused.contains(&f.event_id) {
            continue;
        }
        // The text it went with: its sender's next message for the bot in
        // the same place. Deleted, it takes the file back with it.
        let at = |id: &str| run.homeserver.event(id).map_or(0, |e| e.ts);
        let thread = thread_of(run, &f.event_id);
        let carrier = carrier(run, f);
        // A file not itself for the bot (in a group, without a mention)
        // is owed to the agent once a text for the bot takes it: its
        // sender's next one there, within the wait.
        let taken = carrier.is_some_and(|c| at(&c.event_id) <= f.at + wait);
        if !f.for_bot && !taken {
            continue;
        }
        let withdrawn = |id: &str| {
            run.facts.excused.contains(id)
                || run
                    .facts
                    .user_messages
                    .iter()
                    .any(|m| m.event_id == id && m.redacted)
        };
        // Collected with others (queue mode `collect`), the text is one
        // question with them: the answer replies to the last, and deleting
        // that one withdraws them all.
        let group: Vec<&str> = match carrier {
            None => Vec::new(),
            Some(c) => {
                let texts: Vec<&str> = std::iter::once(&c.body)
                    .chain(&c.edits)
                    .map(|t| t.trim())
                    .collect();
                let last = run
                    .facts
                    .submits
                    .iter()
                    .rev()
                    .find(|s| texts.iter().any(|t| super::answers::part_of(&s.text, t)));
                let mut ids: Vec<&str> = match last {
                    Some(s) => run
                        .facts
                        .user_messages
                        .iter()
                        .filter(|m| m.room_id == c.room_id && m.addressed)
                        .filter(|m| {
                            std::iter::once(&m.body)
                                .chain(&m.edits)
                                .any(|t| super::answers::part_of(&s.text, t.trim()))
                        })
                        .map(|m| m.event_id.as_str())
                        .collect(),
                    None => Vec::new(),
                };
                ids.push(c.event_id.as_str());
                ids
            }
        };
        if withdrawn(&f.event_id) || group.iter().any(|id| withdrawn(id)) {
            continue;
        }
        let reached = run
            .facts
            .files_to_agent
            .iter()
            .any(|(name, bytes)| names(name, &f.name) && *bytes == f.bytes);
        // Asked about: the text it went with, or (alone) the files its
        // sender sent there together (the answer replies to the first).
        let questions: Vec<&str> = match carrier {
            Some(_) => group,
            None => run
                .facts
                .files_sent
                .iter()
                .filter(|g| g.sender == f.sender && g.room_id == f.room_id)
                .filter(|g| thread_of(run, &g.event_id) == thread)
                .map(|g| g.event_id.as_str())
                .collect(),
        };
        let refused = run.homeserver.rendered(bot).iter().any(|(id, content)| {
            let body = content.get("body").and_then(Value::as_str).unwrap_or("");
            let Some(e) = run.homeserver.event(id) else {
                return false;
            };
            let named = e.room_id == f.room_id
                && names(body, &f.name)
                && (body.contains("too large") || body.contains("did not reach the agent"));
            let not_asked = NOT_ASKED.iter().any(|m| body.contains(m))
                && super::answers::replied_to(e).is_some_and(|q| questions.contains(&q));
            named || not_asked
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

/// A file its sender deleted before sending the text that would take it
/// (their next text for the bot in the same place) never goes to the
/// agent with it: they took it back. (Its bytes could not be fetched any
/// more; the guest must not try, and tell them it failed.)
pub fn deleted_files_stay(run: &Run) -> Vec<String> {
    let mut v = Vec::new();
    for f in &run.facts.files_sent {
        let Some(redaction) = &f.redacted_by else {
            continue;
        };
        let Some(carrier) = carrier(run, f) else {
            continue;
        };
        let id = surfaces_embed::media::MediaRef::Event {
            room_id: f.room_id.clone(),
            event_id: f.event_id.clone(),
        }
        .id();
        let sent = run.facts.submits.iter().any(|s| s.files.contains(&id));
        if order(run, redaction) < order(run, &carrier.event_id) && sent {
            v.push(format!(
                "{} ({:?} from {}) was deleted before {} was sent, yet went to the agent with it",
                f.event_id, f.name, f.sender, carrier.event_id
            ));
        }
    }
    v
}

/// Where `id` is in the timeline: events of one millisecond are ordered
/// by it.
fn order(run: &Run, id: &str) -> Option<usize> {
    run.homeserver.events.iter().position(|e| e.event_id == id)
}

/// The thread a person's message (or file) was sent in.
fn thread_of(run: &Run, id: &str) -> Option<String> {
    run.facts
        .user_messages
        .iter()
        .find(|m| m.event_id == id)
        .and_then(|m| m.thread.clone())
}

/// The text that takes file `f` to the agent: its sender's next message
/// for the bot in the same room and thread.
fn carrier<'a>(run: &'a Run, f: &FileSent) -> Option<&'a UserMessage> {
    let thread = thread_of(run, &f.event_id);
    run.facts.user_messages.iter().find(|m| {
        m.sender == f.sender
            && m.room_id == f.room_id
            && m.thread == thread
            && m.addressed
            && !m.command
            && order(run, &m.event_id) > order(run, &f.event_id)
    })
}

/// Whether `text` names the file sent as `name`: as it is, or as the guest
/// renamed it beside others of the same name in one message ("image.png",
/// "image (2).png").
fn names(text: &str, name: &str) -> bool {
    if text.contains(name) {
        return true;
    }
    let (stem, ext) = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => (stem, format!(".{ext}")),
        _ => (name, String::new()),
    };
    (2..=50).any(|k| text.contains(&format!("{stem} ({k}){ext}")))
}

/// Every file the agent sent with a reply that ended is in the reply's
/// room, sent by the bot, its bytes whole, or (refused for good by the
/// homeserver) a notice there names it (unless the bot left the room:
/// nothing more goes there).
pub fn agent_files_delivered(run: &Run) -> Vec<String> {
    let bot = &run.bot_user_id;
    let rendered = run.homeserver.rendered(bot);
    let mut v = Vec::new();
    for f in &run.facts.agent_files {
        let left = f.room_id.as_ref().is_some_and(|r| {
            !run.homeserver
                .rooms
                .get(r)
                .is_some_and(|room| room.members.contains(bot))
        });
        if run.facts.outcomes.get(&f.request) != Some(&Outcome::Ended) || left {
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
        // The homeserver refused it for good (too large): its place in the
        // room says so, in words.
        let told = rendered.iter().any(|(id, content)| {
            let body = content.get("body").and_then(Value::as_str).unwrap_or("");
            run.homeserver
                .event(id)
                .is_some_and(|e| Some(&e.room_id) == f.room_id.as_ref())
                && body.contains(&f.name)
                && body.contains("could not be sent")
        });
        if !found && !told {
            v.push(format!(
                "the agent's file {:?} for request #{} never reached the room, and nobody was \
                 told",
                f.name, f.request
            ));
        }
    }
    v
}
