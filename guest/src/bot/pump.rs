//! The pump: how a reply's text becomes Matrix messages, without I/O.
//!
//! A reply is one message sent once and then edited in place; past one
//! event's capacity it continues in a new message (a *part*). The pump is
//! given the reply's state, its text and the time, and says what to do
//! next ([`next`]): nothing yet, call again later, send or edit a part, or
//! done. The caller carries that out and tells the pump ([`issued`]), and
//! hands it the homeserver's answer ([`answered`]). Every rule of the
//! stream lives here: one request in flight per reply, at most one update
//! per interval, the edit budget, the homeserver's rate budget (through
//! [`Budget`]: an intermediate edit leaves room for the final texts), the
//! split at a clean point, a smaller budget after a 413, the hold after a
//! 429, and the edit that follows a retried send which may have landed
//! the first time with older text.

use crate::planted::{self, Bug};
use crate::rate::{RateModel, Spend};
use crate::render;
use crate::state::{Ending, Flight, Part, Reply};
use crate::types::{MatrixError, MatrixErrorKind, MessageContent};

/// Failures (other than 429) of one message before it is given up.
pub const MAX_FAILURES: u32 = 8;
/// A homeserver's `retry_after_ms` is trusted up to this.
pub const MAX_RETRY_AFTER_MS: u64 = 10 * 60 * 1000;
/// Smallest event budget the pump shrinks to after a 413.
pub const MIN_BUDGET: usize = 8 * 1024;
/// The longest the interval between two updates of a message grows to.
pub const MAX_INTERVAL_MS: u64 = 30_000;

/// How often a message may be updated.
///
/// Every edit is an event in the room's history that clients load and
/// some notify on, and it spends the homeserver's rate budget: a message
/// gets at most `max_edits` edits, the last of them kept for its final
/// text. The interval between two updates starts at `interval_ms` and
/// doubles each time a quarter of the budget is spent (60 edits at 1 s
/// last about four minutes of streaming), grows with the text an edit
/// carries (one more interval per 16 KiB), and is never below the longest
/// `retry_after_ms` the homeserver gave the reply. A final text waits for
/// no interval (only for the hold after a 429 and the rate budget): it
/// goes as soon as the agent ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pace {
    pub interval_ms: u64,
    pub max_edits: u32,
}

impl Pace {
    /// The least time between two updates of a part that has had `edits`
    /// edits and shows `len` bytes, in reply `r`.
    pub fn interval(&self, r: &Reply, edits: u32, len: usize, is_final: bool) -> u64 {
        if is_final && !planted::on(Bug::FinalWaitsInterval) {
            return 0;
        }
        let quarter = (self.max_edits / 4).max(1);
        let doublings = (edits / quarter).min(5);
        let by_length = 1 + (len / (16 * 1024)) as u64;
        let grown = self
            .interval_ms
            .saturating_mul(1 << doublings)
            .saturating_mul(by_length)
            .min(MAX_INTERVAL_MS)
            .max(self.interval_ms);
        grown.max(r.retry_after_ms.min(MAX_INTERVAL_MS))
    }

    /// Whether one more edit that is not a final text fits the budget
    /// (one is always kept for the final text).
    pub fn may_edit(&self, edits: u32) -> bool {
        edits.saturating_add(1) < self.max_edits || planted::on(Bug::EditBudgetIgnored)
    }
}

/// The homeserver's rate budget as the pump sees it: the model, how many
/// replies (this one among them) are still owed a final text, and how
/// many messages wait in this reply's queue (each owed one next: what
/// streaming spends now, they would wait for).
#[derive(Clone, Copy, Debug)]
pub struct Budget<'a> {
    pub rate: &'a RateModel,
    pub open: usize,
    pub waiting: usize,
}

impl Budget<'_> {
    /// How long an update of this kind waits for the budget: `None` until
    /// a reply ends (or more text comes).
    fn wait_ms(&self, now: u64, spend: Spend) -> Option<u64> {
        let spend = match spend {
            Spend::Edit if planted::on(Bug::FinalsUnreserved) => Spend::Final,
            other => other,
        };
        let owed = match spend {
            Spend::Edit | Spend::Opening => self.open.saturating_add(self.waiting),
            Spend::Final | Spend::Answer => self.open,
        };
        self.rate.wait_ms(now, spend, owed)
    }
}

