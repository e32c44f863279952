//! A reply while the agent writes it: chunks, the end or an error, the
//! homeserver's answers to its sends and edits, and the timers that flush
//! it or renew its typing notice. What to send when is the [`pump`]'s
//! decision; this room carries it out.

use super::pump::{self, Answer, Next, Target};
use super::{Bot, Fate, MAX_LOST, TYPING_RENEW_MS, TYPING_TIMEOUT_MS, cut};
use crate::host::Host;
use crate::state::{
    Contexts, Ending, Queued, Records, Reply, Route, StopFor, TimerPurpose, route_key, timer_key,
    user_key,
};
use crate::types::{AgentEnd, AgentError, AgentErrorKind, EditTarget, LogLevel, MatrixResult};

/// What follows once a failed request's reply is settled.
enum After {
    Nothing,
    /// The message went back to its queue: tell its sender (once).
    Requeued(Box<Queued>, &'static str),
    /// Its files could not go: it goes again without them, first in its
    /// queue, and its sender hears why.
    WithoutFiles(Box<Queued>, String, String),
    /// The reply is closed: the context's next message may go.
    StartNext(String),
}

impl Bot {
    pub(super) fn on_chunk(
        &mut self,
        host: &mut dyn Host,
        req: u64,
        chunk: &str,
    ) -> Result<(), String> {
        // A reply we already closed has no record: its chunks are dropped.
        self.with_reply(host, req, |bot, host, r| {
            if r.ending.is_some() || chunk.is_empty() {
                return Ok(Fate::Keep);
            }
            bot.replies.append(host, req, r, chunk);
            bot.pump(host, req, r)?;
            Ok(Fate::Keep)
        })?;
        Ok(())
    }

    pub(super) fn on_end(&mut self, host: &mut dyn Host, e: AgentEnd) -> Result<(), String> {
        let mut next = None;
        let mut asker = None;
        self.with_reply(host, e.request, |bot, host, r| {
            if r.ending.is_some() {
                return Ok(Fate::Untouched);
            }
            asker = Some(r.origin.sender.clone());
            r.ending = Some(match r.stopped_for {
                Some(StopFor::Edit) => Ending::Cut(
                    "✏️ *Stopped: the question was edited, so it is answered again.*".into(),
                ),
                Some(StopFor::Newer) => {
                    Ending::Cut("⏭️ *Stopped: your newer message is answered instead.*".into())
                }
                None if r.stop_requested => Ending::Cut("⏹️ *Stopped.*".into()),
                None => Ending::Complete,
            });
            let ctx_id = r.context_id.get().clone();
            let mut ctx = host.context(&ctx_id)?;
            ctx.tokens = ctx.tokens.saturating_add(e.tokens_used);
            ctx.messages = ctx.messages.saturating_add(1);
            ctx.busy_attempts = 0;
            ctx.active_ms = host.now();
            if ctx.in_flight == Some(e.request) {
                ctx.in_flight = None;
            }
            host.save_context(&ctx_id, &mut ctx)?;
            let ukey = user_key(&r.origin.sender);
            let mut user = host.load_or_default(&ukey)?;
            if !crate::planted::on(crate::planted::Bug::TokensNotCounted) {
                user.tokens = user.tokens.saturating_add(e.tokens_used);
                user.quota.add(host.now(), e.tokens_used);
            }
            user.messages = user.messages.saturating_add(1);
            host.save(&ukey, &user)?;
            next = Some(ctx_id);
            bot.close_reply(host, e.request, r)
        })?;
        if let Some(asker) = asker {
            self.release(host, &asker, e.request)?;
        }
        match next {
            Some(ctx_id) => self.start_next(host, &ctx_id),
            None => Ok(()),
        }
    }

    pub(super) fn on_agent_error(
        &mut self,
        host: &mut dyn Host,
        e: AgentError,
    ) -> Result<(), String> {
        let mut after = After::Nothing;
        let mut asker = None;
        self.with_reply(host, e.request, |bot, host, r| {
            if r.ending.is_some() {
                return Ok(Fate::Untouched);
            }
            asker = Some(r.origin.sender.clone());
            bot.settle_failed(host, &e, r, &mut after)
        })?;
        if let Some(asker) = asker {
            self.release(host, &asker, e.request)?;
        }
        match after {
            After::Nothing => Ok(()),
            After::Requeued(origin, text) => self.notice(host, &*origin, text),
            After::WithoutFiles(origin, text, ctx_id) => {
                self.notice(host, &*origin, &text)?;
                self.start_next(host, &ctx_id)
            }
            After::StartNext(ctx_id) => self.start_next(host, &ctx_id),
        }
    }

