//! The rules every run must keep, checked on its outcome (the
//! transcript's facts, the homeserver's state and the guest's store). A
//! rule says what it found broken with its witness: the event ids and
//! texts involved.
//!
//! - this file: the registry, and the rules about Matrix itself (sizes,
//!   edits, retry_after, leaving, safe links);
//! - [`pace`]: how often a message is updated, and its final text at once;
//! - [`answers`]: every message answered, once, in place and in order;
//! - [`controls`]: edits ask again, withdrawals hold;
//! - [`quota`]: a token quota is passed by one reply at most;
//! - [`store`]: what the guest's store holds once the world is quiet;
//! - [`witness`]: the transcript steps behind a broken rule.

mod answers;
mod controls;
mod files;
mod pace;
mod quota;
mod store;
mod witness;

pub use answers::{answered, final_texts, in_order, in_place, one_greeting, true_positions};
pub use controls::{reasked, withdrawn_stays_out};
pub use files::{agent_files_delivered, deleted_files_stay, files_reach_the_agent};
pub use pace::{final_at_once, throttle};
pub use quota::quota_kept;
pub use store::{no_leftovers, nothing_waits, tokens_counted};
pub use witness::witness;

use std::collections::BTreeMap;

use crate::world::Run;

/// A rule: its name, and what of it a run broke (empty when it holds).
pub type Rule = (&'static str, fn(&Run) -> Vec<String>);

/// Every rule, by name.
pub const RULES: &[Rule] = &[
    ("settles without guest failures", settles),
    ("no edit names an edit", no_edit_of_edit),
    ("no event exceeds the size limit", size_limit),
    ("at most one update per interval per message", throttle),
    ("a final text goes as soon as the agent ends", final_at_once),
    ("no message is edited past its budget", edit_budget),
    ("every addressed message is answered", answered),
    ("no message is left queued or in flight", nothing_waits),
    ("final text is the chunks joined", final_texts),
    ("nothing transient is left in the store", no_leftovers),
    ("answers in the thread of their message", in_place),
    ("answers in each context in the order asked", in_order),
    ("one greeting per person", one_greeting),
    ("queue positions are true", true_positions),
    ("every reply's tokens are counted", tokens_counted),
    (
        "nothing is sent into a room the bot left",
        nothing_after_leaving,
    ),
    ("no send before the homeserver's retry_after", retry_after),
    ("every link the bot renders is safe", safe_links),
    (
        "an edited question is answered for its newest text",
        reasked,
    ),
    (
        "a withdrawn question never goes to the agent",
        withdrawn_stays_out,
    ),
    (
        "a quota is never overrun by more than one reply",
        quota_kept,
    ),
    (
        "every file for the bot reaches the agent or is refused in words",
        files_reach_the_agent,
    ),
    (
        "every file the agent sent reaches the room",
        agent_files_delivered,
    ),
    (
        "a file deleted before its text never reaches the agent",
        deleted_files_stay,
    ),
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

/// No message gets more than `max_edits_per_message` edits, besides edits
/// whose answer the guest never saw as a success (lost on the way back, or
/// with a host that was killed): it cannot know those landed, and its final
/// text must still arrive.
pub fn edit_budget(run: &Run) -> Vec<String> {
    let max = u64::from(run.facts.max_edits);
    let mut per_message: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for a in run.facts.arrivals.iter().filter(|a| a.landed) {
        if let Some(original) = a.flow.strip_prefix("edits of ") {
            let (edits, unknown) = per_message.entry(original).or_default();
            *edits += 1;
            if a.lost || !a.received {
                *unknown += 1;
            }
        }
    }
    per_message
        .into_iter()
        .filter(|(_, (edits, unknown))| edits.saturating_sub(*unknown) > max)
        .map(|(event, (edits, unknown))| {
            format!("{event} was edited {edits} times ({unknown} unknown to the bot), over its budget of {max}")
        })
        .collect()
}

/// The longest `retry_after_ms` the bot waits out (a homeserver asking for
/// more is asked again then): guest/src/bot/pump.rs `MAX_RETRY_AFTER_MS`.
const TRUSTED_RETRY_AFTER_MS: u64 = 10 * 60 * 1000;

/// After a 429 reached the guest, nothing more of the same flow (the same
/// message's edits, or the same new message tried again) reaches the
/// homeserver before the `retry_after_ms` it named has passed, restarts
/// and swaps between or not: the bot waits as it was asked to.
pub fn retry_after(run: &Run) -> Vec<String> {
    let mut held: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut v = Vec::new();
    for a in &run.facts.arrivals {
        if let Some(&(until, by)) = held.get(a.flow.as_str())
            && a.at < until
        {
            v.push(format!(
                "#{} ({}) reached the homeserver {} ms before the retry_after of #{by}'s 429",
                a.request,
                a.flow,
                until - a.at
            ));
        }
        if let (Some(ms), true) = (a.retry_after_ms, a.received) {
            held.insert(&a.flow, (a.at + ms.min(TRUSTED_RETRY_AFTER_MS), a.request));
        }
    }
    v
}

/// URL schemes a Matrix client may follow from a bot's HTML: the spec's
/// list for links (http, https, ftp, mailto, magnet), `matrix:` URIs and
/// `mxc:` media.
const SAFE_SCHEMES: [&str; 7] = ["http", "https", "ftp", "mailto", "magnet", "matrix", "mxc"];

/// No `href` or `src` in any HTML the bot sent (every edit counts: clients
/// show each) uses another scheme (`javascript:`, `data:`, ...): an agent's
/// text is not trusted.
pub fn safe_links(run: &Run) -> Vec<String> {
    let mut v = Vec::new();
    for e in &run.homeserver.events {
        if e.sender != run.bot_user_id {
            continue;
        }
        let bodies = [
            e.content.get("formatted_body"),
            e.content.pointer("/m.new_content/formatted_body"),
        ];
        for html in bodies.into_iter().flatten().filter_map(|b| b.as_str()) {
            for url in attribute_urls(html) {
                if !url_is_safe(url) {
                    v.push(format!("{} links to {url:?}", e.event_id));
                }
            }
        }
    }
    v
}

/// The values of `href="…"` and `src="…"` attributes in HTML.
fn attribute_urls(html: &str) -> impl Iterator<Item = &str> {
    ["href=\"", "src=\""].into_iter().flat_map(move |attr| {
        html.match_indices(attr).filter_map(move |(i, _)| {
            let rest = &html[i + attr.len()..];
            rest.find('"').map(|end| &rest[..end])
        })
    })
}

/// A URL with no scheme is relative; one with a scheme must use a safe one
/// (browsers ignore whitespace, control characters and entities inside a
/// scheme: so does this check, by reading up to the first `:`).
fn url_is_safe(url: &str) -> bool {
    let cleaned: String = url
        .chars()
        .filter(|c| !c.is_ascii_whitespace() && !c.is_control())
        .collect::<String>()
        .to_ascii_lowercase();
    match cleaned.find([':', '/', '?', '#']) {
        Some(i) if cleaned.as_bytes()[i] == b':' => {
            // `&#58;` and friends decode to a colon in a browser.
            let scheme = &cleaned[..i];
            SAFE_SCHEMES.contains(&scheme)
        }
        _ => !cleaned.contains("&#"),
    }
}

/// The bot sends nothing into a room once it has decided to leave it.
pub fn nothing_after_leaving(run: &Run) -> Vec<String> {
    run.facts
        .sent_after_leaving
        .iter()
        .map(|x| format!("issued after leaving: {x}"))
        .collect()
}