/// What the reply needs now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing until an event comes: a request is in flight, or there is
    /// no text to show yet.
    Idle,
    /// Call again after this many milliseconds (throttle, rate limit).
    FlushIn(u64),
    /// Send or edit a part now.
    Update(Update),
    /// The reply is over and its final text is shown.
    Done,
}

/// One send or edit of a part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    pub part: usize,
    pub target: Target,
    pub content: MessageContent,
    /// What the part shows once this lands.
    pub fingerprint: u64,
}

/// Which request carries an update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The part's first send: a new request.
    First,
    /// The first send again, with its own request (so the same
    /// transaction id: it cannot appear twice).
    Again(u64),
    /// An edit of the part's message (always the original event).
    Edit(String),
}

/// What the homeserver's answer means for the reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Not the request in flight (an answer to a run that is gone).
    Stale,
    /// Go on: call [`next`].
    Pump,
    /// The room refuses the reply: stop trying.
    GiveUp,
}

/// The next step for reply `r` with text `full` at `now`.
pub fn next(
    r: &mut Reply,
    full: &str,
    now: u64,
    pace: &Pace,
    budget: Budget<'_>,
) -> Result<Next, String> {
    if r.abandoned {
        return Ok(if r.ending.is_some() {
            Next::Done
        } else {
            Next::Idle
        });
    }
    loop {
        let idx = r.parts.len() - 1;
        if r.parts[idx].in_flight.is_some() {
            return Ok(Next::Idle);
        }
        if now < r.hold_until {
            return Ok(Next::FlushIn(r.hold_until - now));
        }
        let part = &r.parts[idx];
        // More text for a part whose last update was a moment ago waits for
        // the interval: said before the part is rendered, copied and
        // hashed, which costs its length, for every chunk. (So a part that
        // no longer fits is cut at its next update, not at once: the cut
        // is the same then. The interval is the one after the last update,
        // by what that carried.)
        if part.end.is_none()
            && r.ending.is_none()
            && full.len() != part.issued_len
            && !planted::on(Bug::ThrottleOff)
            && let Some(last) = part.last_update
        {
            let carried = part.issued_len.saturating_sub(part.start);
            let due = last.saturating_add(pace.interval(r, part.edits, carried, false));
            if now < due {
                return Ok(Next::FlushIn(due - now));
            }
        }
        let (body, is_final) = part_body(r, part, full)?;
        if body.is_empty() && !is_final {
            return Ok(Next::Idle); // nothing to show yet
        }
        let fp = render::fingerprint(&[body.as_bytes(), &[u8::from(is_final)]]);
        if part.shown == Some(fp) {
            if !is_final {
                return Ok(Next::Idle);
            }
            let Some(start) = part.end else {
                return Ok(Next::Done); // the final text is shown
            };
            let note_pending = matches!(r.ending, Some(Ending::Cut(_)));
            if start >= full.len() && !note_pending {
                // Nothing for a next part (yet): it opens when text comes.
                return Ok(if r.ending.is_some() {
                    Next::Done
                } else {
                    Next::Idle
                });
            }
            // This part is full and shown: the text goes on in a new one.
            let fence = render::open_fence(&full[..start]);
            let start = if planted::on(Bug::SplitLosesChar) {
                start + full[start..].chars().next().map_or(0, char::len_utf8)
            } else {
                start
            };
            r.parts.push(Part {
                start,
                fence,
                ..Part::default()
            });
            continue;
        }
        // Freeze the part where it must end once the text no longer fits in
        // one event (what fits is all there: the cut is the same later):
        // its next update is then its final text.
        if part.end.is_none() && !render::fits(&body, part.fence.as_deref(), r.budget) {
            let tail = full.get(part.start..).unwrap_or_default();
            let cut = render::split_point(tail, part.fence.as_deref(), r.budget);
            // A note alone always fits (notes are short, budgets are not):
            // an empty tail needs no split.
            if !tail.is_empty() {
                r.parts[idx].end = Some(r.parts[idx].start + cut);
                continue;
            }
        }
        let interval_ms = pace.interval(r, part.edits, body.len(), is_final);
        if let Some(last) = part.last_update
            && now < last + interval_ms
            && !planted::on(Bug::ThrottleOff)
        {
            return Ok(Next::FlushIn(last + interval_ms - now));
        }
        // An edit that is not the final text waits for the budget to allow
        // it (for more text to end the part, or the reply's end); the
        // final text always may go.
        if part.event_id.is_some() && !is_final && !pace.may_edit(part.edits) {
            return Ok(Next::Idle);
        }
        // The homeserver's rate budget: an intermediate edit leaves room
        // for every open reply's final text (and some for notices and new
        // replies), so a final text never waits for it.
        // (A part that is full is no reply's final text, even once the
        // reply has ended: the next part follows, and another reply's
        // final text may not wait for it.)
        let reply_final = is_final && part.end.is_none() && r.ending.is_some();
        let spend = match (reply_final, is_final, &part.event_id) {
            (true, _, _) => Spend::Final,
            // A full part: what it shows is final, the next part follows.
            (false, true, _) => Spend::Answer,
            // Streaming's first cost: a message the final text will edit.
            (false, false, None) => Spend::Opening,
            (false, false, Some(_)) => Spend::Edit,
        };
        match budget.wait_ms(now, spend) {
            Some(0) => {}
            Some(ms) => return Ok(Next::FlushIn(ms)),
            None => return Ok(Next::Idle),
        }
        let html = render::to_html(&render::with_fence(part.fence.as_deref(), &body));
        let content = MessageContent {
            body,
            formatted_body: html,
            notice: false,
            live: !is_final,
            thread_root: r
                .origin
                .thread_root
                .clone()
                .filter(|_| !planted::on(Bug::WrongThread)),
            reply_to: Some(r.origin.event_id.clone()),
            mentions: if idx == 0 && !r.origin.is_direct {
                let mut who = vec![r.origin.sender.clone()];
                who.extend(
                    r.origin
                        .with
                        .iter()
                        .filter(|w| **w != r.origin.sender)
                        .cloned(),
                );
                who
            } else {
                Vec::new()
            },
        };
        let target = match (&part.event_id, part.send_request) {
            (Some(event_id), _) => Target::Edit(event_id.clone()),
            (None, Some(_)) if planted::on(Bug::RetryPostsTwice) => Target::First,
            (None, Some(request)) => Target::Again(request),
            (None, None) => Target::First,
        };
        return Ok(Next::Update(Update {
            part: idx,
            target,
            content,
            fingerprint: fp,
        }));
    }
}

