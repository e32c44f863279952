//! Room membership: join on invite (again after a failure, and after a
//! restart, until the homeserver confirms it: the invite is not seen twice),
//! leave a room where the bot is alone, and first forget what it would
//! still have sent there.

use super::replies::Replies;
use super::{Bot, Fate, pump, stream};
use crate::host::Host;
use crate::state::{
    Contexts, HELD, OUTGOING, Records, Route, TimerPurpose, WAITING, route_key, timer_key,
};
use crate::types::{Invite, LogLevel, MatrixError, MatrixErrorKind, MembersChanged};

impl Bot {
    pub(super) fn on_invite(&mut self, host: &mut dyn Host, i: Invite) -> Result<(), String> {
        if !self.cfg.auto_join {
            return Ok(());
        }
        host.log(
            LogLevel::Info,
            &format!("joining {} on invite from {}", i.room_id, i.inviter),
        );
        self.join(host, &i.room_id, 1)
    }

    pub(super) fn join(
        &mut self,
        host: &mut dyn Host,
        room_id: &str,
        attempt: u32,
    ) -> Result<(), String> {
        let req = host.next_id()?;
        let route = Route::Join {
            room_id: room_id.to_string(),
            attempt,
        };
        host.save(&route_key(req), &route)?;
        // Synapse counts a membership event against the same limit as
        // messages (two joins, then eleven events in ten seconds met a 429
        // under its defaults).
        self.rate.spent(host.now());
        host.join(req, room_id);
        Ok(())
    }

    /// The homeserver's answer to a join: done, or tried again later when
    /// the failure may pass (a rate limit, an outage).
    pub(super) fn on_join_result(
        &mut self,
        host: &mut dyn Host,
        request: u64,
        room_id: String,
        attempt: u32,
        outcome: Result<String, MatrixError>,
    ) -> Result<(), String> {
        host.remove(&route_key(request));
        let Err(e) = outcome else {
            return Ok(());
        };
        // A rate limit or an outage passes: the join waits it out, however
        // long (a try a minute at most); an unknown error, eight times.
        let passes = match e.kind {
            MatrixErrorKind::RateLimited | MatrixErrorKind::Unavailable => true,
            MatrixErrorKind::Other => attempt < pump::MAX_FAILURES,
            MatrixErrorKind::Forbidden | MatrixErrorKind::NotFound | MatrixErrorKind::TooLarge => {
                false
            }
        };
        if !passes {
            host.log(
                LogLevel::Warn,
                &format!(
                    "cannot join {room_id} ({:?}: {}); giving up after {attempt} attempt(s)",
                    e.kind, e.message
                ),
            );
            return Ok(());
        }
        let delay = e
            .retry_after_ms
            .unwrap_or_else(|| pump::backoff(attempt))
            .max(pump::backoff(1));
        host.log(
            LogLevel::Warn,
            &format!(
                "cannot join {room_id} yet ({:?}: {}); trying again in {delay} ms",
                e.kind, e.message
            ),
        );
        let timer = host.next_id()?;
        let next = TimerPurpose::Join {
            room_id,
            attempt: attempt + 1,
        };
        host.save(&timer_key(timer), &next)?;
        host.set_timer(timer, delay);
        Ok(())
    }

    pub(super) fn on_join_timer(
        &mut self,
        host: &mut dyn Host,
        id: u64,
        room_id: &str,
        attempt: u32,
    ) -> Result<(), String> {
        host.remove(&timer_key(id));
        self.join(host, room_id, attempt)
    }

    pub(super) fn on_members(
        &mut self,
        host: &mut dyn Host,
        m: MembersChanged,
    ) -> Result<(), String> {
        if m.joined <= 1 {
            self.forget_room(host, &m.room_id)?;
            let req = host.next_id()?;
            host.save(&route_key(req), &Route::Membership)?;
            host.log(
                LogLevel::Info,
                &format!("leaving {}: nobody else is here", m.room_id),
            );
            self.rate.spent(host.now());
            host.leave(req, &m.room_id);
        }
        Ok(())
    }

    /// Nobody is left in `room_id` to read what the bot would still send
    /// there, and the homeserver would refuse it once the bot has left:
    /// messages from there still queued are dropped, replies there are
    /// stopped (the agent told to cancel) and dropped, notices waiting to
    /// go there are not sent, and files waiting there for a text are
    /// forgotten.
    fn forget_room(&mut self, host: &mut dyn Host, room_id: &str) -> Result<(), String> {
        for key in host.scan(&WAITING) {
            let ctx_id = WAITING.id(&key).to_string();
            let mut ctx = host.context(&ctx_id)?;
            let before = ctx.queue.len();
            ctx.queue.retain(|q| q.room_id != room_id);
            if ctx.queue.len() != before {
                host.save_context(&ctx_id, &mut ctx)?;
            }
        }
        for req in Replies::stored(host) {
            self.with_reply(host, req, |_, host, r| {
                if r.origin.room_id != room_id {
                    return Ok(Fate::Untouched);
                }
                Ok(stream::abandon(host, r))
            })?;
        }
        for key in host.scan(&OUTGOING) {
            if host.load(&key)?.is_some_and(|o| o.room_id == room_id) {
                host.remove(&key);
                // Its result, if one is on the way, is then ignored.
                if let Ok(req) = OUTGOING.id(&key).parse::<u64>() {
                    host.remove(&route_key(req));
                }
            }
        }
        for key in host.scan(&HELD) {
            if let Some(held) = host.load(&key)?
                && held.room_id == room_id
            {
                host.cancel_timer(held.timer);
                host.remove(&timer_key(held.timer));
                host.remove(&key);
            }
        }
        Ok(())
    }
}
