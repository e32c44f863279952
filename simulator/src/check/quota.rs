//! The token quota rule: what a user is given passes their limit by one
//! reply at most (the one that crossed it), however their messages are
//! spread over rooms and threads.

use std::collections::BTreeMap;

use crate::world::Run;

/// For every user a quota applies to (`quota_tokens_per_day`,
/// `quota_tokens_per_month`, `quota_overrides`; admins exempt), the
/// tokens of the agent's replies to them, less the largest, stay below
/// their limit: every request but one started under it, and none ran
/// beside another. Left out: runs whose wall clock jumps (a new day or
/// month resets what was spent).
pub fn quota_kept(run: &Run) -> Vec<String> {
    let quotas = Quotas::from(&run.facts.settings);
    if run.facts.clock_jumps || quotas.is_none() {
        return Vec::new();
    }
    let mut given: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    for s in &run.facts.submits {
        let tokens = run.facts.ended_tokens.get(&s.request).copied().unwrap_or(0);
        given
            .entry(&s.sender)
            .or_default()
            .push((s.request, tokens));
    }
    let mut v = Vec::new();
    for (user, replies) in given {
        let Some(limit) = quotas.limit(user) else {
            continue;
        };
        let total: u64 = replies.iter().map(|(_, t)| t).sum();
        let largest = replies.iter().map(|(_, t)| *t).max().unwrap_or(0);
        if total - largest >= limit {
            let list: Vec<String> = replies.iter().map(|(r, t)| format!("#{r}: {t}")).collect();
            v.push(format!(
                "{user} was given {total} tokens against a limit of {limit}, more than one \
                 reply over it (requests {})",
                list.join(", ")
            ));
        }
    }
    v
}

/// The quota settings, read as the operator's documentation says.
struct Quotas {
    day: Option<u64>,
    month: Option<u64>,
    /// (pattern, day, month), the first match wins.
    overrides: Vec<(String, Option<u64>, Option<u64>)>,
    admins: Vec<String>,
}

impl Quotas {
    fn from(settings: &[(String, String)]) -> Quotas {
        let get = |k: &str| {
            settings
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.trim().to_string())
        };
        let number = |v: &str| v.trim().parse::<u64>().ok();
        let overrides = get("quota_overrides")
            .unwrap_or_default()
            .split(',')
            .filter_map(|item| {
                let (pattern, limits) = item.trim().rsplit_once('=')?;
                let (day, month) = limits.split_once('/')?;
                Some((pattern.trim().to_string(), number(day), number(month)))
            })
            .collect();
        Quotas {
            day: get("quota_tokens_per_day").as_deref().and_then(number),
            month: get("quota_tokens_per_month").as_deref().and_then(number),
            overrides,
            admins: get("admins")
                .unwrap_or_default()
                .split(',')
                .map(|a| a.trim().to_string())
                .collect(),
        }
    }

    fn is_none(&self) -> bool {
        self.day.is_none() && self.month.is_none() && self.overrides.is_empty()
    }

    /// The tightest limit on `user` within one day and month.
    fn limit(&self, user: &str) -> Option<u64> {
        if self.admins.iter().any(|a| a == user) {
            return None;
        }
        let (day, month) = self
            .overrides
            .iter()
            .find(|(p, _, _)| glob(p, user))
            .map_or((self.day, self.month), |(_, d, m)| (*d, *m));
        match (day, month) {
            (Some(d), Some(m)) => Some(d.min(m)),
            (d, m) => d.or(m),
        }
    }
}

/// `*` matches any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            text.starts_with(head)
                && (head.len()..=text.len())
                    .filter(|i| text.is_char_boundary(*i))
                    .any(|i| glob(tail, &text[i..]))
        }
    }
}
