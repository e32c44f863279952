//! What the guest asks its host to do, grouped by who carries it out, so
//! a host routes effects by exhaustive matches: a new kind of effect is a
//! compile error wherever it is not handled.

use crate::{AgentFeedback, AgentMessage, AttachmentContent, EditTarget, MessageContent};

/// Something the guest asked the host to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// For the Matrix front end.
    Matrix(MatrixEffect),
    /// For the agent client.
    Agent(AgentEffect),
    /// For the host's timers.
    Timer(TimerEffect),
    /// For the host itself.
    Host(HostEffect),
}

/// The Matrix front end's work. Requests with an id are answered with a
/// `matrix-result` event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MatrixEffect {
    Send {
        request: u64,
        room_id: String,
        content: MessageContent,
    },
    /// A file the host keeps, sent as a message of its own.
    SendAttachment {
        request: u64,
        room_id: String,
        content: AttachmentContent,
    },
    Edit {
        request: u64,
        room_id: String,
        target: EditTarget,
        content: MessageContent,
    },
    React {
        request: u64,
        room_id: String,
        event_id: String,
        key: String,
    },
    SetTyping {
        room_id: String,
        typing: bool,
        timeout_ms: u32,
    },
    ReadReceipt {
        room_id: String,
        event_id: String,
    },
    Join {
        request: u64,
        room_id: String,
    },
    Leave {
        request: u64,
        room_id: String,
    },
}

/// The agent client's work, per context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentEffect {
    Submit {
        request: u64,
        context_id: String,
        message: AgentMessage,
    },
    Cancel {
        context_id: String,
    },
    Reset {
        context_id: String,
    },
    /// A reaction on an answer, for the agent (best effort).
    Feedback {
        context_id: String,
        feedback: AgentFeedback,
    },
}

/// Timers: `Set` again moves a timer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimerEffect {
    Set { id: u64, delay_ms: u64 },
    Cancel { id: u64 },
}

/// Asks of the host itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostEffect {
    /// Swap in the guest file again; answered with `reload-result`.
    Reload { request: u64 },
    /// Go back to the guest that ran before this one; answered with
    /// `reload-result` (`rolled-back` or `refused`).
    Rollback { request: u64 },
}

impl Effect {
    /// A short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Effect::Matrix(m) => match m {
                MatrixEffect::Send { .. } => "send",
                MatrixEffect::SendAttachment { .. } => "send_attachment",
                MatrixEffect::Edit { .. } => "edit",
                MatrixEffect::React { .. } => "react",
                MatrixEffect::SetTyping { .. } => "typing",
                MatrixEffect::ReadReceipt { .. } => "receipt",
                MatrixEffect::Join { .. } => "join",
                MatrixEffect::Leave { .. } => "leave",
            },
            Effect::Agent(a) => match a {
                AgentEffect::Submit { .. } => "agent_submit",
                AgentEffect::Cancel { .. } => "agent_cancel",
                AgentEffect::Reset { .. } => "agent_reset",
                AgentEffect::Feedback { .. } => "agent_feedback",
            },
            Effect::Timer(t) => match t {
                TimerEffect::Set { .. } => "set_timer",
                TimerEffect::Cancel { .. } => "cancel_timer",
            },
            Effect::Host(h) => match h {
                HostEffect::Reload { .. } => "reload",
                HostEffect::Rollback { .. } => "rollback",
            },
        }
    }
}
