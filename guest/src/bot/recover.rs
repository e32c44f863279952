//! After a host restart the previous run's agent requests, timers and
//! Matrix requests are gone. Replies cut by the restart end with a note
//! (or go back to their queue if nothing was shown), replies that were
//! finishing are finished, undelivered notices are sent again with their
//! old request ids, joins not yet confirmed are made again, and every
//! context with messages waiting starts again
//! (its submit makes the host open the connection it needs: only the
//! shared one is opened at start).

use super::replies::Replies;
use super::{Bot, Fate, pump};
use crate::host::Host;
use crate::state::{
    CONTEXTS, Conn, OUTGOING, ROUTES, Records, Route, TIMERS, TimerPurpose, route_key,
};
use crate::types::{AgentError, AgentErrorKind, MessageContent};

impl Bot {
    pub(super) fn recover(&mut self, host: &mut dyn Host) -> Result<(), String> {
        let mut lost = Vec::new();
        let mut waiting = Vec::new();
        for key in host.scan(&CONTEXTS) {
            let Some(mut ctx) = host.load(&key)? else {
                continue;
            };
            ctx.conn = Conn::Unknown;
            ctx.conn_detail = None;
            ctx.retry_timer = None;
            lost.extend(ctx.in_flight);
            if ctx.in_flight.is_none() && !ctx.queue.is_empty() {
                waiting.push(CONTEXTS.id(&key).to_string());
            }
            host.save(&key, &ctx)?;
        }
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
        for req in Replies::stored(host) {
            self.with_reply(host, req, |_, _, r| {
                pump::restarted(r);
                if r.ending.is_none() && !lost.contains(&req) {
                    lost.push(req); // a stream no context knew about any more
                }
                Ok(Fate::Keep)
            })?;
        }
        for req in lost {
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
        // A queue nothing else would wake: no request of the last run is
        // left to end, and no status comes from a connection not opened.
        for ctx_id in waiting {
            self.start_next(host, &ctx_id)?;
        }
        for key in host.scan(&OUTGOING) {
            let Ok(req) = OUTGOING.id(&key).parse::<u64>() else {
                continue;
            };
            if let Some(out) = host.load(&key)? {
                host.save(&route_key(req), &Route::Notice)?;
                host.send(req, &out.room_id, &MessageContent::from(&out.content));
            }
        }
        Ok(())
    }
}
