//! How the transcript writes events, frames and message contents: one
//! short line each, the same for every run of a seed.

use surfaces_embed::{Event, LogLevel, MessageContent};
use surfaces_protocol::{self as proto, ServerFrame};

pub(super) fn event_name(ev: &Event) -> String {
    match ev {
        Event::Message(m) => format!("message {}", m.event_id),
        Event::Invite(i) => format!("invite to {}", i.room_id),
        Event::MembersChanged(m) => format!("members of {}", m.room_id),
        Event::MatrixResult(r) => format!("matrix result #{}", r.request),
        Event::AgentChunk(c) => format!("agent chunk #{}", c.request),
        Event::AgentEnd(e) => format!("agent end #{}", e.request),
        Event::AgentError(e) => format!("agent error #{}", e.request),
        Event::AgentStatus(s) => format!("agent status [{}]", s.context_id),
        Event::Timer(id) => format!("timer {id}"),
        Event::ReloadResult(r) => format!("reload result #{}", r.request),
        Event::Undecryptable(u) => format!("undecryptable {} in {}", u.event_id, u.room_id),
        Event::Reaction(r) => format!("reaction {} {} on {}", r.event_id, r.key, r.target),
        Event::MessageEdited(e) => format!("edit {} of {}", e.event_id, e.original),
        Event::Redacted(d) => format!("redaction {} of {}", d.event_id, d.target),
        Event::AgentAttachment(a) => format!("agent file #{} {}", a.request, a.media.name),
    }
}

/// A short, one-line rendering of a text for the transcript.
pub fn quote(text: &str) -> String {
    const MAX: usize = 72;
    let escaped: String = text.escape_debug().collect();
    if escaped.chars().count() <= MAX {
        return format!("\"{escaped}\"");
    }
    let head: String = escaped.chars().take(MAX).collect();
    format!("\"{head}…\" ({} bytes)", text.len())
}

pub(super) fn quote_frame(frame: &str) -> String {
    match proto::decode_server(frame) {
        Ok(ServerFrame::AgentEventTextChunk { text }) => format!("chunk {}", quote(&text)),
        Ok(ServerFrame::AgentEventEnd { tokens_used }) => format!("end tokens={tokens_used}"),
        Ok(ServerFrame::AgentEventAttachment { name, .. }) => format!("file {}", quote(&name)),
        Ok(ServerFrame::Error { code, .. }) => format!("error {code:?}").to_lowercase(),
        Ok(ServerFrame::Status {
            state,
            context_tokens,
            ..
        }) => format!(
            "status {state:?}{}",
            context_tokens
                .map(|t| format!(" context_tokens={t}"))
                .unwrap_or_default()
        )
        .to_lowercase(),
        Ok(ServerFrame::Unknown) => "unknown frame (ignored)".into(),
        Err(_) => format!("malformed frame {}", quote(frame)),
    }
}

pub(super) fn show(c: &MessageContent) -> String {
    let mut flags = Vec::new();
    if c.notice {
        flags.push("notice".to_string());
    }
    if c.live {
        flags.push("live".to_string());
    }
    if c.formatted_body.is_some() {
        flags.push("html".to_string());
    }
    if let Some(t) = &c.thread_root {
        flags.push(format!("thread {t}"));
    }
    if let Some(r) = &c.reply_to {
        flags.push(format!("reply-to {r}"));
    }
    if !c.mentions.is_empty() {
        flags.push(format!("mentions {}", c.mentions.join(",")));
    }
    format!("[{}] {}", flags.join(", "), quote(&c.body))
}

pub(super) fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Trace => "trace",
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    }
}
