//! The queue of each agent context: a message waits while the agent is
//! busy or reconnecting (its position is shown), or is refused when the
//! queue is full; the head goes to the agent as soon as it is free.

use std::collections::BTreeSet;

use super::quota::Gate;
use super::{Bot, TYPING_RENEW_MS, TYPING_TIMEOUT_MS};
use crate::config::{QueueMode, Scope};
use crate::host::Host;
use crate::render;
use crate::state::{
    Conn, Context, Contexts, QueuePlace, Queued, Records, Reply, StopFor, TimerPurpose, User,
    timer_key, user_key,
};
use crate::types::{AgentMessage, AgentStatus, ConnectionState, RoomMessage, Sender};

impl Bot {
    pub(super) fn context_id(
        &self,
        room_id: &str,
        thread_root: Option<&str>,
        event_id: &str,
    ) -> String {
        match self.cfg.scope {
            Scope::Shared => "shared".to_string(),
            Scope::Room => format!("room:{room_id}"),
            Scope::Thread => format!("thread:{room_id}:{}", thread_root.unwrap_or(event_id)),
        }
    }

    pub(super) fn enqueue(
        &mut self,
        host: &mut dyn Host,
        m: &RoomMessage,
        q: Queued,
    ) -> Result<(), String> {
        let ctx_id = self.context_id(&q.room_id, q.thread_root.as_deref(), &q.event_id);
        let mut ctx = host.context(&ctx_id)?;
        let waiting = !ctx.queue.is_empty()
            || ctx.in_flight.is_some()
            || ctx.retry_timer.is_some()
            || ctx.conn == Conn::Disconnected;
        if waiting && ctx.queue.len() >= self.cfg.queue_limit {
            let text = format!(
                "⚠️ The agent is busy and {} messages are already waiting. \
                 Please send this again in a little while.",
                ctx.queue.len()
            );
            return self.notice(host, m, &text);
        }
        if let Gate::Refuse(text) = self.gate(host, &q.sender)? {
            return self.notice(host, m, &text);
        }
        self.note_asked(host, &ctx_id, m, &q)?;
        let mode = self.cfg.queue_mode(&q.room_id);
        // Interrupt: the asker's answer being written stops; this message
        // is asked next (it keeps its place behind others' messages).
        let interrupted = match ctx.in_flight {
            Some(req) if mode == QueueMode::Interrupt && ctx.queue.is_empty() => self
                .replies
                .peek(host, req)?
                .is_some_and(|r| r.origin.sender == q.sender && !r.stop_requested)
                .then_some(req),
            _ => None,
        };
        ctx.queue.push_back(q);
        ctx.active_ms = host.now();
        host.save_context(&ctx_id, &mut ctx)?;
        if let Some(req) = interrupted {
            return self.stop_reply(host, req, Some(StopFor::Newer));
        }
        self.start_next(host, &ctx_id)?;
        let ctx = host.context(&ctx_id)?;
        let Some(position) = ctx.queue.iter().position(|x| x.event_id == m.event_id) else {
            return Ok(()); // on its way to the agent
        };
        let held =
            ctx.in_flight.is_none() && ctx.retry_timer.is_none() && ctx.conn != Conn::Disconnected;
        if held && position == 0 {
            let text = format!(
                "⏳ Your answer in another conversation is still being written (your token quota \
                 counts one at a time): this message goes to the agent when it ends. React {} to \
                 withdraw it.",
                self.cfg.withdraw_reaction
            );
            return self.notice(host, m, &text);
        }
        let why = match ctx.conn {
            // The head waits for its sender's answer elsewhere (quota).
            _ if held => "A message ahead of yours waits its turn",
            Conn::Disconnected => "The agent is reconnecting",
            // The message ahead waits for the connection, not for an answer.
            Conn::Unknown | Conn::Connecting if ctx.in_flight.is_some() => {
                "The agent is still connecting"
            }
            Conn::Unknown | Conn::Connecting | Conn::Ready | Conn::Busy => "The agent is busy",
        };
        if mode == QueueMode::Collect {
            let text = format!(
                "⏳ {why}: your message will go to it together with any others sent here \
                 meanwhile, as one. React {} to withdraw it.",
                self.cfg.withdraw_reaction
            );
            return self.notice(host, m, &text);
        }
        let index = position;
        let position = index
            + if crate::planted::on(crate::planted::Bug::QueuePositionSkipped) {
                2
            } else {
                1
            };
        let text = format!(
            "⏳ {why}: your message is queued (position {position}). React {} to withdraw it.",
            self.cfg.withdraw_reaction
        );
        let place = QueuePlace {
            context_id: ctx_id,
            event_id: m.event_id.clone(),
            index,
            position,
        };
        self.queue_notice(host, m, &text, place)
    }

