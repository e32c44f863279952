//! The homeserver's rate limit as the bot believes it to be, without I/O.
//!
//! Synapse limits how fast one account sends events (`rc_message`: 0.2 a
//! second in bursts of 10, by default) with a leaky bucket: each event
//! raises a level that drains at `rate` a second, and an event that would
//! lift it above `burst` is refused with 429 and the time until one would
//! be taken (`retry_after_ms`); a refused event costs nothing. Streaming
//! spends that budget on edits, and if it is spent when the agent ends,
//! the final text waits seconds for it. So the bot keeps a copy of the
//! bucket: every event it sends counts, and each kind of event may spend
//! only down to its floor ([`Spend`]): an intermediate edit leaves an
//! event for every open reply's final text and a quarter of the burst for
//! notices and new replies; a reply's first message, a notice or a file
//! leaves the finals theirs; a final text may take the last event.
//!
//! The guess starts from the operator's settings (Synapse's defaults
//! unless set) and is corrected by every 429: the level is set to agree
//! with the homeserver's `retry_after_ms`; two 429s with `n` events taken
//! between them give the rate (`n` over how far the time of the next
//! allowed event moved: the burst cancels out); a 429 after the model
//! counted every event since the bucket was empty gives the burst. A
//! homeserver more generous than the guess sends no 429 and teaches
//! nothing: the bot then streams with fewer edits than it could (set the
//! settings to the homeserver's limits, or `none` for a bot exempt from
//! them).

/// Synapse's `rc_message` defaults.
pub const SYNAPSE_PER_SECOND: f64 = 0.2;
pub const SYNAPSE_BURST: u32 = 10;

/// A learned rate is kept within these bounds (events a second).
const MIN_RATE: f64 = 0.001;
const MAX_RATE: f64 = 1000.0;
const MAX_BURST: f64 = 100_000.0;
/// An event counts from when the bot sends it, at the homeserver from
/// when it arrives: anything but a final text keeps this much time in
/// hand, so that the two views differing by a network's delay does not
/// cost a 429.
const MARGIN_MS: f64 = 200.0;

/// What an event is for, which decides how much of the budget it may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spend {
    /// A reply's final text: may take the last event there is.
    Final,
    /// A reply's first message, a notice or a file: leaves an event for
    /// every open reply's final text.
    Answer,
    /// An intermediate edit: leaves the finals theirs and a quarter of the
    /// burst besides.
    Edit,
    /// A streaming message's first, live text (the final text will edit
    /// it: one event more than not streaming): as an edit, but only once
    /// the limit is trusted (a guess must not hold back the first text).
    Opening,
}

/// Synapse's bucket as the bot believes it to be.
#[derive(Clone, Debug, PartialEq)]
pub struct RateModel {
    /// Events a second, and the burst; `None`: not limited (as far as the
    /// bot knows).
    limit: Option<(f64, f64)>,
    /// The bucket's level at `at_ms`.
    level: f64,
    at_ms: u64,
    /// The homeserver said it takes nothing before this.
    blocked_until: u64,
    /// Every event since the bucket was last seen empty is counted in
    /// `level` (so a 429 tells the burst).
    from_empty: bool,
    /// The last 429's time of the next allowed event, the events taken
    /// since, and whether the bucket may have run empty since (then the
    /// two 429s do not tell the rate).
    last_refusal: Option<(u64, u32, bool)>,
    /// The rate is the homeserver's (learnt), not a guess.
    rate_known: bool,
    /// The limit was told by the operator or corrected by a 429: every
    /// kind of event keeps to it. A guess holds back only intermediate
    /// edits (the cheapest to lose): a homeserver more generous than the
    /// guess would otherwise hold answers for nothing.
    trusted: bool,
}

impl RateModel {
    /// A model of the limit the operator gave: `per_second` 0 (or less)
    /// is no limit.
    pub fn new(per_second: f64, burst: u32) -> RateModel {
        RateModel {
            trusted: true,
            ..RateModel::guess(per_second, burst)
        }
    }

    /// A model of a limit guessed (until a 429 corrects it).
    pub fn guess(per_second: f64, burst: u32) -> RateModel {
        let limit = (per_second > 0.0).then(|| {
            (
                per_second.clamp(MIN_RATE, MAX_RATE),
                f64::from(burst.max(1)).min(MAX_BURST),
            )
        });
        RateModel {
            limit,
            level: 0.0,
            at_ms: 0,
            blocked_until: 0,
            // Another run may have filled the bucket just before.
            from_empty: false,
            last_refusal: None,
            rate_known: false,
            trusted: false,
        }
    }

    /// The rate (events a second) and burst believed now.
    pub fn limit(&self) -> Option<(f64, f64)> {
        self.limit
    }

    /// The level at `now` (drained since `at_ms`).
    fn level_at(&self, now: u64) -> f64 {
        match self.limit {
            Some((rate, _)) => {
                let elapsed = now.saturating_sub(self.at_ms) as f64 / 1000.0;
                (self.level - elapsed * rate).max(0.0)
            }
            None => 0.0,
        }
    }

