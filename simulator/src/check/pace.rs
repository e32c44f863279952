//! Pace: a message is updated at most once per interval while it streams,
//! and its final text goes as soon as the agent ends, however much of the
//! homeserver's rate budget the stream spent.

use crate::world::Run;

/// How long after the agent's end (or after the answer to an update that
/// was in flight then) a final text may take to go out.
const FINAL_WITHIN_MS: u64 = 500;

/// Faults, restarts and swaps this close before a reply's end excuse its
/// final text for being late (and any time up to it).
const DISRUPTION_REACH_MS: u64 = 60_000;

/// No message is updated more than once per interval while it streams
/// (its final text may follow at once).
pub fn throttle(run: &Run) -> Vec<String> {
    let interval = run.facts.edit_interval_ms;
    let mut v = Vec::new();
    for (event, times) in &run.facts.updates {
        let mut times = times.clone();
        times.sort_unstable();
        for pair in times.windows(2) {
            let ((first, _), (then, live)) = (pair[0], pair[1]);
            if live && then < first + interval {
                v.push(format!(
                    "{event} updated twice within {}ms (< {interval}ms)",
                    then - first
                ));
            }
        }
    }
    v
}

/// A reply's final text (one message's update: not a text that still
/// needs new parts after the end) goes out within [`FINAL_WITHIN_MS`] of
/// the agent's end: the stream's edits left room in the homeserver's rate
/// budget for it (Synapse's bucket), and no edit interval holds it. The
/// clock starts when the agent ended, or when the answer to an update in
/// flight then came back (one request at a time per reply). Excused: a
/// reply near a refusal by the homeserver (a 429 teaches the bot the
/// limit it guessed, unless its settings named the limit; an outage or a
/// lost answer is waited out), a fault, a restart or a swap, and worlds
/// whose clock jumps.
pub fn final_at_once(run: &Run) -> Vec<String> {
    let facts = &run.facts;
    if facts.clock_jumps {
        return Vec::new();
    }
    let mut v = Vec::new();
    for (request, &end) in &facts.ends {
        let Some(updates) = facts.reply_updates.get(request) else {
            continue; // never shown (given up, or cut before it began)
        };
        let Some(last) = updates.iter().find(|u| !u.live && u.at >= end) else {
            continue; // finished before the end, or never (other rules)
        };
        // A text longer than one event goes as several after the end:
        // its parts take what the budget allows (and leave other replies'
        // final texts theirs).
        let first_send = updates.iter().find(|u| u.send).map(|u| u.request);
        let streamed: usize = facts
            .chunks
            .get(request)
            .map_or(0, |c| c.iter().map(String::len).sum());
        if last.len < streamed
            || updates
                .iter()
                .any(|u| u.send && u.at >= end && Some(u.request) != first_send)
        {
            continue;
        }
        let since = end.saturating_sub(DISRUPTION_REACH_MS);
        let disrupted = facts
            .disruptions
            .iter()
            .any(|&t| t >= since && t <= last.at)
            || facts.arrivals.iter().any(|a| {
                // A 429 teaches a bot that guessed the limit; one that
                // was told it has no excuse but more to send than the
                // limit takes, streaming or not.
                let excused =
                    a.retry_after_ms.is_none() || !facts.limit_known || overloaded(run, a.at);
                a.refused && excused && a.at >= since && a.at <= last.at
            });
        if disrupted {
            continue;
        }
        // An update in flight at the end: the final waits for its answer.
        let ready = updates
            .iter()
            .filter(|u| u.at <= end && u.request != last.request)
            .filter_map(|u| {
                facts
                    .answered
                    .get(&u.request)
                    .and_then(|times| times.iter().copied().filter(|&t| t >= u.at).min())
            })
            .fold(end, u64::max);
        if last.at > ready + FINAL_WITHIN_MS {
            v.push(format!(
                "request #{request}'s final text went {} ms after the agent's end ({} ms after it could)",
                last.at - end,
                last.at - ready
            ));
        }
    }
    v
}

/// Whether the messages, notices and final texts the bot had to send
/// (what a bot that does not stream sends too) filled more of the
/// homeserver's bucket at `at` than the quarter of the burst the
/// intermediate edits keep for what comes unforeseen (the bot keeps an
/// event for each reply it knows is owed one; not for messages still on
/// their way to it). Below that, a 429 means the edits took a final
/// text's room.
fn overloaded(run: &Run, at: u64) -> bool {
    let (rate, burst) = run.facts.limit;
    let mut level = 0.0_f64;
    let mut then = 0;
    for a in run.facts.arrivals.iter().filter(|a| a.at < at) {
        level = (level - (a.at - then) as f64 / 1000.0 * rate).max(0.0);
        then = a.at;
        if a.landed && !a.live {
            level += 1.0;
        }
    }
    level = (level - at.saturating_sub(then) as f64 / 1000.0 * rate).max(0.0);
    level > (burst / 4.0).floor().max(1.0)
}