    /// Give the head of the context's queue to the agent, if it is free.
    pub(super) fn start_next(&mut self, host: &mut dyn Host, ctx_id: &str) -> Result<(), String> {
        let mut ctx: Context = host.context(ctx_id)?;
        if ctx.in_flight.is_some() || ctx.retry_timer.is_some() || ctx.conn == Conn::Disconnected {
            return Ok(());
        }
        // The head goes if its sender has quota left (a refusal answers
        // it, and the next is tried); it waits while their reply in
        // another context is being written.
        loop {
            let Some(head) = ctx.queue.front() else {
                return Ok(());
            };
            let sender = head.sender.clone();
            match self.gate(host, &sender)? {
                Gate::Open => break,
                Gate::Hold => return self.hold(host, &sender, ctx_id),
                Gate::Refuse(text) => {
                    let Some(refused) = ctx.queue.pop_front() else {
                        return Ok(());
                    };
                    host.save_context(ctx_id, &mut ctx)?;
                    self.refuse(host, &refused, &text)?;
                }
            }
        }
        let Some(mut q) = ctx.queue.pop_front() else {
            return Ok(());
        };
        if self.cfg.queue_mode(&q.room_id) == QueueMode::Collect {
            // Only messages whose senders may send now join: the answer
            // counts for the last of them (the agent sees it as theirs).
            let mut may = BTreeSet::new();
            for s in ctx
                .queue
                .iter()
                .map(|x| x.sender.clone())
                .collect::<BTreeSet<_>>()
            {
                if self.gate(host, &s)? == Gate::Open {
                    may.insert(s);
                }
            }
            q = collect(q, &mut ctx.queue, |s| may.contains(s));
        }
        let req = host.next_id()?;
        let user: User = host.load_or_default(&user_key(&q.sender))?;
        let skills = self
            .cfg
            .skills
            .iter()
            .filter(|s| user.skills.get(*s).copied().unwrap_or(false))
            .cloned()
            .collect();
        let message = AgentMessage {
            text: q.text.clone(),
            sender: Sender {
                id: q.sender.clone(),
                display_name: q.display_name.clone(),
            },
            skills,
            attachments: super::files::for_agent(&q.files),
        };
        host.agent_submit(req, ctx_id, &message);
        host.read_receipt(&q.room_id, &q.event_id);
        host.set_typing(&q.room_id, true, TYPING_TIMEOUT_MS);
        let typing_timer = host.next_id()?;
        host.save(
            &timer_key(typing_timer),
            &TimerPurpose::Typing { reply: req },
        )?;
        host.set_timer(typing_timer, TYPING_RENEW_MS);
        let budget = (self.info.max_event_bytes as usize).saturating_sub(render::EDIT_OVERHEAD);
        let q = match ctx.queue.front() {
            Some(next) if crate::planted::on(crate::planted::Bug::WrongMessage) => next.clone(),
            _ => q,
        };
        let sender = q.sender.clone();
        let reply = Reply::new(ctx_id.to_string(), q, budget, Some(typing_timer));
        self.replies.open(host, req, reply)?;
        ctx.in_flight = Some(req);
        host.save_context(ctx_id, &mut ctx)?;
        self.mark_busy(host, &sender, req)
    }

