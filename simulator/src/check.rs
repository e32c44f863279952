//! The rules every run must keep, checked on its outcome.

use std::collections::BTreeMap;

use crate::world::{Outcome, Run};

/// A rule: its name, and what of it a run broke (empty when it holds).
pub type Rule = (&'static str, fn(&Run) -> Vec<String>);

/// Every rule, by name.
pub const RULES: &[Rule] = &[
    ("settles without guest failures", settles),
    ("no edit names an edit", no_edit_of_edit),
    ("no event exceeds the size limit", size_limit),
    ("at most one update per interval per message", throttle),
    ("every addressed message is answered", answered),
    ("no message is left queued or in flight", nothing_waits),
    ("final text is the chunks joined", final_texts),
    ("nothing transient is left in the store", no_leftovers),
];

/// Every rule a run broke, in words (empty when all hold).
pub fn violations(run: &Run) -> Vec<String> {
    RULES.iter().flat_map(|(_, rule)| rule(run)).collect()
}

/// The run went quiet (nothing left pending) and the guest never failed.
pub fn settles(run: &Run) -> Vec<String> {
    let mut v = Vec::new();
    if !run.settled {
        v.push("the world did not settle (a message may never be answered)".to_string());
    }
    for f in &run.facts.guest_failures {
        v.push(format!("guest failure: {f}"));
    }
    v
}

pub fn no_edit_of_edit(run: &Run) -> Vec<String> {
    run.homeserver
        .violations
        .iter()
        .map(|x| format!("homeserver: {x}"))
        .collect()
}

pub fn size_limit(run: &Run) -> Vec<String> {
    let mut v = Vec::new();
    if run.homeserver.rejected_too_large > 0 {
        v.push(format!(
            "{} events exceeded the size limit (413)",
            run.homeserver.rejected_too_large
        ));
    }
    let too_big: Vec<&str> = run
        .homeserver
        .events
        .iter()
        .filter(|e| {
            serde_json::to_vec(&e.content)
                .map_or(true, |b| b.len() > run.homeserver.max_event_bytes)
        })
        .map(|e| e.event_id.as_str())
        .collect();
    if !too_big.is_empty() {
        v.push(format!("events over the size limit: {too_big:?}"));
    }
    v
}

/// No message is updated (sent, then edited) more than once per interval.
pub fn throttle(run: &Run) -> Vec<String> {
    let interval = run.facts.edit_interval_ms;
    let mut v = Vec::new();
    for (event, times) in &run.facts.updates {
        let mut times = times.clone();
        times.sort_unstable();
        for pair in times.windows(2) {
            if pair[1] < pair[0] + interval {
                v.push(format!(
                    "{event} updated twice within {}ms (< {interval}ms)",
                    pair[1] - pair[0]
                ));
            }
        }
    }
    v
}

/// Bot messages replying to each user event: (notice bodies, texts), in
/// order.
fn replies_by_target(run: &Run) -> BTreeMap<String, (Vec<String>, Vec<serde_json::Value>)> {
    let mut out: BTreeMap<String, (Vec<String>, Vec<serde_json::Value>)> = BTreeMap::new();
    for (id, content) in run.homeserver.rendered(&run.bot_user_id) {
        let original = run.homeserver.event(&id).map(|e| e.content.clone());
        let Some(target) = original.as_ref().and_then(|c| {
            c.pointer("/m.relates_to/m.in_reply_to/event_id")
                .and_then(|t| t.as_str())
                .map(str::to_string)
        }) else {
            continue;
        };
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

/// Every message addressed to the bot ends in a reply or a clear error:
/// never nothing. A queue position (a notice starting with ⏳) is a
/// promise, not an answer: it must be followed by one; nor is a greeting.
/// And no message stays live.
pub fn answered(run: &Run) -> Vec<String> {
    let replies = replies_by_target(run);
    let mut v = Vec::new();
    for m in &run.facts.user_messages {
        if !m.addressed {
            continue;
        }
        match replies.get(&m.event_id) {
            None => v.push(format!("{} ({:?}) got no answer", m.event_id, m.body)),
            Some((notices, texts)) => {
                let not_answer = |b: &String| NOT_ANSWERS.iter().any(|p| b.starts_with(p));
                if texts.is_empty() && notices.iter().all(not_answer) {
                    v.push(format!(
                        "{} ({:?}) was only promised an answer (queued), never given one",
                        m.event_id, m.body
                    ));
                }
            }
        }
    }
    for (id, content) in run.homeserver.rendered(&run.bot_user_id) {
        if content.get("org.matrix.msc4357.live").is_some() {
            v.push(format!("{id} is still marked live at the end"));
        }
    }
    v
}

/// How the guest starts notices that are not answers: a queue position or
/// a retry (a promise of an answer later) and the greeting of a new user.
const NOT_ANSWERS: [&str; 2] = ["⏳", "👋"];

/// Once the world is quiet, no context holds a queued message or a request
/// in flight: read from the guest's store, not the transcript (a message
/// stranded in a queue leaves no trace in the room).
pub fn nothing_waits(run: &Run) -> Vec<String> {
    if !run.settled {
        return Vec::new(); // reported by `settles`
    }
    let mut v = Vec::new();
    for (key, bytes) in run.store.range("ctx/".to_string()..) {
        if !key.starts_with("ctx/") {
            break;
        }
        let Ok(ctx) = serde_json::from_slice::<serde_json::Value>(bytes) else {
            v.push(format!("{key} does not decode"));
            continue;
        };
        let queued = ctx
            .get("queue")
            .and_then(|q| q.as_array())
            .map_or(0, Vec::len);
        if queued > 0 {
            v.push(format!("{key} still has {queued} message(s) queued"));
        }
        if ctx.get("in_flight").is_some_and(|r| !r.is_null()) {
            v.push(format!("{key} still has a request in flight"));
        }
    }
    v
}

/// The final text of every reply is the agent's chunks joined (plus a note
/// when the reply was cut short).
pub fn final_texts(run: &Run) -> Vec<String> {
    let replies = replies_by_target(run);
    let mut v = Vec::new();
    for m in &run.facts.user_messages {
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

/// Once the world is quiet, the guest's store holds only lasting records:
/// users, contexts and its id counter (see guest/src/state.rs). Anything
/// else (a reply, a chunk, a pending notice, a timer, a route) leaked.
pub fn no_leftovers(run: &Run) -> Vec<String> {
    if !run.settled {
        return Vec::new(); // reported by `settles`
    }
    // `seen/`: ids of handled messages, kept (days) so a replay is ignored.
    // `ctxat/`: thread contexts by activity; `wait/`: contexts recovery
    // visits (whether one still waits is `nothing_waits`' to say).
    let lasting = [
        "user/", "ctx/", "ctxat/", "wait/", "meta/", "seen/", "seenat/", "utd/",
    ];
    run.store
        .keys()
        .filter(|k| !lasting.iter().any(|p| k.starts_with(p)))
        .map(|k| format!("store still holds {k}"))
        .collect()
}
