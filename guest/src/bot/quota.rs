//! Token quotas, as the bot keeps them: a message goes to the agent only
//! while its sender has quota left, and a user with a quota has one reply
//! being written at a time (their next message, in another context, waits
//! for it), so that what they spend passes their limit by one reply at
//! most. Admins are exempt. What is spent is counted when the agent ends
//! a reply, in the user's record, so it survives restarts.

use super::Bot;
use crate::host::Host;
use crate::quota::{self, Limits};
use crate::state::{Records, User, user_key};

/// Whether a message may go to the agent now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Gate {
    Open,
    /// The sender's reply elsewhere is being written: this waits for it.
    Hold,
    /// The sender is over quota: the refusal that answers the message.
    Refuse(String),
}

impl Bot {
    /// The limits of `user`: none for an admin.
    pub(super) fn limits(&self, user: &str) -> Limits {
        if self.is_admin(user) {
            Limits::default()
        } else {
            self.cfg.quotas.limits(user)
        }
    }

    /// Whether a message from `sender` may go to the agent now.
    pub(super) fn gate(&mut self, host: &mut dyn Host, sender: &str) -> Result<Gate, String> {
        let limits = self.limits(sender);
        if !limits.any() {
            return Ok(Gate::Open);
        }
        let user: User = host.load_or_default(&user_key(sender))?;
        let now = host.now();
        if let Some(reached) = quota::reached(limits, &user.quota, now) {
            return Ok(Gate::Refuse(quota::refusal(&reached, now)));
        }
        Ok(if self.busy_elsewhere(host, &user)? {
            Gate::Hold
        } else {
            Gate::Open
        })
    }

    /// Whether the reply `user` is charged for is still being written (a
    /// mark left by a run that ended without its outcome counts nothing).
    fn busy_elsewhere(&mut self, host: &mut dyn Host, user: &User) -> Result<bool, String> {
        let Some(req) = user.busy else {
            return Ok(false);
        };
        if crate::planted::on(crate::planted::Bug::QuotaIgnoresInFlight) {
            return Ok(false);
        }
        Ok(self
            .replies
            .peek(host, req)?
            .is_some_and(|r| r.ending.is_none()))
    }

    /// A reply to `sender` ended in an error after `reply_bytes` of text:
    /// its estimated tokens count toward their quota (not their reported
    /// total, which holds what the agent reported).
    pub(super) fn charge_estimate(
        &mut self,
        host: &mut dyn Host,
        sender: &str,
        question_bytes: usize,
        reply_bytes: usize,
    ) -> Result<(), String> {
        if !self.limits(sender).any() {
            return Ok(());
        }
        let key = user_key(sender);
        let mut user: User = host.load_or_default(&key)?;
        let now = host.now();
        user.quota
            .add(now, quota::estimate(question_bytes, reply_bytes));
        host.save(&key, &user)
    }

    /// Refuse `q` (its sender is over quota): the refusal answers it, and
    /// names everyone whose message was collected into it.
    pub(super) fn refuse(
        &mut self,
        host: &mut dyn Host,
        q: &crate::state::Queued,
        text: &str,
    ) -> Result<(), String> {
        if q.with.len() < 2 {
            return self.notice(host, q, text);
        }
        let text = format!(
            "{text} The messages collected with it were not sent either: please send them \
             again later."
        );
        let mentions = if q.is_direct {
            Vec::new()
        } else {
            q.with.clone()
        };
        self.send_notice(
            host,
            &q.room_id,
            &text,
            Some(&q.event_id),
            q.thread_root.as_deref(),
            mentions,
        )
    }

    /// Context `ctx_id` waits for `sender`'s reply elsewhere: it is woken
    /// when that reply ends ([`Bot::release`]).
    pub(super) fn hold(
        &mut self,
        host: &mut dyn Host,
        sender: &str,
        ctx_id: &str,
    ) -> Result<(), String> {
        let key = user_key(sender);
        let mut user: User = host.load_or_default(&key)?;
        if !user.held.iter().any(|c| c == ctx_id) {
            user.held.push(ctx_id.to_string());
            host.save(&key, &user)?;
        }
        Ok(())
    }

    /// Request `req` for `sender` went to the agent: while it is being
    /// written, their messages elsewhere wait (only if a quota applies).
    pub(super) fn mark_busy(
        &mut self,
        host: &mut dyn Host,
        sender: &str,
        req: u64,
    ) -> Result<(), String> {
        if !self.limits(sender).any() {
            return Ok(());
        }
        let key = user_key(sender);
        let mut user: User = host.load_or_default(&key)?;
        user.busy = Some(req);
        host.save(&key, &user)
    }

    /// Request `req` for `sender` is over (answered, failed or sent back
    /// to its queue): the contexts that waited for it go on.
    pub(super) fn release(
        &mut self,
        host: &mut dyn Host,
        sender: &str,
        req: u64,
    ) -> Result<(), String> {
        let key = user_key(sender);
        let Some(mut user) = host.load::<User>(&key)? else {
            return Ok(());
        };
        if user.busy != Some(req) && user.held.is_empty() {
            return Ok(());
        }
        if user.busy == Some(req) {
            user.busy = None;
        }
        let held = std::mem::take(&mut user.held);
        host.save(&key, &user)?;
        for ctx_id in held {
            self.start_next(host, &ctx_id)?;
        }
        Ok(())
    }
}
