//! The agent WebSocket wire format (docs/agent-protocol.md), and nothing
//! else: adapting to another agent service's frame names is a change here.
//!
//! Each text frame is one JSON object discriminated by `"type"`. Unknown
//! types and fields are ignored; a frame that is not JSON or has no `type`
//! is a [`ProtocolError`] for the request in flight.

use serde::{Deserialize, Serialize};

/// The largest frame (and message) either side takes: files travel inline
/// as base64 `data:` URLs, so a frame can be large, but not unbounded.
pub const MAX_FRAME_BYTES: usize = 64 << 20;

/// A frame from the agent service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// Sent first after the upgrade, and after a `reset`.
    Status {
        state: AgentState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        context_tokens: Option<u64>,
    },
    /// The next piece of the reply in flight.
    AgentEventTextChunk { text: String },
    /// A file that belongs to the reply in flight (a `data:` URL): sent
    /// after the text that came before it.
    AgentEventAttachment {
        name: String,
        mime: String,
        url: String,
    },
    /// The reply is complete.
    AgentEventEnd { tokens_used: u64 },
    /// The request in flight failed (or was refused, with `busy`).
    Error {
        code: ErrorCode,
        #[serde(default)]
        message: String,
    },
    /// A frame type this client does not know: ignored.
    #[serde(other)]
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    Ready,
    Busy,
    /// A state this client does not know: taken as ready.
    #[serde(other)]
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Busy,
    BadRequest,
    ContextOverflow,
    Internal,
    /// A code this client does not know: treated as `internal`.
    #[serde(other)]
    Unknown,
}

/// A frame to the agent service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    UserMessage {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sender: Option<Sender>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        skills: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attachments: Vec<Attachment>,
    },
    Cancel,
    Reset,
    /// Someone reacted to an answer in this context (👍, 👎, ...): the
    /// agent may use it or ignore it. Never answered.
    Feedback {
        key: String,
        sender: Sender,
        /// The start of the question the answer was to.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        question: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub name: String,
    pub mime: String,
    /// A `data:` URL (base64) for a file a user sent.
    pub url: String,
    /// In bytes, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// `bytes` as a base64 `data:` URL of type `mime`.
pub fn data_url(mime: &str, bytes: &[u8]) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    format!("data:{mime};base64,{encoded}")
}

/// The size of a base64 `data:` URL's bytes, without decoding them.
pub fn data_url_size(url: &str) -> Option<u64> {
    let (head, data) = url.strip_prefix("data:")?.split_once(',')?;
    if !head.ends_with(";base64") {
        return None;
    }
    let padding = data.bytes().rev().take_while(|&b| b == b'=').count();
    Some((data.len() / 4 * 3).saturating_sub(padding) as u64)
}

/// Why a `data:` URL could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DataUrlError {
    #[error("not a data: URL")]
    NotData,
    #[error("its data is not valid base64")]
    BadData,
}

/// The mime type and bytes of a `data:` URL (base64 or percent-encoded).
pub fn read_data_url(url: &str) -> Result<(String, Vec<u8>), DataUrlError> {
    let parsed = data_url::DataUrl::process(url).map_err(|_| DataUrlError::NotData)?;
    let (bytes, _) = parsed.decode_to_vec().map_err(|_| DataUrlError::BadData)?;
    let mime = parsed.mime_type();
    Ok((format!("{}/{}", mime.type_, mime.subtype), bytes))
}

/// A frame that breaks the protocol.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("frame is not a JSON object: {0}")]
    NotJson(String),
    #[error("frame has no \"type\"")]
    NoType,
    #[error("bad {kind:?} frame: {detail}")]
    BadFrame { kind: String, detail: String },
    #[error("binary frames are not part of the protocol")]
    Binary,
}

/// Decode one text frame from the agent.
pub fn decode_server(text: &str) -> Result<ServerFrame, ProtocolError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ProtocolError::NotJson(e.to_string()))?;
    let kind = match value.as_object().map(|o| o.get("type")) {
        None => return Err(ProtocolError::NotJson("not an object".into())),
        Some(Some(serde_json::Value::String(t))) => t.clone(),
        Some(_) => return Err(ProtocolError::NoType),
    };
    serde_json::from_value(value).map_err(|e| ProtocolError::BadFrame {
        kind,
        detail: e.to_string(),
    })
}

/// Encode one frame for the agent.
pub fn encode_client(frame: &ClientFrame) -> String {
    // Serializing these plain types cannot fail.
    serde_json::to_string(frame).unwrap_or_default()
}

