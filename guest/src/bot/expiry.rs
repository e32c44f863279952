//! Thread contexts pile up, one per conversation started: a thread
//! context idle for `thread_expiry_days` is forgotten, with its counters
//! (each user's own totals stay in their record). Visited oldest first
//! through the `ctxat/` index, a bounded number per call, like the
//! pruning of seen message ids.

use super::Bot;
use crate::host::Host;
use crate::state::{CONTEXTS_AT, Contexts, Records};

const DAY_MS: u64 = 24 * 3600 * 1000;
const EXPIRE_EVERY_MS: u64 = 3600 * 1000;
/// Contexts looked at per call: a backlog goes over several messages.
const EXPIRE_MAX: u32 = 128;

impl Bot {
    pub(super) fn expire_idle_contexts(&mut self, host: &mut dyn Host) -> Result<(), String> {
        let days = self.cfg.thread_expiry_days;
        let now = host.now();
        if days == 0
            || self
                .contexts_expired_ms
                .is_some_and(|t| now.saturating_sub(t) < EXPIRE_EVERY_MS)
        {
            return Ok(());
        }
        let cutoff = now.saturating_sub(days.saturating_mul(DAY_MS));
        // Past the contexts kept last time (busy ones stay in the index):
        // they must not hold the sweep up.
        let after = self.expiry_after.take();
        let keys = host.page(&CONTEXTS_AT, after.as_ref(), EXPIRE_MAX);
        let mut done = keys.len() < EXPIRE_MAX as usize;
        if !done {
            self.expiry_after = keys.last().cloned();
        }
        for key in keys {
            let entry = CONTEXTS_AT.id(&key).to_string();
            let parsed = entry
                .split_once('/')
                .and_then(|(ms, id)| Some((ms.parse::<u64>().ok()?, id)));
            let Some((ms, id)) = parsed else {
                host.remove(&key); // not an entry this guest wrote
                continue;
            };
            if ms >= cutoff {
                done = true;
                self.expiry_after = None;
                break;
            }
            let ctx = host.context(id)?;
            if ctx.indexed_ms != Some(ms) {
                host.remove(&key); // left behind by a newer entry
                continue;
            }
            // Something still going on (it would be odd, after days).
            if ctx.in_flight.is_some() || !ctx.queue.is_empty() || ctx.retry_timer.is_some() {
                continue;
            }
            host.remove_context(id, &ctx);
        }
        if done {
            self.contexts_expired_ms = Some(now);
        }
        Ok(())
    }
}
