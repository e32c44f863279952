//! Token quotas per user: which limits apply to whom, what a user has
//! spent in the current day and month (UTC), and the words that say so.
//!
//! Pure: the bot (`bot::quota`) loads and saves the spending with the
//! user's record and decides when to check; this module knows periods,
//! patterns and arithmetic.

use serde::{Deserialize, Serialize};

use crate::commands::thousands;

const DAY_MS: u64 = 86_400_000;

/// Tokens a user may spend per day and per month (`None`: no limit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub day: Option<u64>,
    pub month: Option<u64>,
}

impl Limits {
    pub fn any(&self) -> bool {
        self.day.is_some() || self.month.is_some()
    }
}

/// Limits for the users whose id matches `pattern` (`*` matches any run
/// of characters: `@*:example.org`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    pub pattern: String,
    pub limits: Limits,
}

/// The quota settings: defaults for everyone, overrides by pattern (the
/// first that matches wins).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Quotas {
    pub defaults: Limits,
    pub overrides: Vec<Override>,
}

impl Quotas {
    /// The limits of `user` (admins are exempt before this is asked).
    pub fn limits(&self, user: &str) -> Limits {
        self.overrides
            .iter()
            .find(|o| matches(&o.pattern, user))
            .map_or(self.defaults, |o| o.limits)
    }

    /// Parses `quota_overrides`: `PATTERN=DAY/MONTH, ...`, each limit a
    /// number of tokens or `none`.
    pub fn parse_overrides(key: &str, v: &str) -> Result<Vec<Override>, String> {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|item| {
                let bad = || format!("{key}: {item:?} is not PATTERN=DAY/MONTH (numbers or none)");
                let (pattern, limits) = item.rsplit_once('=').ok_or_else(bad)?;
                let (day, month) = limits.split_once('/').ok_or_else(bad)?;
                let limit = |s: &str| match s.trim() {
                    "none" => Ok(None),
                    n => n.parse::<u64>().map(Some).map_err(|_| bad()),
                };
                let pattern = pattern.trim();
                if pattern.is_empty() {
                    return Err(bad());
                }
                Ok(Override {
                    pattern: pattern.to_string(),
                    limits: Limits {
                        day: limit(day)?,
                        month: limit(month)?,
                    },
                })
            })
            .collect()
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any run of
/// characters (possibly none) and everything else for itself.
pub fn matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty(); // no `*`: the whole text
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// What a user has spent in the current periods, kept in their record.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Spent {
    /// Days since 1970-01-01 (UTC) of `day_tokens`.
    pub day: u64,
    pub day_tokens: u64,
    /// Months since 1970-01 (UTC) of `month_tokens`.
    pub month: u64,
    pub month_tokens: u64,
}

impl Spent {
    /// Spent today and this month, at `now_ms`: a period that has passed
    /// counts nothing.
    pub fn at(&self, now_ms: u64) -> (u64, u64) {
        let day = self.today(now_ms);
        (
            if self.day == day { self.day_tokens } else { 0 },
            if self.month == month_of(day) {
                self.month_tokens
            } else {
                0
            },
        )
    }

    /// The day of `now_ms`, never before the one last counted: a clock set
    /// back does not give a spent quota back.
    fn today(&self, now_ms: u64) -> u64 {
        (now_ms / DAY_MS).max(self.day)
    }

    /// Counts `tokens` spent at `now_ms`.
    pub fn add(&mut self, now_ms: u64, tokens: u64) {
        let (day_tokens, month_tokens) = self.at(now_ms);
        let day = self.today(now_ms);
        *self = Spent {
            day,
            day_tokens: day_tokens.saturating_add(tokens),
            month: month_of(day),
            month_tokens: month_tokens.saturating_add(tokens),
        };
    }
}

/// What a reply that ended in an error counts (the agent reports tokens
/// only at a reply's end): its question and the text it got, at about four
/// bytes a token, so that a reply cut short is not free.
pub fn estimate(question_bytes: usize, reply_bytes: usize) -> u64 {
    (question_bytes.saturating_add(reply_bytes)).div_ceil(4) as u64
}

/// A limit reached: which period, what was spent, when it resets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reached {
    pub period: &'static str,
    pub spent: u64,
    pub limit: u64,
    pub resets_ms: u64,
}

/// The first limit `spent` has reached at `now_ms`, if any: a message
/// goes to the agent only while every limit has room left.
pub fn reached(limits: Limits, spent: &Spent, now_ms: u64) -> Option<Reached> {
    let (day, month) = spent.at(now_ms);
    let today = now_ms / DAY_MS;
    let checks = [
        (limits.month, month, "this month", next_month_ms(today)),
        (limits.day, day, "today", (today + 1) * DAY_MS),
    ];
    checks
        .into_iter()
        .find_map(|(limit, spent, period, resets_ms)| {
            let limit = limit?;
            (spent >= limit).then_some(Reached {
                period,
                spent,
                limit,
                resets_ms,
            })
        })
}

/// The refusal of a message from a user over quota.
pub fn refusal(r: &Reached, now_ms: u64) -> String {
    format!(
        "🚫 You have used {} of your {} tokens {}: your quota resets {} (in {}). This message \
         was not sent to the agent.",
        thousands(r.spent),
        thousands(r.limit),
        r.period,
        utc(r.resets_ms),
        duration(r.resets_ms.saturating_sub(now_ms)),
    )
}

/// The quota lines of `usage`.
pub fn usage(limits: Limits, spent: &Spent, now_ms: u64) -> String {
    let (day, month) = spent.at(now_ms);
    let today = now_ms / DAY_MS;
    let line = |name: &str, limit: Option<u64>, spent: u64, resets_ms: u64| match limit {
        Some(limit) => format!(
            "\n- {name}: {} of {} tokens, {} left (resets {})",
            thousands(spent),
            thousands(limit),
            thousands(limit.saturating_sub(spent)),
            utc(resets_ms)
        ),
        None => format!("\n- {name}: {} tokens, no limit", thousands(spent)),
    };
    format!(
        "\n{}{}",
        line("Today", limits.day, day, (today + 1) * DAY_MS),
        line("This month", limits.month, month, next_month_ms(today)),
    )
}

/// `2026-12-04 00:00 UTC`.
pub fn utc(ms: u64) -> String {
    let days = ms / DAY_MS;
    let (y, m, d) = civil(days);
    let minutes = (ms % DAY_MS) / 60_000;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        minutes / 60,
        minutes % 60
    )
}

/// `3 h 12 min`, `12 min`, `2 days 3 h`.
fn duration(ms: u64) -> String {
    let minutes = ms.div_ceil(60_000);
    let (days, hours, mins) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    match (days, hours) {
        (0, 0) => format!("{mins} min"),
        (0, h) => format!("{h} h {mins} min"),
        (1, h) => format!("1 day {h} h"),
        (d, h) => format!("{d} days {h} h"),
    }
}

/// Months since 1970-01 of a day since 1970-01-01.
fn month_of(day: u64) -> u64 {
    let (y, m, _) = civil(day);
    (y - 1970) * 12 + (m - 1)
}

/// The first instant of the month after the one holding `day`.
fn next_month_ms(day: u64) -> u64 {
    let (y, m, _) = civil(day);
    let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    days_from_civil(y, m, 1) * DAY_MS
}

/// The proleptic Gregorian date of a day since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, for days on or after the epoch).
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of a date on or after it (`days_from_civil`).
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y % 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
