//! The agents: the host's client session per context (the very rules the
//! native client runs, `AgentSession`) and the fake agent server behind
//! each, which streams scripted replies, drops connections, sends
//! malformed frames and refuses as busy, as the scenario says.

use std::collections::VecDeque;
use std::time::Duration;

use surfaces_embed::{Action, AgentEffect, AgentMessage, AgentSession, Event, Link};
use surfaces_protocol::{self as proto, ClientFrame, ServerFrame};

use super::transcript::{quote, quote_frame};
use super::{Outcome, Pending, Submit, World};
use crate::scenario;

/// One agent connection: the host's client session (the very rules the
/// native client runs) and the fake server behind it.
pub(super) struct Conn {
    epoch: u64,
    session: AgentSession,
    /// Server: the reply being streamed.
    stream: Option<Stream>,
}

pub(super) struct Stream {
    pieces: VecDeque<String>,
    sent: usize,
    total: usize,
    tokens: u64,
    then: String,
    delay: [u64; 2],
    cancelled: bool,
    /// Files sent after the text, before a clean end.
    files: Vec<String>,
}

impl World<'_> {
    /// The host process died: its connections go with it, and the guest
    /// never hears of them (the requests count as failed for the checks).
    pub(super) fn drop_agent_connections(&mut self) {
        for mut c in std::mem::take(&mut self.conns).into_values() {
            // The guest never hears of these: the process is gone.
            let mut out = Vec::new();
            c.session.lost("host restarted", None, &mut out);
            for action in out {
                if let Action::Deliver(Event::AgentError(e)) = action {
                    self.facts
                        .outcomes
                        .insert(e.request, Outcome::Failed("host restarted".into()));
                }
            }
        }
    }

    /// An event the old host run had decided but died before delivering:
    /// a request it ended or failed counts as failed by the restart, as
    /// the restarted guest reports it (it never heard the outcome).
    pub(super) fn undelivered(&mut self, ev: &Event) {
        let Some(request) = surfaces_embed::ended_request(ev) else {
            return;
        };
        self.facts
            .outcomes
            .entry(request)
            .or_insert(Outcome::Failed("host restarted".into()));
    }

    /// An agent effect: to the client session of its context.
    pub(super) fn agent_effect(&mut self, effect: AgentEffect) {
        match effect {
            AgentEffect::Submit {
                request,
                context_id,
                message,
            } => {
                self.log(format!(
                    "agent <- #{request} [{context_id}] {} from {}{}{}",
                    quote(&message.text),
                    message.sender.id,
                    if message.skills.is_empty() {
                        String::new()
                    } else {
                        format!(" skills={}", message.skills.join(","))
                    },
                    if message.attachments.is_empty() {
                        String::new()
                    } else {
                        let names: Vec<&str> = message
                            .attachments
                            .iter()
                            .map(|a| a.name.as_str())
                            .collect();
                        format!(" files={}", names.join(","))
                    }
                ));
                self.facts.submits.push(Submit {
                    request,
                    context_id: context_id.clone(),
                    sender: message.sender.id.clone(),
                    text: message.text.clone(),
                    at_ms: self.now,
                    files: message.attachments.iter().map(|a| a.url.clone()).collect(),
                });
                self.submit(&context_id, request, message);
            }
            AgentEffect::Cancel { context_id } => {
                self.log(format!("agent <- cancel [{context_id}]"));
                self.client(&context_id, |session, out| session.cancel(out));
            }
            AgentEffect::Reset { context_id } => {
                self.log(format!("agent <- reset [{context_id}]"));
                self.client(&context_id, |session, out| session.reset(out));
            }
            AgentEffect::Feedback {
                context_id,
                feedback,
            } => {
                self.log(format!(
                    "agent <- feedback {} from {} [{context_id}]",
                    feedback.key, feedback.sender.id
                ));
                self.facts
                    .feedback
                    .push((context_id.clone(), feedback.key.clone()));
                self.client(&context_id, |session, out| session.feedback(feedback, out));
            }
        }
    }

    pub(super) fn connect(&mut self, ctx: &str) {
        let max = self.scenario.agent.max_reply_bytes;
        let c = self.conns.entry(ctx.to_string()).or_insert_with(|| Conn {
            epoch: 0,
            session: AgentSession::new(ctx).with_max_reply_bytes(max),
            stream: None,
        });
        c.epoch += 1;
        c.stream = None;
        let epoch = c.epoch;
        let mut out = Vec::new();
        c.session.connecting(&mut out);
        self.log(format!("agent [{ctx}] connecting"));
        self.client_actions(ctx, out, false);
        let frame = proto::encode_server(&ServerFrame::Status {
            state: proto::AgentState::Ready,
            agent_id: Some("sim-agent".into()),
            context_tokens: None,
        });
        let d = self.scenario.agent.connect_ms;
        self.after(
            d,
            Pending::AgentFrame {
                ctx: ctx.to_string(),
                epoch,
                frame,
            },
        );
    }

    pub(super) fn disconnect(&mut self, ctx: &str) {
        let base = self.scenario.agent.reconnect_ms;
        let delay = base + self.range(0, base / 2);
        let Some(c) = self.conns.get_mut(ctx) else {
            return;
        };
        if c.session.link() == Link::Down {
            return;
        }
        c.epoch += 1;
        c.stream = None;
        let epoch = c.epoch;
        let mut out = Vec::new();
        c.session.lost(
            "connection to the agent lost",
            Some(Duration::from_millis(delay)),
            &mut out,
        );
        self.log(format!(
            "agent [{ctx}] disconnected; reconnecting in {delay}ms"
        ));
        self.client_actions(ctx, out, false);
        self.after(
            delay,
            Pending::Reconnect {
                ctx: ctx.to_string(),
                epoch,
            },
        );
    }

    pub(super) fn reconnect(&mut self, ctx: &str, epoch: u64) {
        if self
            .conns
            .get(ctx)
            .is_some_and(|c| c.epoch == epoch && c.session.link() == Link::Down)
        {
            self.connect(ctx);
        }
    }

    /// The host's agent client gets a submit from the guest.
    pub(super) fn submit(&mut self, ctx: &str, request: u64, message: AgentMessage) {
        if !self.conns.contains_key(ctx) {
            self.connect(ctx);
        }
        // Files are fetched before the message goes (a failure fails it).
        let message = match self.fetch_files(request, message) {
            Ok(m) => m,
            Err(e) => {
                self.log(format!("host: request #{request} fails: {}", e.message));
                self.deliver_after(1, Event::AgentError(e));
                return;
            }
        };
        let mut out = Vec::new();
        if let Some(c) = self.conns.get_mut(ctx) {
            c.session.submit(request, message, &mut out);
        }
        self.client_actions(ctx, out, false);
    }

    /// Run one client-session call for `ctx` and carry out its actions.
    pub(super) fn client(
        &mut self,
        ctx: &str,
        call: impl FnOnce(&mut AgentSession, &mut Vec<Action>),
    ) {
        let mut out = Vec::new();
        if let Some(c) = self.conns.get_mut(ctx) {
            call(&mut c.session, &mut out);
        }
        self.client_actions(ctx, out, true);
    }

    /// Carry out what the client session asked, in order: events to the
    /// guest (now, or each a millisecond after the last), frames to the
    /// fake server.
    pub(super) fn client_actions(&mut self, ctx: &str, actions: Vec<Action>, now: bool) {
        for (i, action) in actions.into_iter().enumerate() {
            match action {
                Action::Deliver(ev) if now => self.deliver(ev),
                Action::Deliver(ev) => self.deliver_after(1 + i as u64, ev),
                Action::Send(frame) => self.server_receives(ctx, frame),
                Action::Keep {
                    request,
                    name,
                    mime,
                    bytes,
                } => self.keep_file(request, name, mime, bytes),
            }
        }
    }

    /// The fake agent server reads a frame from the client.
    pub(super) fn server_receives(&mut self, ctx: &str, frame: ClientFrame) {
        match frame {
            ClientFrame::UserMessage {
                text, attachments, ..
            } => {
                for a in attachments {
                    match proto::read_data_url(&a.url) {
                        Ok((_, bytes)) => self.facts.files_to_agent.push((a.name, bytes)),
                        Err(e) => self.log(format!("agent: an unreadable attachment: {e}")),
                    }
                }
                self.serve(ctx, &text)
            }
            ClientFrame::Cancel => {
                if let Some(s) = self.conns.get_mut(ctx).and_then(|c| c.stream.as_mut()) {
                    s.cancelled = true;
                }
            }
            ClientFrame::Feedback { .. } => {} // the fake agent ignores it, as agents may
            ClientFrame::Reset => {
                let Some(c) = self.conns.get_mut(ctx) else {
                    return;
                };
                if let Some(s) = c.stream.as_mut() {
                    s.cancelled = true;
                }
                let epoch = c.epoch;
                let frame = proto::encode_server(&ServerFrame::Status {
                    state: proto::AgentState::Ready,
                    agent_id: Some("sim-agent".into()),
                    context_tokens: Some(0),
                });
                self.after(
                    5,
                    Pending::AgentFrame {
                        ctx: ctx.to_string(),
                        epoch,
                        frame,
                    },
                );
            }
        }
    }

    /// The fake agent server starts answering a request.
    pub(super) fn serve(&mut self, ctx: &str, text: &str) {
        let echo = || scenario::Reply {
            text: Some(format!("echo: {text}")),
            chunks: Some(3),
            ..Default::default()
        };
        let mut spec = self.replies.pop_front().unwrap_or_else(echo);
        if self.healed() {
            // Healed: the agent answers whole and without stalls.
            spec.then = None;
            spec.chunk_delay_ms = None;
            if spec.text.is_none() && spec.pieces.as_ref().is_none_or(Vec::is_empty) {
                spec = echo();
            }
        }
        let pieces: VecDeque<String> = spec.pieces().into();
        let total = pieces.len();
        let tokens = spec.tokens.unwrap_or((text.len() / 4 + total) as u64);
        let Some(c) = self.conns.get_mut(ctx) else {
            return;
        };
        c.stream = Some(Stream {
            pieces,
            sent: 0,
            total,
            tokens,
            then: spec.then.clone().unwrap_or_else(|| "end".into()),
            delay: spec.chunk_delay_ms.unwrap_or([80, 250]),
            cancelled: false,
            files: spec.files.clone().unwrap_or_default(),
        });
        let epoch = c.epoch;
        let [lo, hi] = spec.chunk_delay_ms.unwrap_or([80, 250]);
        let d = self.range(lo, hi);
        self.after(
            d,
            Pending::AgentStep {
                ctx: ctx.to_string(),
                epoch,
            },
        );
    }

    /// The fake server sends its next frame for the current stream.
    pub(super) fn agent_step(&mut self, ctx: &str, epoch: u64) {
        let Some(c) = self.conns.get_mut(ctx) else {
            return;
        };
        if c.epoch != epoch {
            return;
        }
        let Some(s) = c.stream.as_mut() else { return };
        let mut frames = Vec::new();
        let mut next = None;
        let mut drop_conn = false;
        if s.cancelled {
            let partial = if s.total == 0 {
                0
            } else {
                s.tokens * s.sent as u64 / s.total as u64
            };
            frames.push(proto::encode_server(&ServerFrame::AgentEventEnd {
                tokens_used: partial,
            }));
            c.stream = None;
        } else if let Some(piece) = s.pieces.pop_front() {
            s.sent += 1;
            frames.push(proto::encode_server(&ServerFrame::AgentEventTextChunk {
                text: piece,
            }));
            next = Some(s.delay);
        } else {
            match s.then.as_str() {
                "disconnect" => drop_conn = true,
                "malformed" => {
                    frames.push("{\"type\": \"agent_event_text_chunk\", \"text\": ".to_string());
                    frames.push(proto::encode_server(&ServerFrame::AgentEventEnd {
                        tokens_used: s.tokens,
                    }));
                }
                then => match then.strip_prefix("error:") {
                    Some(code) => {
                        let code = match code {
                            "busy" => proto::ErrorCode::Busy,
                            "bad_request" => proto::ErrorCode::BadRequest,
                            "context_overflow" => proto::ErrorCode::ContextOverflow,
                            _ => proto::ErrorCode::Internal,
                        };
                        frames.push(proto::encode_server(&ServerFrame::Error {
                            code,
                            message: format!("simulated {code:?}").to_lowercase(),
                        }));
                    }
                    None => {
                        for name in std::mem::take(&mut s.files) {
                            let bytes = super::media::file_bytes(&name, 300);
                            frames.push(proto::encode_server(&ServerFrame::AgentEventAttachment {
                                url: proto::data_url("application/octet-stream", &bytes),
                                mime: String::new(),
                                name,
                            }));
                        }
                        frames.push(proto::encode_server(&ServerFrame::AgentEventEnd {
                            tokens_used: s.tokens,
                        }))
                    }
                },
            }
            c.stream = None;
        }
        if drop_conn {
            self.log(format!(
                "fault: agent [{ctx}] drops the connection mid-reply"
            ));
            self.disconnect(ctx);
            return;
        }
        for (i, frame) in frames.into_iter().enumerate() {
            let d = 2 + i as u64;
            self.after(
                d,
                Pending::AgentFrame {
                    ctx: ctx.to_string(),
                    epoch,
                    frame,
                },
            );
        }
        if let Some([lo, hi]) = next {
            let d = self.range(lo, hi);
            self.after(
                d,
                Pending::AgentStep {
                    ctx: ctx.to_string(),
                    epoch,
                },
            );
        }
    }

    /// The host's agent client receives a frame and turns it into events.
    pub(super) fn agent_frame(&mut self, ctx: &str, epoch: u64, frame: &str) {
        let Some(c) = self.conns.get_mut(ctx) else {
            return;
        };
        if c.epoch != epoch {
            return;
        }
        let mut out = Vec::new();
        let result = c.session.on_text(frame, &mut out);
        self.log(format!("agent -> [{ctx}] {}", quote_frame(frame)));
        self.client_actions(ctx, out, true);
        if let Err(broken) = result {
            self.log(format!("agent [{ctx}]: {broken}"));
            self.disconnect(ctx);
        }
    }
}