/// The caller issued `update` as `request` at `now`.
pub fn issued(r: &mut Reply, update: &Update, request: u64, now: u64) {
    let Some(part) = r.parts.get_mut(update.part) else {
        return;
    };
    match update.target {
        Target::First => part.send_request = Some(request),
        Target::Edit(_) => part.edits = part.edits.saturating_add(1),
        Target::Again(_) => {}
    }
    part.in_flight = Some(Flight {
        request,
        fingerprint: update.fingerprint,
    });
    part.last_update = Some(now);
    // (The text up to where this update shows it, for one that is not
    // final: final ones are not throttled.)
    part.issued_len = part.start.saturating_add(update.content.body.len());
}

/// The homeserver answered `request` at `now`.
pub fn answered(
    r: &mut Reply,
    request: u64,
    outcome: &Result<String, MatrixError>,
    now: u64,
) -> Answer {
    let Some(idx) = r
        .parts
        .iter()
        .position(|p| p.in_flight.as_ref().is_some_and(|f| f.request == request))
    else {
        return Answer::Stale;
    };
    let flight = r.parts[idx].in_flight.take();
    // An edit the homeserver refused outright made no event: it does not
    // count against the budget (one whose answer is unknown may have).
    if let Err(err) = outcome
        && r.parts[idx].event_id.is_some()
        && matches!(
            err.kind,
            MatrixErrorKind::RateLimited
                | MatrixErrorKind::TooLarge
                | MatrixErrorKind::Forbidden
                | MatrixErrorKind::NotFound
        )
    {
        r.parts[idx].edits = r.parts[idx].edits.saturating_sub(1);
    }
    match outcome {
        Ok(event_id) => {
            let part = &mut r.parts[idx];
            if part.event_id.is_none() || planted::on(Bug::EditOfEdit) {
                part.event_id = Some(event_id.clone());
            }
            // A retried first send may have landed the first time, with
            // older content (the transaction id returns that event): don't
            // trust it to show this content; an edit follows.
            part.shown = if part.retried {
                None
            } else {
                flight.map(|f| f.fingerprint)
            };
            part.retried = false;
            r.failures = 0;
            r.unknown_failures = 0;
            r.hold_ms = 0;
            Answer::Pump
        }
        Err(err) => {
            // Only a send whose fate is unknown may have landed (a refusal
            // made no event: its retry shows what it carries).
            if r.parts[idx].event_id.is_none()
                && matches!(
                    err.kind,
                    MatrixErrorKind::Unavailable | MatrixErrorKind::Other
                )
            {
                r.parts[idx].retried = true;
            }
            let give_up = match err.kind {
                MatrixErrorKind::RateLimited => {
                    if planted::on(Bug::FinalEditDroppedOn429) {
                        r.parts[idx].shown = flight.as_ref().map(|f| f.fingerprint);
                    }
                    let mut wait = err.retry_after_ms.unwrap_or(1000).min(MAX_RETRY_AFTER_MS);
                    if planted::on(Bug::RetryAfterIgnored) {
                        wait = 0;
                    }
                    r.hold_until = now.saturating_add(wait);
                    r.hold_ms = wait;
                    r.retry_after_ms = r.retry_after_ms.max(wait);
                    false
                }
                MatrixErrorKind::TooLarge => {
                    // Our estimate was off: aim lower and split again.
                    r.budget = (r.budget * 2 / 3).max(MIN_BUDGET);
                    r.parts[idx].end = None;
                    r.failures += 1;
                    r.failures > MAX_FAILURES
                }
                MatrixErrorKind::Forbidden | MatrixErrorKind::NotFound => true,
                // An outage passes: the reply waits for it (backing off to
                // a try a minute) rather than stay cut and marked live.
                MatrixErrorKind::Unavailable => {
                    r.failures += 1;
                    r.hold_ms = backoff(r.failures);
                    r.hold_until = now.saturating_add(r.hold_ms);
                    false
                }
                MatrixErrorKind::Other => {
                    r.failures += 1;
                    r.unknown_failures += 1;
                    r.hold_ms = backoff(r.failures);
                    r.hold_until = now.saturating_add(r.hold_ms);
                    r.unknown_failures > MAX_FAILURES
                }
            };
            if give_up {
                Answer::GiveUp
            } else {
                Answer::Pump
            }
        }
    }
}

