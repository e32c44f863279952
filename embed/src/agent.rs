//! The host's half of the agent protocol, without I/O.
//!
//! Both hosts keep one [`AgentSession`] per agent connection, feed it what
//! happens (the guest's submits, frames from the agent, the connection
//! opening or failing) and carry out the [`Action`]s it returns: events for
//! the guest and frames for the agent. The native host does this over a
//! real WebSocket, the simulator over its fake agent; so the simulator's
//! properties hold for the very rules the native client runs.
//!
//! The rules: one request in flight per connection (a second is refused as
//! `busy`); a submit made while connecting, or while the rest of a broken
//! reply is being dropped, waits for the connection; a submit while the
//! connection is down is refused at once (the guest keeps the message and
//! retries on `ready`); a malformed frame fails the request in flight, asks
//! the agent to cancel it and drops the rest of it; so does a reply that
//! grows past the session's byte limit (after the part that fits); a lost
//! connection fails every request it carried.

use std::time::Duration;

use surfaces_protocol::{self as proto, ClientFrame, ServerFrame};

use crate::{
    AgentChunk, AgentEnd, AgentError, AgentErrorKind, AgentFeedback, AgentMessage, AgentStatus,
    ConnectionState, Event,
};

/// Where the connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Opening, waiting for the agent's first `status`.
    Connecting,
    Ready,
    /// Lost or not yet opened; the host may be waiting to retry.
    Down,
}

/// What the host must do next, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Deliver this event to the guest.
    Deliver(Event),
    /// Write this frame on the connection.
    Send(ClientFrame),
    /// Keep this file the agent sent with the reply to `request`, then
    /// deliver an `agent-attachment` event naming it (see [`crate::media`]).
    Keep {
        request: u64,
        name: String,
        mime: String,
        bytes: Vec<u8>,
    },
}

/// The agent request an event ends for the guest (its end or its error),
/// if it is one of those.
pub fn ended_request(event: &Event) -> Option<u64> {
    match event {
        Event::AgentEnd(e) => Some(e.request),
        Event::AgentError(e) => Some(e.request),
        Event::Message(_)
        | Event::Invite(_)
        | Event::MembersChanged(_)
        | Event::MatrixResult(_)
        | Event::AgentChunk(_)
        | Event::AgentStatus(_)
        | Event::Timer(_)
        | Event::ReloadResult(_)
        | Event::Undecryptable(_)
        | Event::Reaction(_)
        | Event::MessageEdited(_)
        | Event::Redacted(_)
        | Event::AgentAttachment(_) => None,
    }
}

/// Why the connection must be dropped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Broken(pub String);

/// One agent connection's protocol state.
#[derive(Debug)]
pub struct AgentSession {
    context_id: String,
    link: Link,
    in_flight: Option<u64>,
    /// After a malformed frame: drop the rest of that reply until it ends.
    draining: bool,
    /// A submit waiting for the connection (connecting or draining).
    waiting: Option<(u64, AgentMessage)>,
    /// A reset asked for while not ready: sent with the first status.
    reset_pending: bool,
    /// The longest reply delivered, in bytes; the reply in flight so far.
    max_reply_bytes: usize,
    reply_bytes: usize,
    /// The largest file the agent may send.
    max_attachment_bytes: u64,
}

/// The default of [`AgentSession::with_max_attachment_bytes`]: 8 MiB.
pub const MAX_ATTACHMENT_BYTES: u64 = 8 << 20;

/// The default of [`AgentSession::with_max_reply_bytes`]: 1 MiB, some two
/// dozen Matrix messages.
pub const MAX_REPLY_BYTES: usize = 1 << 20;

impl AgentSession {
    /// A session for `context_id`, not connected yet.
    pub fn new(context_id: impl Into<String>) -> Self {
        AgentSession {
            context_id: context_id.into(),
            link: Link::Down,
            in_flight: None,
            draining: false,
            waiting: None,
            reset_pending: false,
            max_reply_bytes: MAX_REPLY_BYTES,
            reply_bytes: 0,
            max_attachment_bytes: MAX_ATTACHMENT_BYTES,
        }
    }