    /// The agent request behind `r` failed: back to the head of its queue
    /// if nothing was shown (within limits, so that one message cannot
    /// block its queue forever), or closed with a note saying why.
    fn settle_failed(
        &mut self,
        host: &mut dyn Host,
        e: &AgentError,
        r: &mut Reply,
        after: &mut After,
    ) -> Result<Fate, String> {
        let ctx_id = r.context_id.get().clone();
        let mut ctx = host.context(&ctx_id)?;
        if ctx.in_flight == Some(e.request) {
            ctx.in_flight = None;
        }
        host.log(
            LogLevel::Warn,
            &format!(
                "agent request {} failed: {:?} {}",
                e.request, e.kind, e.message
            ),
        );
        let nothing_shown = r.chunks == 0 && !r.stop_requested;
        // A file the host could not pass (too large once fetched, not
        // fetched): the message goes again without it, if anything is
        // left of it.
        let mut origin = r.origin.get().clone();
        if e.kind == AgentErrorKind::Attachment && nothing_shown {
            super::files::drop_failed(&mut origin.files, &e.message);
        }
        if e.kind == AgentErrorKind::Attachment
            && nothing_shown
            && origin.files.len() < r.origin.files.len()
            && (!origin.files.is_empty() || !origin.text.trim().is_empty())
        {
            ctx.queue.push_front(origin.clone());
            host.save_context(&ctx_id, &mut ctx)?;
            let (which, it) = match r.origin.files.len() - origin.files.len() {
                1 => ("A file", "it"),
                _ => ("Files", "them"),
            };
            let text = format!(
                "📎 {which} did not reach the agent ({}): your message goes without {it}.",
                cut(&e.message, 4 * super::ECHO_MAX)
            );
            *after = After::WithoutFiles(Box::new(origin), text, ctx_id);
            return Ok(Fate::Discard);
        }
        let requeue = nothing_shown
            && match e.kind {
                AgentErrorKind::Busy => ctx.busy_attempts < self.cfg.busy_retries,
                AgentErrorKind::Disconnected => r.origin.attempts < MAX_LOST,
                _ => false,
            };
        if requeue {
            let mut origin = r.origin.get().clone();
            let first_time = match e.kind {
                AgentErrorKind::Busy => {
                    ctx.busy_attempts += 1;
                    ctx.busy_attempts == 1
                }
                _ => {
                    origin.attempts += 1;
                    origin.attempts == 1
                }
            };
            let attempt = ctx.busy_attempts.max(origin.attempts);
            // Retry after a pause; a `ready` status cuts the pause short.
            let timer = host.next_id()?;
            host.save(
                &timer_key(timer),
                &TimerPurpose::Retry {
                    context_id: ctx_id.clone(),
                },
            )?;
            host.set_timer(timer, pump::backoff(attempt));
            if let Some(old) = ctx.retry_timer.replace(timer) {
                host.cancel_timer(old);
                host.remove(&timer_key(old));
            }
            ctx.queue.push_front(origin.clone());
            host.save_context(&ctx_id, &mut ctx)?;
            if first_time {
                let text = match e.kind {
                    AgentErrorKind::Busy => {
                        "⏳ The agent is busy: your message is queued (position 1) and will be retried."
                    }
                    _ => {
                        "⏳ The connection to the agent was lost before it answered: \
                         your message is queued and will be sent when it is back."
                    }
                };
                *after = After::Requeued(Box::new(origin), text);
            }
            return Ok(Fate::Discard);
        }
        ctx.busy_attempts = 0;
        host.save_context(&ctx_id, &mut ctx)?;
        if r.len > 0 {
            self.charge_estimate(host, &r.origin.sender, r.origin.text.len(), r.len)?;
        }
        let p = &self.cfg.command_prefix;
        let note = match e.kind {
            AgentErrorKind::Busy => {
                "⚠️ The agent stayed busy, so your message was not sent. Please try again in a \
                 moment."
                    .to_string()
            }
            AgentErrorKind::Disconnected if r.chunks == 0 && !r.stop_requested => {
                "⚠️ The connection to the agent kept dropping before it answered. Please try \
                 again later."
                    .to_string()
            }
            AgentErrorKind::Disconnected => {
                "⚠️ *Reply incomplete: the connection to the agent was lost.*".to_string()
            }
            AgentErrorKind::Protocol => {
                "⚠️ *Reply incomplete: the agent sent something malformed.*".to_string()
            }
            AgentErrorKind::ContextOverflow => format!(
                "⚠️ The agent's context is full. Send `{p}new` to start a fresh context, then \
                 ask again."
            ),
            AgentErrorKind::BadRequest => format!(
                "⚠️ The agent rejected this message: {}",
                cut(&e.message, 4 * super::ECHO_MAX)
            ),
            AgentErrorKind::Attachment => format!(
                "⚠️ This message did not reach the agent: {}",
                cut(&e.message, 4 * super::ECHO_MAX)
            ),
            AgentErrorKind::TooLong => {
                "⚠️ *Reply cut: it grew longer than this bot allows.*".to_string()
            }
            AgentErrorKind::Internal => {
                format!(
                    "⚠️ The agent failed: {}",
                    cut(&e.message, 4 * super::ECHO_MAX)
                )
            }
        };
        r.ending = Some(Ending::Cut(note));
        *after = After::StartNext(ctx_id);
        self.close_reply(host, e.request, r)
    }

