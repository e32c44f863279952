//! Rules about answers: every addressed message ends in one, in the
//! thread it was asked in, each context's answers in the order asked, and
//! its text is the agent's.

use std::collections::BTreeMap;

use crate::world::{Outcome, Run};

/// Bot messages replying to each user event: (notice bodies, texts), in
/// order.
pub(super) fn replies_by_target(
    run: &Run,
) -> BTreeMap<String, (Vec<String>, Vec<serde_json::Value>)> {
    let mut out: BTreeMap<String, (Vec<String>, Vec<serde_json::Value>)> = BTreeMap::new();
    for (id, content) in run.homeserver.rendered(&run.bot_user_id) {
        let Some(target) = reply_target(run, &id) else {
            continue;
        };
        // A file the agent sent is no text of the answer.
        if content.get("url").is_some() {
            continue;
        }
        let entry = out.entry(target).or_default();
        if content.get("msgtype").and_then(|m| m.as_str()) == Some("m.notice") {
            let body = content.get("body").and_then(|b| b.as_str()).unwrap_or("");
            entry.0.push(body.to_string());
        } else {
            entry.1.push(content);
        }
    }
    out
}

/// The event a bot message (by its original's id) replies to.
fn reply_target(run: &Run, id: &str) -> Option<String> {
    replied_to(run.homeserver.event(id)?).map(str::to_string)
}

/// The event a message replies to (`m.in_reply_to`).
pub(super) fn replied_to(e: &crate::homeserver::HsEvent) -> Option<&str> {
    e.content
        .pointer("/m.relates_to/m.in_reply_to/event_id")
        .and_then(|t| t.as_str())
}

/// Every message addressed to the bot ends in a reply or a clear error:
/// never nothing. A queue position (a notice starting with ⏳) is a
/// promise, not an answer: it must be followed by one; nor is a greeting.
/// And no message stays live. Excused: the messages the bot still held
/// when it left their room, everyone else gone (`Facts::excused`).
pub fn answered(run: &Run) -> Vec<String> {
    let replies = replies_by_target(run);
    let mut v = Vec::new();
    for m in &run.facts.user_messages {
        // A message its sender deleted asks for nothing more.
        if !m.addressed || m.redacted || run.facts.excused.contains(&m.event_id) {
            continue;
        }
        match replies.get(&m.event_id) {
            None => v.push(format!("{} ({:?}) got no answer", m.event_id, m.body)),
            Some((notices, texts)) => {
                let not_answer = |b: &String| NOT_ANSWERS.iter().any(|p| b.starts_with(p));
                if texts.is_empty() && notices.iter().all(not_answer) && !collected(run, m) {
                    v.push(format!(
                        "{} ({:?}) was only promised an answer (queued), never given one",
                        m.event_id, m.body
                    ));
                }
            }
        }
    }
    for (id, content) in run.homeserver.rendered(&run.bot_user_id) {
        let excused = reply_target(run, &id).is_some_and(|t| run.facts.excused.contains(&t));
        if content.get("org.matrix.msc4357.live").is_some() && !excused {
            v.push(format!("{id} is still marked live at the end"));
        }
    }
    v
}

/// Whether the message went to the agent as part of one collected with
/// others (queue mode `collect`), in a request that ended: its answer
/// replies to the last of them. The last request that carried it counts
/// (one refused as busy goes again, maybe with more collected), and must
/// carry it as it was written.
pub(super) fn collected(run: &Run, m: &crate::world::UserMessage) -> bool {
    std::iter::once(&m.body).chain(&m.edits).any(|text| {
        let text = text.trim();
        let core = text.split_once(": ").map_or(text, |(_, t)| t);
        run.facts
            .submits
            .iter()
            .rev()
            .find(|s| s.text.contains("\n\n") && s.text.contains(core))
            .is_some_and(|s| part_of(&s.text, text) && run.facts.outcomes.contains_key(&s.request))
    })
}

