//! Rules about what people do to their questions after asking: an edit
//! asks again (with `on_edit = reask`), a withdrawal holds.

use crate::world::{Outcome, Run};

use super::answers::{part_of, replied_to, replies_by_target};

/// A question edited after it was asked is answered for its newest text:
/// the agent is given that text (in place of the old one while it waited,
/// or again once it had been answered), and that request ends. Excused:
/// questions withdrawn or deleted, and any the bot refused outright (a
/// full queue, a spent quota) or never took (its edit came before it
/// could be read), and every question of a guest that never asks the
/// agent anything.
pub fn reasked(run: &Run) -> Vec<String> {
    // A guest that gives nothing to the agent (an echo, a notes bot) has
    // no question to ask again.
    if !run.facts.reask || run.facts.submits.is_empty() {
        return Vec::new();
    }
    let replies = replies_by_target(run);
    let mut v = Vec::new();
    for m in &run.facts.user_messages {
        let Some(newest) = m.edits.last() else {
            continue;
        };
        if !m.addressed || m.command || m.redacted || run.facts.excused.contains(&m.event_id) {
            continue;
        }
        let notices = replies
            .get(&m.event_id)
            .map(|(n, _)| n.as_slice())
            .unwrap_or(&[]);
        if notices.iter().any(|n| {
            n.starts_with("🗑️") || n.starts_with("🚫") || n.contains("messages are already waiting")
        }) {
            continue;
        }
        let Some(submit) = run.facts.submits.iter().rev().find(|s| {
            !s.text.is_empty()
                && ((newest.contains(s.text.as_str()) && !m.body.contains(s.text.as_str()))
                    || part_of(&s.text, newest.trim()))
        }) else {
            v.push(format!(
                "{} was edited into {:?}, which never went to the agent",
                m.event_id,
                crate::world::quote(newest)
            ));
            continue;
        };
        if !run.facts.outcomes.contains_key(&submit.request) {
            v.push(format!(
                "agent request #{} for the edit of {} never ended",
                submit.request, m.event_id
            ));
        }
        // A collected answer replies to the last message collected: the
        // `answered` rule follows it there.
        let collected = part_of(&submit.text, newest.trim());
        if !collected
            && matches!(
                run.facts.outcomes.get(&submit.request),
                Some(Outcome::Ended)
            )
        {
            let joined: String = run
                .facts
                .chunks
                .get(&submit.request)
                .map(|c| c.concat())
                .unwrap_or_default();
            let texts: Vec<&str> = replies
                .get(&m.event_id)
                .map(|(_, t)| t.as_slice())
                .unwrap_or(&[])
                .iter()
                .filter_map(|c| c.get("body").and_then(|b| b.as_str()))
                .map(without_note)
                .collect();
            if !joined.is_empty() && !made_of(&joined, &texts) {
                v.push(format!(
                    "the answer to the edit of {} ({}) is not shown; its replies: {:?}",
                    m.event_id,
                    crate::world::quote(&joined),
                    texts
                        .iter()
                        .map(|t| crate::world::quote(t))
                        .collect::<Vec<_>>()
                ));
            }
        }
    }
    v
}

/// Once the bot has said a question is withdrawn, the agent never gets it.
pub fn withdrawn_stays_out(run: &Run) -> Vec<String> {
    let mut v = Vec::new();
    for e in &run.homeserver.events {
        if e.sender != run.bot_user_id || e.replaces.is_some() {
            continue;
        }
        let body = e.content.get("body").and_then(|b| b.as_str()).unwrap_or("");
        if !body.starts_with("🗑️") {
            continue;
        }
        let Some(target) = replied_to(e) else {
            continue;
        };
        let Some(m) = run
            .facts
            .user_messages
            .iter()
            .find(|m| m.event_id == target)
        else {
            continue;
        };
        let texts: Vec<&str> = std::iter::once(m.body.as_str())
            .chain(m.edits.iter().map(String::as_str))
            .collect();
        // Only texts that name this question alone.
        let own = |t: &str| {
            run.facts
                .user_messages
                .iter()
                .filter(|o| o.body.contains(t) || o.edits.iter().any(|x| x.contains(t)))
                .count()
                == 1
        };
        for s in &run.facts.submits {
            if s.at_ms > e.ts
                && !s.text.is_empty()
                && texts.iter().any(|t| t.contains(s.text.as_str()))
                && own(&s.text)
            {
                v.push(format!(
                    "{target} was withdrawn, yet went to the agent after (request #{})",
                    s.request
                ));
            }
        }
    }
    v
}

/// A reply's text without the note a cut reply ends with.
fn without_note(body: &str) -> &str {
    ["\n\n⏹️", "\n\n⏭️", "\n\n✏️", "\n\n⚠️"]
        .iter()
        .filter_map(|n| body.find(n))
        .min()
        .map_or(body, |at| &body[..at])
}

/// Whether `text` is some of `parts`, in order, joined: the messages of
/// one answer among those of the others to the same question.
fn made_of(text: &str, parts: &[&str]) -> bool {
    if text.is_empty() {
        return true;
    }
    if parts.len() > 24 {
        return parts.concat().contains(text); // too many to try each way
    }
    parts.iter().enumerate().any(|(i, p)| {
        !p.is_empty() && text.starts_with(p) && made_of(&text[p.len()..], &parts[i + 1..])
    })
}