    /// The agent is done with this reply: stop typing, show the final text.
    pub(super) fn close_reply(
        &mut self,
        host: &mut dyn Host,
        req: u64,
        r: &mut Reply,
    ) -> Result<Fate, String> {
        if !r.abandoned {
            host.set_typing(&r.origin.room_id, false, 0);
        }
        if let Some(t) = r.typing_timer.take() {
            host.cancel_timer(t);
            host.remove(&timer_key(t));
        }
        self.pump_fate(host, req, r)
    }

    /// Pump, and whether the reply is over.
    pub(super) fn pump_fate(
        &mut self,
        host: &mut dyn Host,
        req: u64,
        r: &mut Reply,
    ) -> Result<Fate, String> {
        Ok(if self.pump(host, req, r)? {
            Fate::Discard
        } else {
            Fate::Keep
        })
    }

    /// Bring the reply's messages up to date with its text (see [`pump`]).
    /// True once the reply is over and its final text is shown.
    fn pump(&mut self, host: &mut dyn Host, req: u64, r: &mut Reply) -> Result<bool, String> {
        if r.abandoned {
            return Ok(r.ending.is_some()); // what is left of it is dropped
        }
        let full = self.replies.lend_text(host, req, r)?;
        let result = self.carry_out(host, req, r, &full);
        self.replies.put_text(req, full);
        result
    }

    fn carry_out(
        &mut self,
        host: &mut dyn Host,
        req: u64,
        r: &mut Reply,
        full: &str,
    ) -> Result<bool, String> {
        let now = host.now();
        let pace = pump::Pace {
            interval_ms: self.cfg.edit_interval_ms,
            max_edits: self.cfg.max_edits_per_message,
        };
        let mut budget = pump::Budget {
            rate: &self.rate,
            open: self.replies.open_count(host),
            waiting: 0,
        };
        let mut next = pump::next(r, full, now, &pace, budget)?;
        // Streaming's spend is held back for the messages that wait in the
        // queue: counted only when an intermediate update would go (not
        // for every chunk: most wait for the interval).
        if let Next::Update(u) = &next
            && u.content.live
            && self.rate.limit().is_some()
        {
            budget.waiting = host.context(&r.context_id)?.queue.len();
            if budget.waiting > 0 {
                next = pump::next(r, full, now, &pace, budget)?;
            }
        }
        match next {
            Next::Idle => Ok(false),
            Next::Done => Ok(true),
            Next::FlushIn(delay) => {
                self.schedule_flush(host, req, r, now, delay)?;
                Ok(false)
            }
            Next::Update(update) => {
                let room_id = r.origin.room_id.clone();
                let request = match &update.target {
                    Target::Edit(event_id) => {
                        let request = host.next_id()?;
                        let target = EditTarget::Event(event_id.clone());
                        host.edit(request, &room_id, &target, &update.content);
                        request
                    }
                    Target::Again(request) => {
                        host.send(*request, &room_id, &update.content);
                        *request
                    }
                    Target::First => {
                        let request = host.next_id()?;
                        host.send(request, &room_id, &update.content);
                        request
                    }
                };
                host.save(&route_key(request), &Route::Part { reply: req })?;
                self.spend_into(&r.origin.room_id, now);
                pump::issued(r, &update, request, now);
                Ok(false)
            }
        }
    }