    /// Refuse files from the agent larger than `max` bytes.
    pub fn with_max_attachment_bytes(mut self, max: u64) -> Self {
        self.max_attachment_bytes = max;
        self
    }

    /// Cut replies longer than `max` bytes (a runaway agent must not grow
    /// the guest's reply, and its memory, without end).
    pub fn with_max_reply_bytes(mut self, max: usize) -> Self {
        self.max_reply_bytes = max;
        self
    }

    pub fn context_id(&self) -> &str {
        &self.context_id
    }

    pub fn link(&self) -> Link {
        self.link
    }

    /// The request whose reply is streaming, if any.
    pub fn in_flight(&self) -> Option<u64> {
        self.in_flight
    }

    /// Nothing in flight or waiting: the connection may be closed.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_none() && self.waiting.is_none()
    }

    /// The host starts opening the connection.
    pub fn connecting(&mut self, out: &mut Vec<Action>) {
        self.link = Link::Connecting;
        self.status(ConnectionState::Connecting, None, None, out);
    }

    /// The guest submits a message.
    pub fn submit(&mut self, request: u64, message: AgentMessage, out: &mut Vec<Action>) {
        let busy = self.waiting.is_some() || (self.in_flight.is_some() && !self.draining);
        match self.link {
            Link::Down => refuse(
                request,
                AgentErrorKind::Disconnected,
                "the agent is not connected",
                out,
            ),
            _ if busy => refuse(
                request,
                AgentErrorKind::Busy,
                "a request is already in flight on this connection",
                out,
            ),
            Link::Connecting => self.waiting = Some((request, message)),
            Link::Ready if self.draining => self.waiting = Some((request, message)),
            Link::Ready => self.send_request(request, message, out),
        }
    }

    /// The guest asks to stop the reply in flight. A request still waiting
    /// for the connection never reaches the agent: it ends here, empty.
    pub fn cancel(&mut self, out: &mut Vec<Action>) {
        if let Some((request, _)) = self.waiting.take() {
            out.push(Action::Deliver(Event::AgentEnd(AgentEnd {
                request,
                tokens_used: 0,
            })));
            return;
        }
        // While draining, the cancel has already been sent.
        if self.link == Link::Ready && self.in_flight.is_some() && !self.draining {
            out.push(Action::Send(ClientFrame::Cancel));
        }
    }

    /// The guest passes on a reaction to an answer: sent only while the
    /// connection is ready (feedback is best effort, never queued).
    pub fn feedback(&mut self, f: AgentFeedback, out: &mut Vec<Action>) {
        if self.link == Link::Ready {
            out.push(Action::Send(ClientFrame::Feedback {
                key: f.key,
                sender: proto::Sender {
                    id: f.sender.id,
                    display_name: f.sender.display_name,
                },
                question: f.question,
            }));
        }
    }

    /// The guest asks the agent to drop its context; if the connection is
    /// not ready, the reset goes out as soon as it is.
    pub fn reset(&mut self, out: &mut Vec<Action>) {
        if self.link == Link::Ready {
            out.push(Action::Send(ClientFrame::Reset));
        } else {
            self.reset_pending = true;
        }
    }

    /// A text frame arrived. An error means the connection is unusable
    /// (the agent broke the protocol before it was ready).
    pub fn on_text(&mut self, text: &str, out: &mut Vec<Action>) -> Result<(), Broken> {
        self.on_frame(proto::decode_server(text), out)
    }

    /// A binary frame arrived: the protocol has none.
    pub fn on_binary(&mut self, out: &mut Vec<Action>) -> Result<(), Broken> {
        self.on_frame(Err(proto::ProtocolError::Binary), out)
    }

    fn on_frame(
        &mut self,
        frame: Result<ServerFrame, proto::ProtocolError>,
        out: &mut Vec<Action>,
    ) -> Result<(), Broken> {
        if self.link == Link::Connecting {
            return match frame {
                Ok(ServerFrame::Status {
                    state,
                    context_tokens,
                    ..
                }) => {
                    self.link = Link::Ready;
                    self.status(connection_state(state), context_tokens, None, out);
                    if std::mem::take(&mut self.reset_pending) {
                        out.push(Action::Send(ClientFrame::Reset));
                    }
                    self.send_waiting(out);
                    Ok(())
                }
                // Nothing else means anything before the first status.
                Ok(_) => Ok(()),
                Err(e) => Err(Broken(format!("the agent broke the protocol: {e}"))),
            };
        }
        if self.link == Link::Down {
            return Ok(());
        }
        match frame {
            Ok(ServerFrame::Status {
                state,
                context_tokens,
                ..
            }) => {
                self.status(connection_state(state), context_tokens, None, out);
            }
            Ok(ServerFrame::AgentEventTextChunk { mut text }) => {
                if let (Some(request), false) = (self.in_flight, self.draining) {
                    let room = self.max_reply_bytes.saturating_sub(self.reply_bytes);
                    let too_long = text.len() > room;
                    if too_long {
                        let fits = (0..=room).rev().find(|&i| text.is_char_boundary(i));
                        text.truncate(fits.unwrap_or(0));
                    }
                    self.reply_bytes += text.len();
                    if !text.is_empty() {
                        out.push(Action::Deliver(Event::AgentChunk(AgentChunk {
                            request,
                            text,
                        })));
                    }
                    if too_long {
                        self.draining = true;
                        let why = format!("the reply grew past {} bytes", self.max_reply_bytes);
                        refuse(request, AgentErrorKind::TooLong, &why, out);
                        out.push(Action::Send(ClientFrame::Cancel));
                    }
                }
            }
            Ok(ServerFrame::AgentEventAttachment { name, mime, url }) => {
                if let (Some(request), false) = (self.in_flight, self.draining) {
                    self.attachment(request, name, mime, &url, out);
                }
            }
            Ok(ServerFrame::AgentEventEnd { tokens_used }) => {
                if let Some(request) = self.in_flight.take() {
                    if !self.draining {
                        out.push(Action::Deliver(Event::AgentEnd(AgentEnd {
                            request,
                            tokens_used,
                        })));
                    }
                    self.draining = false;
                    self.send_waiting(out);
                }
            }
            Ok(ServerFrame::Error { code, message }) => {
                if let Some(request) = self.in_flight.take() {
                    if !self.draining {
                        refuse(request, error_kind(code), &message, out);
                    }
                    self.draining = false;
                    self.send_waiting(out);
                }
            }
            Ok(ServerFrame::Unknown) => {}
            Err(e) => {
                tracing::warn!(context = %self.context_id, "the agent sent a bad frame: {e}");
                if let (Some(request), false) = (self.in_flight, self.draining) {
                    self.draining = true;
                    refuse(request, AgentErrorKind::Protocol, &e.to_string(), out);
                    out.push(Action::Send(ClientFrame::Cancel));
                }
            }
        }
        Ok(())
    }

    /// A file for the reply in flight: kept, or (not a `data:` URL, too
    /// large) a protocol error, as a malformed frame is.
    fn attachment(
        &mut self,
        request: u64,
        name: String,
        mime: String,
        url: &str,
        out: &mut Vec<Action>,
    ) {
        let too_large = proto::data_url_size(url).is_some_and(|n| n > self.max_attachment_bytes);
        let why = match proto::read_data_url(url) {
            _ if too_large => format!(
                "the agent sent a file over {}",
                surfaces_contract::human_bytes(self.max_attachment_bytes)
            ),
            Ok((_, bytes)) if bytes.len() as u64 > self.max_attachment_bytes => format!(
                "the agent sent a file over {}",
                surfaces_contract::human_bytes(self.max_attachment_bytes)
            ),
            Ok((read, bytes)) => {
                let mime = if mime.is_empty() { read } else { mime };
                let name = if name.trim().is_empty() {
                    "attachment".to_string()
                } else {
                    name
                };
                out.push(Action::Keep {
                    request,
                    name,
                    mime,
                    bytes,
                });
                return;
            }
            Err(e) => format!("the agent sent a file whose URL is unusable: {e}"),
        };
        tracing::warn!(context = %self.context_id, "{why}");
        self.draining = true;
        refuse(request, AgentErrorKind::Protocol, &why, out);
        out.push(Action::Send(ClientFrame::Cancel));
    }

    /// The reply in flight has made no progress for too long: it fails, the
    /// agent is asked to cancel it, and the rest of it is dropped. If it was
    /// already being dropped (the agent ignored the cancel), the connection
    /// is no good: the error says to drop it.
    pub fn stalled(&mut self, why: &str, out: &mut Vec<Action>) -> Result<(), Broken> {
        match (self.in_flight, self.draining) {
            (Some(request), false) => {
                self.draining = true;
                refuse(request, AgentErrorKind::Internal, why, out);
                out.push(Action::Send(ClientFrame::Cancel));
                Ok(())
            }
            (Some(_), true) => Err(Broken(format!("the agent ignored a cancel: {why}"))),
            (None, _) => Ok(()),
        }
    }

    /// The connection failed (or was never made): every request it carried
    /// fails, and the guest hears when the host will try again.
    pub fn lost(&mut self, reason: &str, retry_in: Option<Duration>, out: &mut Vec<Action>) {
        self.fail_all(reason, out);
        let detail = match retry_in {
            Some(delay) => format!("{reason}; retrying in {}s", delay.as_secs().max(1)),
            None => reason.to_string(),
        };
        self.status(ConnectionState::Disconnected, None, Some(detail), out);
    }

    /// The host closed the connection on purpose (idle, or shutting down):
    /// requests it carried fail, but the guest is not told the agent is
    /// down, since the next submit opens the connection again.
    pub fn closed(&mut self, reason: &str, out: &mut Vec<Action>) {
        self.fail_all(reason, out);
    }

    fn fail_all(&mut self, reason: &str, out: &mut Vec<Action>) {
        self.link = Link::Down;
        // A request being drained has had its error already.
        let in_flight = self.in_flight.take().filter(|_| !self.draining);
        self.draining = false;
        let lost = in_flight
            .into_iter()
            .chain(self.waiting.take().map(|w| w.0));
        for request in lost {
            refuse(request, AgentErrorKind::Disconnected, reason, out);
        }
    }

    fn send_waiting(&mut self, out: &mut Vec<Action>) {
        if let Some((request, message)) = self.waiting.take() {
            self.send_request(request, message, out);
        }
    }

    fn send_request(&mut self, request: u64, message: AgentMessage, out: &mut Vec<Action>) {
        self.in_flight = Some(request);
        self.reply_bytes = 0;
        out.push(Action::Send(user_message(message)));
    }

    fn status(
        &self,
        state: ConnectionState,
        context_tokens: Option<u64>,
        detail: Option<String>,
        out: &mut Vec<Action>,
    ) {
        out.push(Action::Deliver(Event::AgentStatus(AgentStatus {
            context_id: self.context_id.clone(),
            state,
            context_tokens,
            detail,
        })));
    }
}