/// `text` (a message's body: the bot's name may lead it) is one of the
/// messages collected into `submitted` (each there as addressed, under
/// its sender's name when several wrote).
pub(super) fn part_of(submitted: &str, text: &str) -> bool {
    let parts: Vec<&str> = submitted.split("\n\n").collect();
    parts.len() > 1
        && parts.iter().any(|p| {
            let bare = p.split_once(": ").map_or(*p, |(_, t)| t);
            [*p, bare]
                .iter()
                .any(|p| !p.is_empty() && text.ends_with(p))
        })
}

/// How the guest starts notices that are not answers: a queue position or
/// a retry (a promise of an answer later), the greeting of a new user, and
/// a file refused while its text goes on (the text's answer follows).
const NOT_ANSWERS: [&str; 3] = ["⏳", "👋", "📎"];

/// The final text of every reply is the agent's chunks joined (plus a note
/// when the reply was cut short), but for a message the bot dropped when
/// it left the room (`Facts::excused`).
pub fn final_texts(run: &Run) -> Vec<String> {
    let replies = replies_by_target(run);
    let mut v = Vec::new();
    for m in &run.facts.user_messages {
        // An edited question has more than one answer (`controls::reasked`).
        if run.facts.excused.contains(&m.event_id) || !m.edits.is_empty() {
            continue;
        }
        // Only messages whose text identifies one submit unambiguously.
        let same_text = run
            .facts
            .user_messages
            .iter()
            .filter(|o| o.body.trim() == m.body.trim())
            .count();
        if same_text != 1 {
            continue;
        }
        let Some(submit) = run
            .facts
            .submits
            .iter()
            .rev()
            .find(|s| m.body.contains(s.text.as_str()) && !s.text.is_empty())
        else {
            continue;
        };
        // The submit's text must name this message alone.
        let named = |o: &&crate::world::UserMessage| o.body.contains(submit.text.as_str());
        if run.facts.user_messages.iter().filter(named).count() != 1 {
            continue;
        }
        let chunks = run
            .facts
            .chunks
            .get(&submit.request)
            .cloned()
            .unwrap_or_default();
        let joined: String = chunks.concat();
        let shown: String = replies
            .get(&m.event_id)
            .map(|(_, texts)| {
                texts
                    .iter()
                    .filter_map(|c| c.get("body").and_then(|b| b.as_str()))
                    .collect::<Vec<_>>()
                    .concat()
            })
            .unwrap_or_default();
        match run.facts.outcomes.get(&submit.request) {
            Some(Outcome::Ended) if joined.is_empty() => {}
            Some(Outcome::Ended) => {
                if shown != joined && !shown.starts_with(&joined) {
                    v.push(format!(
                        "reply to {} is {:?}, the agent sent {:?}",
                        m.event_id,
                        crate::world::quote(&shown),
                        crate::world::quote(&joined)
                    ));
                } else if shown != joined && !shown[joined.len()..].contains("Stopped") {
                    v.push(format!(
                        "reply to {} has extra text {:?}",
                        m.event_id,
                        crate::world::quote(&shown[joined.len()..])
                    ));
                }
            }
            Some(Outcome::Failed(_)) => {
                if !shown.is_empty() && !shown.starts_with(&joined) {
                    v.push(format!(
                        "cut reply to {} is {:?}, the agent sent {:?}",
                        m.event_id,
                        crate::world::quote(&shown),
                        crate::world::quote(&joined)
                    ));
                }
            }
            None => v.push(format!("agent request #{} never ended", submit.request)),
        }
    }
    v
}

/// The bot's original messages (not edits) replying to a user message,
/// in timeline order: (its position in the stream, the message's id, its
/// content as sent first, its content as shown now).
fn bot_replies(run: &Run) -> Vec<(usize, String, serde_json::Value)> {
    let shown: BTreeMap<String, serde_json::Value> = run
        .homeserver
        .rendered(&run.bot_user_id)
        .into_iter()
        .collect();
    run.homeserver
        .events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.sender == run.bot_user_id && e.member.is_none() && e.replaces.is_none())
        .filter_map(|(i, e)| {
            let target = e
                .content
                .pointer("/m.relates_to/m.in_reply_to/event_id")?
                .as_str()?
                .to_string();
            let now = shown.get(&e.event_id)?.clone();
            Some((i, target, now))
        })
        .collect()
}