/// After a host restart, nothing of the last run is in flight: a first
/// send that was may or may not have landed (its retry reuses the
/// transaction id, and an edit follows).
/// A restart lost the reply's timers and requests. Nor can the new run
/// tell how much time passed (the clock may have been set either way), so
/// a hold that was on (a homeserver's `retry_after_ms`, a backoff) and the
/// edit interval start again in full from now: never early, never for
/// hours.
pub fn restarted(r: &mut Reply, now: u64) {
    r.flush_timer = None;
    r.typing_timer = None;
    r.hold_until = if r.hold_ms > 0 {
        now.saturating_add(r.hold_ms)
    } else {
        0
    };
    for part in &mut r.parts {
        if part.last_update.is_some() {
            part.last_update = Some(now);
        }
        if part.in_flight.take().is_some() && part.event_id.is_none() {
            part.retried = true;
        }
    }
}

/// 1 s, 2 s, 4 s ... capped at one minute.
pub fn backoff(attempt: u32) -> u64 {
    1000u64
        .saturating_mul(1 << attempt.saturating_sub(1).min(6))
        .min(60_000)
}

/// The text a part shows now, and whether that is its final text.
fn part_body(r: &Reply, part: &Part, full: &str) -> Result<(String, bool), String> {
    let end = part.end.unwrap_or(full.len());
    let Some(text) = full.get(part.start..end) else {
        return Err(format!(
            "part {}..{end} is not within the reply's {} bytes",
            part.start,
            full.len()
        ));
    };
    let is_final = part.end.is_some() || r.ending.is_some();
    let note = match (&r.ending, part.end) {
        (Some(Ending::Cut(note)), None) => Some(note.as_str()),
        _ => None,
    };
    let body = join_note(text, note);
    if body.is_empty() && is_final {
        return Ok(("*(The agent returned an empty reply.)*".to_string(), true));
    }
    Ok((body, is_final))
}

fn join_note(text: &str, note: Option<&str>) -> String {
    match note {
        None => text.to_string(),
        Some(n) if text.is_empty() => n.to_string(),
        Some(n) => format!("{text}\n\n{n}"),
    }
}