    fn schedule_flush(
        &mut self,
        host: &mut dyn Host,
        req: u64,
        r: &mut Reply,
        now: u64,
        delay: u64,
    ) -> Result<(), String> {
        let id = match r.flush_timer {
            Some(id) => id,
            None => {
                let id = host.next_id()?;
                host.save(&timer_key(id), &TimerPurpose::Flush { reply: req })?;
                r.flush_timer = Some(id);
                id
            }
        };
        // Most chunks of a reply fall within one interval and ask for the
        // same time: set it once.
        if self.replies.flush_at(req, id, now.saturating_add(delay)) {
            host.set_timer(id, delay);
        }
        Ok(())
    }

    /// The homeserver answered one of the reply's sends or edits.
    pub(super) fn on_part_result(
        &mut self,
        host: &mut dyn Host,
        reply: u64,
        res: MatrixResult,
    ) -> Result<(), String> {
        host.remove(&route_key(res.request));
        self.with_reply(host, reply, |bot, host, r| {
            let now = host.now();
            let sent = |r: &Reply| r.parts.iter().filter(|p| p.event_id.is_some()).count();
            let before = sent(r);
            match pump::answered(r, res.request, &res.outcome, now) {
                Answer::Stale => Ok(Fate::Untouched),
                Answer::Pump => {
                    if sent(r) > before
                        && let Ok(event_id) = &res.outcome
                    {
                        // A new message of the answer: reactions on it reach it.
                        let question = r.origin.event_id.clone();
                        bot.note_answer(host, &question, event_id)?;
                    }
                    bot.pump_fate(host, reply, r)
                }
                Answer::GiveUp => {
                    if let Err(err) = &res.outcome {
                        host.log(
                            LogLevel::Error,
                            &format!(
                                "giving up reply {reply} in {}: {:?} {}",
                                r.origin.room_id, err.kind, err.message
                            ),
                        );
                    }
                    Ok(abandon(host, r))
                }
            }
        })?;
        Ok(())
    }

    /// Update the reply's message (throttle or rate limit elapsed).
    pub(super) fn on_flush_timer(
        &mut self,
        host: &mut dyn Host,
        id: u64,
        reply: u64,
    ) -> Result<(), String> {
        self.replies.flush_done(reply);
        let found = self.with_reply(host, reply, |bot, host, r| bot.pump_fate(host, reply, r))?;
        if !found {
            host.remove(&timer_key(id));
        }
        Ok(())
    }

    /// Renew the typing notice while the agent works.
    pub(super) fn on_typing_timer(
        &mut self,
        host: &mut dyn Host,
        id: u64,
        reply: u64,
    ) -> Result<(), String> {
        match self.replies.peek(host, reply)? {
            Some(r) if r.ending.is_none() && !r.abandoned => {
                let room = r.origin.room_id.clone();
                host.set_typing(&room, true, TYPING_TIMEOUT_MS);
                host.set_timer(id, TYPING_RENEW_MS);
            }
            _ => host.remove(&timer_key(id)),
        }
        Ok(())
    }
}

/// The room will not take the reply (it refused it, or the bot is leaving
/// it): nothing more goes there, not even typing. It is dropped now if the
/// agent is done, else kept until the agent ends, so its last chunks are
/// recognised and dropped and its context moves on.
pub(super) fn abandon(host: &mut dyn Host, r: &mut Reply) -> Fate {
    for t in [r.flush_timer.take(), r.typing_timer.take()]
        .into_iter()
        .flatten()
    {
        host.cancel_timer(t);
        host.remove(&timer_key(t));
    }
    if r.ending.is_some() {
        return Fate::Discard;
    }
    host.agent_cancel(&r.context_id);
    r.stop_requested = true;
    r.abandoned = true;
    Fate::Keep
}