/// An answer to a message in a thread stays in that thread; an answer to
/// a message outside threads is in no thread but, at most, its own.
pub fn in_place(run: &Run) -> Vec<String> {
    let threads: BTreeMap<&str, Option<&str>> = run
        .facts
        .user_messages
        .iter()
        .map(|m| (m.event_id.as_str(), m.thread.as_deref()))
        .collect();
    let mut v = Vec::new();
    for e in &run.homeserver.events {
        if e.sender != run.bot_user_id || e.member.is_some() || e.replaces.is_some() {
            continue;
        }
        let Some(target) = replied_to(e) else {
            continue;
        };
        let Some(asked_in) = threads.get(target) else {
            continue;
        };
        let rel = e.content.get("m.relates_to");
        let answered_in = rel
            .filter(|r| r.get("rel_type").and_then(|t| t.as_str()) == Some("m.thread"))
            .and_then(|r| r.get("event_id"))
            .and_then(|t| t.as_str());
        let fine = match asked_in {
            Some(root) => answered_in == Some(*root),
            None => answered_in.is_none_or(|root| root == target),
        };
        if !fine {
            v.push(format!(
                "{} answers {target} (asked in thread {asked_in:?}) in thread {answered_in:?}",
                e.event_id
            ));
        }
    }
    v
}

/// In each context, a room's messages go to the agent in the order they
/// were asked (a message sent back to its queue keeps its place). Across
/// rooms there is no order to keep: a sync batch carries rooms as a map.
/// Only messages whose text names one submit are checked.
pub fn in_order(run: &Run) -> Vec<String> {
    let mut last: BTreeMap<(&str, &str), (usize, &str)> = BTreeMap::new();
    let mut v = Vec::new();
    for m in &run.facts.user_messages {
        if !m.addressed || m.command {
            continue;
        }
        let mut submits = run
            .facts
            .submits
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.text.is_empty() && m.body.contains(s.text.as_str()));
        let Some((first, submit)) = submits.next() else {
            continue;
        };
        let same_text = |o: &&crate::world::UserMessage| o.body.contains(submit.text.as_str());
        if run.facts.user_messages.iter().filter(same_text).count() != 1 {
            continue;
        }
        let key = (submit.context_id.as_str(), m.room_id.as_str());
        if let Some((before, id)) = last.get(&key)
            && *before > first
        {
            v.push(format!(
                "{} went to the agent before {id}, asked earlier in context {}",
                m.event_id, submit.context_id
            ));
        }
        let entry = last.entry(key).or_insert((first, &m.event_id));
        if first > entry.0 {
            *entry = (first, &m.event_id);
        }
    }
    v
}

/// A person is greeted once, on first contact, however the world goes
/// (restarts, replays, swaps).
pub fn one_greeting(run: &Run) -> Vec<String> {
    let sender_of: BTreeMap<&str, &str> = run
        .facts
        .user_messages
        .iter()
        .map(|m| (m.event_id.as_str(), m.sender.as_str()))
        .collect();
    let mut greeted: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (_, target, content) in bot_replies(run) {
        let body = content.get("body").and_then(|b| b.as_str()).unwrap_or("");
        if body.starts_with("👋")
            && let Some(sender) = sender_of.get(target.as_str())
        {
            greeted.entry(sender).or_default().push(target.clone());
        }
    }
    greeted
        .into_iter()
        .filter(|(_, targets)| targets.len() > 1)
        .map(|(who, targets)| format!("{who} was greeted {} times: {targets:?}", targets.len()))
        .collect()
}

/// A queue notice tells the message's true place in its queue.
pub fn true_positions(run: &Run) -> Vec<String> {
    run.facts.false_positions.clone()
}