    /// The agent connection changed state: a `ready` ends a retry pause.
    pub(super) fn on_status(&mut self, host: &mut dyn Host, s: AgentStatus) -> Result<(), String> {
        let mut ctx = host.context(&s.context_id)?;
        ctx.conn = match s.state {
            ConnectionState::Connecting => Conn::Connecting,
            ConnectionState::Ready => Conn::Ready,
            ConnectionState::Busy => Conn::Busy,
            ConnectionState::Disconnected => Conn::Disconnected,
        };
        ctx.conn_detail = s.detail;
        if s.context_tokens.is_some() {
            ctx.agent_tokens = s.context_tokens;
        }
        if ctx.conn == Conn::Ready
            && let Some(timer) = ctx.retry_timer.take()
        {
            host.cancel_timer(timer);
            host.remove(&timer_key(timer));
        }
        host.save_context(&s.context_id, &mut ctx)?;
        if ctx.conn != Conn::Disconnected {
            self.start_next(host, &s.context_id)?;
        }
        Ok(())
    }

    /// Try the context's queue again after `busy` or a lost connection.
    pub(super) fn on_retry_timer(
        &mut self,
        host: &mut dyn Host,
        id: u64,
        context_id: &str,
    ) -> Result<(), String> {
        host.remove(&timer_key(id));
        let mut ctx = host.context(context_id)?;
        if ctx.retry_timer == Some(id) {
            ctx.retry_timer = None;
            host.save_context(context_id, &mut ctx)?;
        }
        self.start_next(host, context_id)
    }
}

/// The head of a queue and the messages waiting behind it from the same
/// room and thread, as one message (queue mode `collect`): the texts in
/// order, each under its sender's name when more than one person wrote.
/// The answer replies to the last of them. Messages of senders who may
/// not send now (`may_send`: over quota, or waiting) stay queued.
fn collect(
    head: Queued,
    queue: &mut std::collections::VecDeque<Queued>,
    may_send: impl Fn(&str) -> bool,
) -> Queued {
    let same = |q: &Queued| {
        q.room_id == head.room_id && q.thread_root == head.thread_root && may_send(&q.sender)
    };
    let (mut taken, rest): (Vec<Queued>, Vec<Queued>) = queue.drain(..).partition(same);
    queue.extend(rest);
    if taken.is_empty() {
        return head;
    }
    let skip = usize::from(crate::planted::on(crate::planted::Bug::CollectDropsOne));
    let all: Vec<&Queued> = std::iter::once(&head)
        .chain(taken.iter())
        .skip(skip)
        .collect();
    // A head collected before (and sent back by a `busy`) keeps its
    // senders: its text already names them when there were several.
    let mut with: Vec<String> = if head.with.is_empty() {
        vec![head.sender.clone()]
    } else {
        head.with.clone()
    };
    let head_named = with.len() > 1;
    for s in taken.iter().map(|q| &q.sender) {
        if !with.contains(s) {
            with.push(s.clone());
        }
    }
    let one_sender = with.len() == 1;
    let text = all
        .iter()
        .enumerate()
        .map(|(i, q)| {
            if one_sender || (i == 0 && skip == 0 && head_named) {
                q.text.clone()
            } else {
                let name = q
                    .display_name
                    .clone()
                    .unwrap_or_else(|| super::localpart(&q.sender).to_string());
                format!("{name}: {}", q.text)
            }
        })
        .collect::<Vec<_>>()
        .join("\n\n");
    let files = all.iter().flat_map(|q| q.files.iter().cloned()).collect();
    let mut last = taken.pop().unwrap_or(head); // taken is not empty
    last.text = text;
    last.files = files;
    last.with = with;
    last
}
