//! The messages the bot has acted on, by event id: a homeserver or the
//! host may deliver one twice (a sync batch replayed after a crash, a gap
//! filled after a restart), and it must not be answered twice.

use super::Bot;
use crate::host::Host;
use crate::state::{Records, SEEN_AT, seen_at_key, seen_key};

/// How long a message's id is remembered: far longer than any redelivery.
const SEEN_KEEP_MS: u64 = 3 * 24 * 3600 * 1000;
const SEEN_PRUNE_EVERY_MS: u64 = 3600 * 1000;
const SEEN_PRUNE_MAX: usize = 256;

impl Bot {
    /// Whether the message was handled before; if not, remember it, in the
    /// same transaction as its handling.
    pub(super) fn already_seen(
        &mut self,
        host: &mut dyn Host,
        event_id: &str,
    ) -> Result<bool, String> {
        let now = host.now();
        if host.load(&seen_key(event_id))?.is_some() {
            return Ok(true);
        }
        host.save(&seen_key(event_id), &now)?;
        host.save(&seen_at_key(now, event_id), &())?;
        if self
            .seen_pruned_ms
            .is_none_or(|t| now.saturating_sub(t) >= SEEN_PRUNE_EVERY_MS)
        {
            let cutoff = now.saturating_sub(SEEN_KEEP_MS);
            // Bounded: a backlog (after a long outage) goes over several
            // messages rather than past one call's time budget; the next
            // message goes on while expired records remain.
            let mut done = true;
            let oldest = host.page(&SEEN_AT, None, SEEN_PRUNE_MAX as u32 + 1);
            for (n, key) in oldest.into_iter().enumerate() {
                let Some((ms, id)) = SEEN_AT.id(&key).split_once('/') else {
                    continue;
                };
                if ms.parse::<u64>().is_ok_and(|ms| ms >= cutoff) {
                    break;
                }
                if n == SEEN_PRUNE_MAX {
                    done = false;
                    break;
                }
                host.remove(&seen_key(id));
                host.remove(&key);
                super::controls::forget(host, id)?;
            }
            if done {
                self.seen_pruned_ms = Some(now);
            }
        }
        Ok(false)
    }
}
