//! What people do to a question after asking it, and to its answer:
//! react (🛑 stops its reply, ❌ withdraws it while it waits; any other
//! reaction on an answer is feedback for the agent), edit it (a queued
//! question takes the new text; one answered or being answered is asked
//! again, per `on_edit`) and redact it (withdrawn, or its reply stopped).
//!
//! A question is found by its event id (`ask/`), an answer by one of the
//! bot's event ids (`ans/`); anything else is ignored. Where the question
//! is now (queued, being answered, done) is read from its context. Each
//! event acts once: its id is remembered like a message's (a replayed
//! batch changes nothing).

use surfaces_contract::{Addressed, address};

use super::{Bot, Fate};
use crate::config::{OnEdit, reaction_key};
use crate::host::Host;
use crate::state::{Asked, Contexts, Queued, Records, StopFor, answer_key, asked_key};
use crate::types::{
    AgentFeedback, LogLevel, MessageEdited, Reaction, Redacted, RoomMessage, Sender,
};

/// Feedback carries this much of the question.
const EXCERPT_CHARS: usize = 200;

/// Where a question is now.
enum Status {
    Queued,
    /// Its reply (this request) is being written.
    Answering(u64),
    /// Answered, stopped, withdrawn or failed: nothing in flight.
    Done,
}

impl Bot {
    pub(super) fn on_reaction(&mut self, host: &mut dyn Host, r: Reaction) -> Result<(), String> {
        if r.sender == self.info.bot_user_id {
            return Ok(());
        }
        let Some((question, asked, on_answer)) = question_of(host, &r.target)? else {
            return Ok(()); // not about a question of ours
        };
        if self.already_seen(host, &r.event_id)? {
            return Ok(());
        }
        let key = reaction_key(&r.key);
        if key == self.cfg.stop_reaction || key == self.cfg.withdraw_reaction {
            if r.sender != asked.sender && !self.is_admin(&r.sender) {
                host.log(
                    LogLevel::Info,
                    &format!(
                        "{} reacted {key} to {question}, asked by {}: only they or an admin can stop it",
                        r.sender, asked.sender
                    ),
                );
                return Ok(());
            }
            return match self.status(host, &question, &asked)? {
                Status::Queued => {
                    let Some(q) = self.withdraw(host, &question, &asked)? else {
                        return Ok(());
                    };
                    self.notice(
                        host,
                        &q,
                        "🗑️ Withdrawn: this message will not go to the agent.",
                    )
                }
                Status::Answering(req) => self.stop_reply(host, req, None),
                Status::Done => Ok(()),
            };
        }
        if on_answer {
            let feedback = AgentFeedback {
                key,
                sender: Sender {
                    id: r.sender.clone(),
                    display_name: r.sender_display_name.clone(),
                },
                question: asked.excerpt.clone(),
            };
            host.agent_feedback(&asked.context_id, &feedback);
        }
        Ok(())
    }

