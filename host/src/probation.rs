//! A swapped-in guest's probation: if it loses (fails on both attempts:
//! a trap, a timeout, running out of memory, an error) [`FAILURES`]
//! events while it is watched (its first [`EVENTS`] events, and at least
//! its first [`PERIOD`], whichever lasts longer), it is swapped back to
//! the guest it replaced. Without I/O: the runtime feeds it each event's
//! outcome and carries out its verdict.

use std::time::{Duration, Instant};

/// Failed events that send a new guest back.
pub const FAILURES: u32 = 3;
/// Events watched, at least...
pub const EVENTS: u32 = 50;
/// ...and for at least this long.
pub const PERIOD: Duration = Duration::from_secs(60);

/// `G`: the guest it replaced (a `GuestComponent` in the runtime).
pub struct Probation<G> {
    /// The guest it replaced, to go back to.
    pub previous: G,
    /// The new guest's file (SHA-256, hex): refused once rolled back.
    pub hash: String,
    events: u32,
    failures: u32,
    since: Instant,
}

/// What an event's outcome means for the new guest.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Watching,
    /// Past its probation: it stays.
    Passed,
    /// Swap back; why, in words.
    RollBack(String),
}

impl<G> Probation<G> {
    pub fn new(previous: G, hash: String, now: Instant) -> Probation<G> {
        Probation {
            previous,
            hash,
            events: 0,
            failures: 0,
            since: now,
        }
    }

    /// One event delivered; `failure`: why it failed, if it did (on any
    /// attempt: a failure the second attempt hid still counts).
    pub fn observe(&mut self, failure: Option<&str>, now: Instant) -> Verdict {
        self.events += 1;
        let within = self.events <= EVENTS || now.duration_since(self.since) <= PERIOD;
        if !within {
            return Verdict::Passed;
        }
        if let Some(why) = failure {
            self.failures += 1;
            if self.failures >= FAILURES {
                return Verdict::RollBack(format!(
                    "failed on {} of its first {} events (last: {why})",
                    self.failures, self.events
                ));
            }
        }
        Verdict::Watching
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_third_failure_within_probation_sends_it_back() {
        let t0 = Instant::now();
        let mut p = Probation::new((), "h".into(), t0);
        assert_eq!(p.observe(Some("trap"), t0), Verdict::Watching);
        assert_eq!(p.observe(None, t0), Verdict::Watching);
        assert_eq!(p.observe(Some("timeout"), t0), Verdict::Watching);
        assert_eq!(
            p.observe(Some("trap: unreachable"), t0),
            Verdict::RollBack("failed on 3 of its first 4 events (last: trap: unreachable)".into())
        );
    }

    #[test]
    fn probation_lasts_both_its_events_and_its_period() {
        let t0 = Instant::now();
        let mut p = Probation::new((), "h".into(), t0);
        // Many quiet events at once: still watched for the whole period.
        for _ in 0..EVENTS * 2 {
            assert_eq!(p.observe(None, t0), Verdict::Watching);
        }
        let later = t0 + PERIOD + Duration::from_secs(1);
        assert_eq!(p.observe(Some("trap"), later), Verdict::Passed);

        // A long quiet period with few events: watched until EVENTS.
        let mut p = Probation::new((), "h".into(), t0);
        for _ in 0..EVENTS - 1 {
            assert_eq!(p.observe(None, later), Verdict::Watching);
        }
        assert_eq!(p.observe(Some("trap"), later), Verdict::Watching);
        assert_eq!(p.observe(None, later), Verdict::Passed);
    }
}