    /// Bring the level to `now`.
    fn drain(&mut self, now: u64) {
        if now < self.at_ms {
            // The clock went back: a wait the homeserver asked for is as
            // long from now as it was.
            self.blocked_until = self.blocked_until.saturating_sub(self.at_ms - now);
        }
        let before = self.level;
        self.level = self.level_at(now);
        // Drained to empty (a new instance's zero is no knowledge: another
        // may have filled the bucket just before).
        if before > 0.0 && self.level <= 0.0 {
            self.from_empty = true;
            if let Some(r) = &mut self.last_refusal {
                r.2 = true;
            }
        }
        self.at_ms = now;
    }

    /// How long an event of kind `spend` waits at `now`, with `open`
    /// replies (this one among them, if it is a reply's) still owed a
    /// final text: `Some(0)` for now, `None` until a reply ends (the
    /// floor is above the burst).
    pub fn wait_ms(&self, now: u64, spend: Spend, open: usize) -> Option<u64> {
        let blocked = self.blocked_until.saturating_sub(now);
        let Some((rate, burst)) = self.limit else {
            return Some(blocked);
        };
        // A final text waits only for the homeserver's word: if the model
        // is short of an event the homeserver has, it learns so.
        let free = match spend {
            Spend::Final => true,
            Spend::Answer | Spend::Opening => !self.trusted,
            Spend::Edit => false,
        };
        if free {
            return Some(blocked);
        }
        let open = open as f64;
        let reserve = match spend {
            Spend::Final => 0.0,
            // Always reachable: with more open replies than the burst,
            // the finals go first anyway.
            Spend::Answer => open.min(burst - 1.0),
            Spend::Edit | Spend::Opening => open + (burst / 4.0).floor().max(1.0),
        };
        let ceiling = burst - 1.0 - reserve;
        if ceiling < 0.0 {
            return None;
        }
        let level = self.level_at(now);
        // (What is not there cannot be late to drain: an empty bucket
        // needs no margin.)
        let level = match spend {
            Spend::Final => level,
            Spend::Answer | Spend::Edit | Spend::Opening => {
                level + (MARGIN_MS / 1000.0 * rate).min(level)
            }
        };
        let drain_ms = if level <= ceiling {
            0
        } else {
            ((level - ceiling) / rate * 1000.0).ceil() as u64
        };
        Some(drain_ms.max(blocked))
    }

    /// An event was sent at `now`.
    pub fn spent(&mut self, now: u64) {
        self.drain(now);
        self.level += 1.0;
    }

    /// The homeserver took an event at `now`: one past the believed
    /// burst shows a guessed burst is larger. (Not a trusted one: the
    /// level also counts events whose fate is unknown, such as a send
    /// that met an outage, which may never have reached the bucket.)
    pub fn taken(&mut self, now: u64) {
        self.drain(now);
        if let Some((rate, burst)) = self.limit
            && self.level > burst
        {
            if self.trusted {
                // The homeserver took it: its bucket is not over the burst.
                self.level = burst;
            } else {
                self.limit = Some((rate, self.level.ceil().min(MAX_BURST)));
            }
        }
        if let Some(r) = &mut self.last_refusal {
            r.1 = r.1.saturating_add(1);
        }
    }

    /// The homeserver refused an event with 429 at `now` (it was counted
    /// when sent, and costs nothing): learn from it.
    pub fn refused(&mut self, now: u64, retry_after_ms: Option<u64>) {
        self.drain(now);
        self.level = (self.level - 1.0).max(0.0);
        if self.limit.is_none() {
            // Limited after all: start from Synapse's defaults; the level
            // counted nothing.
            self.from_empty = false;
        }
        let (mut rate, mut burst) = self
            .limit
            .unwrap_or((SYNAPSE_PER_SECOND, f64::from(SYNAPSE_BURST)));
        let retry = retry_after_ms.unwrap_or((1000.0 / rate) as u64);
        let allowed_at = now.saturating_add(retry);
        if let (Some((before, taken, emptied)), Some(_)) = (self.last_refusal, retry_after_ms)
            && taken > 0
            && !emptied
            && allowed_at > before
        {
            let seconds = (allowed_at - before) as f64 / 1000.0;
            rate = (f64::from(taken) / seconds).clamp(MIN_RATE, MAX_RATE);
            self.rate_known = true;
        }
        let wait = retry as f64 / 1000.0 * rate;
        let mut exact = false;
        if self.from_empty && retry_after_ms.is_some() {
            // Synapse refuses while level + 1 > burst, and gives the time
            // until level + 1 = burst: level - wait + 1 = burst. With a
            // guessed rate the level is only as good as the guess: the
            // burst may then only come down.
            let seen = (self.level - wait + 1.0).round().clamp(1.0, MAX_BURST);
            if self.rate_known {
                burst = seen;
                exact = true;
            } else {
                burst = burst.min(seen);
            }
        }
        self.limit = Some((rate, burst));
        // Agree with the homeserver: the next event goes at `allowed_at`.
        // The level now counts from the homeserver's word, which is exact
        // only if the burst is.
        self.level = burst - 1.0 + wait;
        self.from_empty = exact;
        self.blocked_until = self.blocked_until.max(allowed_at);
        self.last_refusal = Some((allowed_at, 0, false));
        self.trusted = true;
    }
}