    pub(super) fn on_edited(
        &mut self,
        host: &mut dyn Host,
        e: MessageEdited,
    ) -> Result<(), String> {
        if e.sender == self.info.bot_user_id {
            return Ok(());
        }
        let key = asked_key(&e.original);
        let Some(mut asked) = host.load(&key)? else {
            return Ok(()); // not a question the bot took (a command, or not for it)
        };
        if asked.sender != e.sender || e.origin_server_ts < asked.revised_ms {
            return Ok(()); // not its author's, or older than the text it holds
        }
        if self.already_seen(host, &e.event_id)? {
            return Ok(());
        }
        let addressed = address(
            &e.body,
            e.is_direct,
            e.mentions_bot,
            e.is_notice,
            &self.cfg.command_prefix,
            &self.info.bot_user_id,
            &self.info.bot_display_name,
        );
        let text = match addressed {
            Addressed::Text(t) if !t.is_empty() => t.to_string(),
            Addressed::Text(_) | Addressed::Command(_) | Addressed::No => {
                host.log(
                    LogLevel::Info,
                    &format!(
                        "{} edited {} into no question: it stands as asked",
                        e.sender, e.original
                    ),
                );
                return Ok(());
            }
        };
        asked.revised_ms = e.origin_server_ts;
        asked.excerpt = excerpt(&text);
        host.save(&key, &asked)?;
        match self.status(host, &e.original, &asked)? {
            Status::Queued => {
                let mut ctx = host.context(&asked.context_id)?;
                for q in ctx.queue.iter_mut().filter(|q| q.event_id == e.original) {
                    q.text = text.clone();
                }
                host.save_context(&asked.context_id, &mut ctx)
            }
            Status::Answering(_) | Status::Done if self.cfg.on_edit == OnEdit::Ignore => Ok(()),
            Status::Done if crate::planted::on(crate::planted::Bug::EditNotReasked) => Ok(()),
            Status::Answering(req) => {
                // The reply stops; the edited question goes first once it has.
                let q = self.question(&e, &asked, text, host.now());
                let mut ctx = host.context(&asked.context_id)?;
                ctx.queue.push_front(q);
                host.save_context(&asked.context_id, &mut ctx)?;
                self.stop_reply(host, req, Some(StopFor::Edit))
            }
            Status::Done => {
                let q = self.question(&e, &asked, text, host.now());
                let m = RoomMessage {
                    room_id: e.room_id.clone(),
                    event_id: e.original.clone(),
                    sender: e.sender.clone(),
                    sender_display_name: e.sender_display_name.clone(),
                    body: e.body.clone(),
                    thread_root: asked.thread_root.clone(),
                    reply_to: None,
                    is_direct: e.is_direct,
                    mentions_bot: e.mentions_bot,
                    is_notice: e.is_notice,
                    origin_server_ts: e.origin_server_ts,
                    attachments: Vec::new(),
                };
                self.enqueue(host, &m, q)
            }
        }
    }

    pub(super) fn on_redacted(&mut self, host: &mut dyn Host, d: Redacted) -> Result<(), String> {
        if d.sender == self.info.bot_user_id {
            return Ok(());
        }
        if self.unhold(host, &d.room_id, &d.target)? {
            host.log(
                LogLevel::Info,
                &format!(
                    "{} was redacted by {}: that file goes nowhere",
                    d.target, d.sender
                ),
            );
            return Ok(());
        }
        // An answer removed: its reply need not go on either.
        let Some((question, asked, _)) = question_of(host, &d.target)? else {
            return Ok(());
        };
        if self.already_seen(host, &d.event_id)? {
            return Ok(());
        }
        match self.status(host, &question, &asked)? {
            Status::Queued => {
                // The question is gone: nothing to reply to, nothing said.
                self.withdraw(host, &question, &asked)?;
                host.log(
                    LogLevel::Info,
                    &format!("{question} was redacted by {}: withdrawn", d.sender),
                );
                Ok(())
            }
            Status::Answering(req) => self.stop_reply(host, req, None),
            Status::Done => Ok(()),
        }
    }

    fn status(
        &mut self,
        host: &mut dyn Host,
        question: &str,
        asked: &Asked,
    ) -> Result<Status, String> {
        let ctx = host.context(&asked.context_id)?;
        if ctx.queue.iter().any(|q| q.event_id == question) {
            return Ok(Status::Queued);
        }
        if let Some(req) = ctx.in_flight
            && let Some(r) = self.replies.peek(host, req)?
            && r.origin.event_id == question
            && r.ending.is_none()
        {
            return Ok(Status::Answering(req));
        }
        Ok(Status::Done)
    }