/// Encode one frame as the agent would (reference server, simulator).
pub fn encode_server(frame: &ServerFrame) -> String {
    serde_json::to_string(frame).unwrap_or_default()
}

/// Decode one frame as the agent would (reference server, simulator).
pub fn decode_client(text: &str) -> Result<ClientFrame, ProtocolError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ProtocolError::NotJson(e.to_string()))?;
    let kind = match value.get("type") {
        Some(serde_json::Value::String(t)) => t.clone(),
        _ => return Err(ProtocolError::NoType),
    };
    serde_json::from_value(value).map_err(|e| ProtocolError::BadFrame {
        kind,
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_the_contract() {
        assert_eq!(
            decode_server(r#"{"type":"status","state":"ready","agent_id":"a","context_tokens":5}"#),
            Ok(ServerFrame::Status {
                state: AgentState::Ready,
                agent_id: Some("a".into()),
                context_tokens: Some(5)
            })
        );
        assert_eq!(
            decode_server(r#"{"type":"agent_event_text_chunk","text":"hi","extra":1}"#),
            Ok(ServerFrame::AgentEventTextChunk { text: "hi".into() })
        );
        assert_eq!(
            decode_server(r#"{"type":"agent_event_end","tokens_used":7}"#),
            Ok(ServerFrame::AgentEventEnd { tokens_used: 7 })
        );
        assert_eq!(
            decode_server(r#"{"type":"error","code":"teapot","message":"x"}"#),
            Ok(ServerFrame::Error {
                code: ErrorCode::Unknown,
                message: "x".into()
            })
        );
        assert_eq!(
            decode_server(r#"{"type":"typing"}"#),
            Ok(ServerFrame::Unknown)
        );
    }

    #[test]
    fn attachments_travel_as_data_urls() {
        let bytes: Vec<u8> = (0..=255).collect();
        let url = data_url("image/png", &bytes);
        assert!(url.starts_with("data:image/png;base64,"));
        assert_eq!(data_url_size(&url), Some(256));
        assert_eq!(read_data_url(&url), Ok(("image/png".into(), bytes)));
        for n in 0..8 {
            assert_eq!(data_url_size(&data_url("a/b", &vec![0; n])), Some(n as u64));
        }
        assert_eq!(
            read_data_url("data:,hello%20there"),
            Ok(("text/plain".into(), b"hello there".to_vec()))
        );
        assert_eq!(
            read_data_url("https://example.org/x.png"),
            Err(DataUrlError::NotData)
        );
        assert_eq!(
            read_data_url("data:image/png;base64,***"),
            Err(DataUrlError::BadData)
        );
        assert_eq!(
            decode_server(
                r#"{"type":"agent_event_attachment","name":"a.png","mime":"image/png","url":"data:,x"}"#
            ),
            Ok(ServerFrame::AgentEventAttachment {
                name: "a.png".into(),
                mime: "image/png".into(),
                url: "data:,x".into()
            })
        );
    }

    #[test]
    fn malformed_frames_are_errors() {
        assert!(matches!(
            decode_server("not json"),
            Err(ProtocolError::NotJson(_))
        ));
        assert!(matches!(
            decode_server("[1,2]"),
            Err(ProtocolError::NotJson(_))
        ));
        assert_eq!(decode_server(r#"{"text":"x"}"#), Err(ProtocolError::NoType));
        assert!(matches!(
            decode_server(r#"{"type":"agent_event_end"}"#),
            Err(ProtocolError::BadFrame { .. })
        ));
    }

    #[test]
    fn client_frames() {
        let f = ClientFrame::UserMessage {
            text: "hi".into(),
            sender: Some(Sender {
                id: "@a:x".into(),
                display_name: None,
            }),
            skills: vec!["code".into()],
            attachments: vec![],
        };
        assert_eq!(
            encode_client(&f),
            r#"{"type":"user_message","text":"hi","sender":{"id":"@a:x"},"skills":["code"]}"#
        );
        assert_eq!(encode_client(&ClientFrame::Cancel), r#"{"type":"cancel"}"#);
        assert_eq!(decode_client(&encode_client(&f)), Ok(f));
    }

    proptest! {
        #[test]
        fn decoding_never_panics(s in ".*") {
            let _ = decode_server(&s);
        }

        #[test]
        fn chunks_round_trip(text in ".*") {
            let f = ServerFrame::AgentEventTextChunk { text };
            prop_assert_eq!(decode_server(&encode_server(&f)), Ok(f));
        }
    }
}