fn refuse(request: u64, kind: AgentErrorKind, why: &str, out: &mut Vec<Action>) {
    out.push(Action::Deliver(Event::AgentError(AgentError {
        request,
        kind,
        message: why.to_string(),
    })));
}

fn connection_state(state: proto::AgentState) -> ConnectionState {
    match state {
        proto::AgentState::Busy => ConnectionState::Busy,
        proto::AgentState::Ready | proto::AgentState::Unknown => ConnectionState::Ready,
    }
}

fn error_kind(code: proto::ErrorCode) -> AgentErrorKind {
    match code {
        proto::ErrorCode::Busy => AgentErrorKind::Busy,
        proto::ErrorCode::BadRequest => AgentErrorKind::BadRequest,
        proto::ErrorCode::ContextOverflow => AgentErrorKind::ContextOverflow,
        proto::ErrorCode::Internal | proto::ErrorCode::Unknown => AgentErrorKind::Internal,
    }
}

fn user_message(message: AgentMessage) -> ClientFrame {
    ClientFrame::UserMessage {
        text: message.text,
        sender: Some(proto::Sender {
            id: message.sender.id,
            display_name: message.sender.display_name,
        }),
        skills: message.skills,
        attachments: message
            .attachments
            .into_iter()
            .map(|a| proto::Attachment {
                size: proto::data_url_size(&a.url),
                name: a.name,
                mime: a.mime,
                url: a.url,
            })
            .collect(),
    }
}