    /// Take a waiting question out of its queue.
    fn withdraw(
        &mut self,
        host: &mut dyn Host,
        question: &str,
        asked: &Asked,
    ) -> Result<Option<Queued>, String> {
        let mut ctx = host.context(&asked.context_id)?;
        let Some(at) = ctx.queue.iter().position(|q| q.event_id == question) else {
            return Ok(None);
        };
        if crate::planted::on(crate::planted::Bug::WithdrawnStillSent) {
            return Ok(ctx.queue.get(at).cloned());
        }
        let q = ctx.queue.remove(at);
        host.save_context(&asked.context_id, &mut ctx)?;
        // The head may have been held for its sender's quota: whoever is
        // next may go now.
        self.start_next(host, &asked.context_id)?;
        Ok(q)
    }

    /// Stop a reply being written (as `stop` does); `why`, when it is for
    /// something newer (its ending says so).
    pub(super) fn stop_reply(
        &mut self,
        host: &mut dyn Host,
        req: u64,
        why: Option<StopFor>,
    ) -> Result<(), String> {
        self.with_reply(host, req, |_, host, r| {
            if r.stop_requested {
                return Ok(Fate::Untouched);
            }
            r.stop_requested = true;
            r.stopped_for = why;
            host.agent_cancel(&r.context_id);
            Ok(Fate::Keep)
        })?;
        Ok(())
    }

    /// The edited question, to queue.
    fn question(&self, e: &MessageEdited, asked: &Asked, text: String, now: u64) -> Queued {
        Queued {
            room_id: e.room_id.clone(),
            event_id: e.original.clone(),
            sender: e.sender.clone(),
            display_name: e.sender_display_name.clone(),
            text,
            thread_root: asked.thread_root.clone(),
            is_direct: e.is_direct,
            attempts: 0,
            with: Vec::new(),
            files: asked.files.clone(),
            queued_ms: cfg!(feature = "next-schema").then_some(now),
        }
    }

    /// A question was queued: note where it went (kept, for a question
    /// asked again, with the answers it had).
    pub(super) fn note_asked(
        &mut self,
        host: &mut dyn Host,
        context_id: &str,
        m: &RoomMessage,
        q: &Queued,
    ) -> Result<(), String> {
        let key = asked_key(&q.event_id);
        let asked = match host.load(&key)? {
            Some(mut a) => {
                a.excerpt = excerpt(&q.text);
                a
            }
            None => Asked {
                context_id: context_id.to_string(),
                sender: q.sender.clone(),
                thread_root: q.thread_root.clone(),
                revised_ms: m.origin_server_ts,
                excerpt: excerpt(&q.text),
                answers: Vec::new(),
                files: q.files.clone(),
            },
        };
        host.save(&key, &asked)
    }

    /// One of the bot's messages answering `question` got its event id.
    pub(super) fn note_answer(
        &mut self,
        host: &mut dyn Host,
        question: &str,
        event_id: &str,
    ) -> Result<(), String> {
        let key = asked_key(question);
        let Some(mut asked) = host.load(&key)? else {
            return Ok(());
        };
        host.save(&answer_key(event_id), &question.to_string())?;
        asked.answers.push(event_id.to_string());
        host.save(&key, &asked)
    }
}

/// The question `target` is, or is the answer to (then `true`), with
/// where it went.
fn question_of(host: &mut dyn Host, target: &str) -> Result<Option<(String, Asked, bool)>, String> {
    if let Some(asked) = host.load(&asked_key(target))? {
        return Ok(Some((target.to_string(), asked, false)));
    }
    let Some(question) = host.load(&answer_key(target))? else {
        return Ok(None);
    };
    Ok(host
        .load(&asked_key(&question))?
        .map(|a| (question, a, true)))
}

/// Forget a question and the index of its answers (with its `seen/`).
pub(super) fn forget(host: &mut dyn Host, event_id: &str) -> Result<(), String> {
    let key = asked_key(event_id);
    if let Some(asked) = host.load(&key)? {
        for a in &asked.answers {
            host.remove(&answer_key(a));
        }
        host.remove(&key);
    }
    Ok(())
}

fn excerpt(text: &str) -> String {
    super::cut(text, EXCERPT_CHARS).to_string()
}
