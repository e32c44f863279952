//! Shrinking: a failing seed's world cut down, greedily, to the smallest
//! scenario that still breaks the same rule with the same seed: steps,
//! agent replies, rooms and fault settings go one at a time while the
//! rule stays broken, until nothing more can go. The result is a scenario
//! file: kept under `simulator/scenarios/regressions/`, the snapshot suite
//! runs it on every test run.

use crate::check::{self, Rule};
use crate::scenario::{Agent, Faults, Homeserver, Scenario};
use surfaces_embed::GuestComponent;

/// What shrinking came to.
pub struct Shrunk {
    pub scenario: Scenario,
    /// The rule it breaks, and what of it.
    pub rule: &'static str,
    pub broken: Vec<String>,
    /// Runs it took.
    pub runs: u64,
}

/// Shrink `scenario`, which breaks some rule with `seed`; `None` when it
/// breaks none.
pub fn shrink(
    scenario: Scenario,
    seed: u64,
    component: &GuestComponent,
    join_cutoff: bool,
) -> Option<Shrunk> {
    let broken = |s: &Scenario, rule: &Rule| -> Vec<String> {
        (rule.1)(&crate::run_planted(s, seed, component, join_cutoff))
    };
    let run = crate::run_planted(&scenario, seed, component, join_cutoff);
    let rule = *check::RULES.iter().find(|r| !(r.1)(&run).is_empty())?;
    let mut runs = 1;
    let mut best = scenario;
    loop {
        let mut smaller = false;
        for candidate in candidates(&best) {
            runs += 1;
            if !broken(&candidate, &rule).is_empty() {
                best = candidate;
                smaller = true;
                break;
            }
        }
        if !smaller {
            break;
        }
    }
    let broken = broken(&best, &rule);
    runs += 1;
    Some(Shrunk {
        scenario: best,
        rule: rule.0,
        broken,
        runs,
    })
}

/// Every scenario one step simpler than `s`, the biggest cuts first.
fn candidates(s: &Scenario) -> Vec<Scenario> {
    let mut out = Vec::new();
    // Halves of the steps, then single steps, from the last.
    let n = s.steps.len();
    if n > 1 {
        for (lo, hi) in [(0, n / 2), (n / 2, n)] {
            let mut c = s.clone();
            c.steps.drain(lo..hi);
            if labels_hold(&c) {
                out.push(c);
            }
        }
    }
    for i in (0..n).rev() {
        let mut c = s.clone();
        c.steps.remove(i);
        if labels_hold(&c) {
            out.push(c);
        }
    }
    for i in (0..s.agent.replies.len()).rev() {
        let mut c = s.clone();
        c.agent.replies.remove(i);
        out.push(c);
    }
    for i in (0..s.rooms.len()).rev() {
        let id = &s.rooms[i].id;
        if s.steps.iter().all(|st| st.room.as_ref() != Some(id)) {
            let mut c = s.clone();
            c.rooms.remove(i);
            out.push(c);
        }
    }
    // Fault settings back to their calm defaults, one at a time.
    let calm_hs = Homeserver::default();
    let calm_agent = Agent::default();
    let calm_faults = Faults {
        heal_at_ms: s.faults.heal_at_ms,
        ..Faults::default()
    };
    let mut tweaks: Vec<fn(&mut Scenario, &Homeserver, &Agent, &Faults)> = vec![
        |c, h, _, _| c.homeserver.unavailable = h.unavailable,
        |c, h, _, _| c.homeserver.lost_response = h.lost_response,
        |c, h, _, _| {
            c.homeserver.rate_per_second = h.rate_per_second;
            c.homeserver.burst = h.burst;
        },
        |c, h, _, _| c.homeserver.timeline_limit = h.timeline_limit,
        |c, h, _, _| c.homeserver.latency_ms = h.latency_ms,
        |c, _, a, _| c.agent.connect_ms = a.connect_ms,
        |c, _, a, _| c.agent.reconnect_ms = a.reconnect_ms,
        |c, _, _, f| c.faults.duplicate_sync = f.duplicate_sync,
        |c, _, _, f| c.faults.sync_unavailable = f.sync_unavailable,
        |c, _, _, f| c.faults.guest_trap = f.guest_trap,
    ];
    tweaks.push(|c, _, _, _| c.bot.max_event_bytes = 65_536);
    for tweak in tweaks {
        let mut c = s.clone();
        tweak(&mut c, &calm_hs, &calm_agent, &calm_faults);
        if format!("{c:?}") != format!("{s:?}") {
            out.push(c);
        }
    }
    // Replies: fewer pieces, no failure at the end.
    for i in 0..s.agent.replies.len() {
        let r = &s.agent.replies[i];
        if let Some(p) = &r.pieces
            && p.len() > 1
        {
            let mut c = s.clone();
            c.agent.replies[i].pieces = Some(p[..p.len() / 2].to_vec());
            out.push(c);
        }
        if r.then.as_deref().is_some_and(|t| t != "end") {
            let mut c = s.clone();
            c.agent.replies[i].then = Some("end".into());
            out.push(c);
        }
    }
    out
}

/// Every thread, reply, reaction, edit or deletion still names a labelled
/// step before it.
fn labels_hold(s: &Scenario) -> bool {
    let mut seen = Vec::new();
    for st in &s.steps {
        let on = st
            .on
            .as_ref()
            .map(|l| l.strip_prefix("answer:").unwrap_or(l).to_string());
        for l in [&st.thread, &st.reply_to, &on].into_iter().flatten() {
            if !seen.contains(&l) {
                return false;
            }
        }
        if let Some(l) = &st.label {
            seen.push(l);
        }
    }
    true
}
