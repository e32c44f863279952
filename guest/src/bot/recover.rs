//! After a host restart the previous run's agent requests, timers and
//! Matrix requests are gone. Replies cut by the restart end with a note
//! (or go back to their queue if nothing was shown), replies that were
//! finishing are finished, undelivered notices are sent again with their
//! old request ids, joins not yet confirmed are made again, and every
//! context with messages waiting starts again (its submit makes the host
//! open the connection it needs: only the shared one is opened at start).

use super::replies::Replies;
use super::{Bot, Fate, pump};
use crate::host::Host;
use crate::state::{
    Conn, Context, Contexts, OUTGOING, ROUTES, Records, Route, TIMERS, TimerPurpose,
    context_index_key, run_key, timer_key,
};

use crate::types::{AgentError, AgentErrorKind};

/// Contexts recovered per call.
const RECOVER_PAGE: u32 = 256;

impl Bot {
    pub(super) fn recover(&mut self, host: &mut dyn Host) -> Result<(), String> {
        let run = host.load(&run_key())?.unwrap_or(0) + 1;
        host.save(&run_key(), &run)?;
        // Joins not yet confirmed: the last run's request or retry is gone.
        let mut joins = Vec::new();
        for key in host.scan(&TIMERS) {
            if let Some(TimerPurpose::Join { room_id, attempt }) = host.load(&key)? {
                joins.push((room_id, attempt));
            }
            host.remove(&key);
        }
        for key in host.scan(&ROUTES) {
            if let Some(Route::Join { room_id, attempt }) = host.load(&key)? {
                joins.push((room_id, attempt));
            }
            host.remove(&key);
        }
        for (room_id, attempt) in joins {
            self.join(host, &room_id, attempt)?;
        }
        // Files waiting for a text wait again, in full.
        self.rearm_held(host)?;
        // The last run's undelivered notices first: those this recovery
        // makes below are sent once, by whoever makes them.
        for key in host.scan(&OUTGOING) {
            let Ok(req) = OUTGOING.id(&key).parse::<u64>() else {
                continue;
            };
            if let Some(out) = host.load(&key)? {
                // One held by a 429 waits out its `retry_after_ms` again
                // in full: how much of it passed, the clock cannot tell
                // (it may have been set either way).
                let wait = out.hold_ms;
                if wait > 0 {
                    let timer = host.next_id()?;
                    host.save(&timer_key(timer), &TimerPurpose::Resend { request: req })?;
                    host.set_timer(timer, wait);
                    continue;
                }
                self.transmit(host, req, &out)?;
            }
        }
        let mut lost = Vec::new();
        for req in Replies::stored(host) {
            self.with_reply(host, req, |_, host, r| {
                pump::restarted(r, host.now());
                if r.ending.is_none() {
                    // Its agent request died with the last run.
                    lost.push((req, r.context_id.get().clone()));
                }
                Ok(Fate::Keep)
            })?;
        }
        for (req, ctx_id) in lost {
            // Its context first: the message goes back to a queue whose
            // connection state is this run's.
            let ctx = host.context(&ctx_id)?;
            self.recover_context(host, &ctx_id, ctx)?;
            self.on_agent_error(
                host,
                AgentError {
                    request: req,
                    kind: AgentErrorKind::Disconnected,
                    message: "the host restarted".into(),
                },
            )?;
        }
        for req in Replies::stored(host) {
            self.with_reply(host, req, |bot, host, r| bot.pump_fate(host, req, r))?;
        }
        self.recover_contexts(host, None)
    }

    /// Clear what a context kept of the last run (its connection state, a
    /// pending retry); it is saved as this run's.
    fn recover_context(
        &mut self,
        host: &mut dyn Host,
        id: &str,
        mut ctx: Context,
    ) -> Result<Context, String> {
        ctx.conn = Conn::Unknown;
        ctx.conn_detail = None;
        ctx.retry_timer = None;
        if ctx.active_ms == 0 {
            ctx.active_ms = host.now(); // older records: idle since now
        }
        host.save_context(id, &mut ctx)?;
        Ok(ctx)
    }

    /// Recover one page of contexts: a queue nothing else would wake
    /// starts (no request of the last run is left to end, and no status
    /// comes from a connection not opened). The next page waits for a
    /// timer, so a start stays within one call's budget however many
    /// contexts there are; only those marked `wait/` are visited (every
    /// one, once, in a store from before that index), and one already
    /// saved in this run is left as it is.
    pub(super) fn recover_contexts(
        &mut self,
        host: &mut dyn Host,
        after: Option<&str>,
    ) -> Result<(), String> {
        let run = host.load(&run_key())?.unwrap_or(0);
        let ids = host.contexts_to_recover(after, RECOVER_PAGE)?;
        for id in &ids {
            let ctx = host.context(id)?;
            if ctx.run == run {
                continue;
            }
            let had_flight = ctx.in_flight.is_some();
            let ctx = self.recover_context(host, id, ctx)?;
            let stranded = crate::planted::on(crate::planted::Bug::StrandedQueue) && !had_flight;
            if ctx.in_flight.is_none() && !ctx.queue.is_empty() && !stranded {
                self.start_next(host, id)?;
            }
        }
        match ids.last() {
            Some(last) if ids.len() == RECOVER_PAGE as usize => {
                let timer = host.next_id()?;
                let next = TimerPurpose::Recover {
                    after: last.clone(),
                };
                host.save(&timer_key(timer), &next)?;
                host.set_timer(timer, 0);
            }
            _ => host.save(&context_index_key(), &1)?,
        }
        Ok(())
    }

    pub(super) fn on_recover_timer(
        &mut self,
        host: &mut dyn Host,
        id: u64,
        after: &str,
    ) -> Result<(), String> {
        host.remove(&timer_key(id));
        self.recover_contexts(host, Some(after))
    }
}
