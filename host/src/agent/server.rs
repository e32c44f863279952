//! The reference agent server: speaks the agent protocol over a real
//! WebSocket, with modes that misbehave on purpose. The quick start and the
//! tests use it; the in-process echo backend runs it over an in-memory pipe.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use surfaces_protocol::{self as proto, ClientFrame, ServerFrame};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;

/// How the server answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Stream the user's text back.
    Echo,
    /// Stream this text, whatever was asked.
    Script(String),
    /// Refuse every request with `busy`.
    Busy,
    /// Send half the reply, then drop the connection.
    DropMidReply,
    /// Send half the reply, then a frame that is not JSON, then end.
    Malformed,
    /// Accept the connection, then never send anything (not even `status`).
    Silent,
    /// Send `status`, then read and answer nothing (no pongs either).
    Mute,
    /// Send `status` and answer pings, but never answer a request (and
    /// ignore `cancel`): a live agent that stopped working.
    Stall,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        Ok(match s {
            "echo" => Mode::Echo,
            "busy" => Mode::Busy,
            "drop" => Mode::DropMidReply,
            "malformed" => Mode::Malformed,
            "silent" => Mode::Silent,
            "mute" => Mode::Mute,
            "stall" => Mode::Stall,
            _ => match s.strip_prefix("script:") {
                Some(text) => Mode::Script(text.to_string()),
                None => {
                    return Err(format!(
                        "unknown mode {s:?} (echo, script:TEXT, busy, drop, malformed, silent, mute, stall)"
                    ));
                }
            },
        })
    }
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub mode: Mode,
    /// Pieces a reply is streamed in.
    pub chunks: usize,
    /// Pause before each piece.
    pub chunk_delay: Duration,
    /// Pause before the first `status` frame.
    pub status_delay: Duration,
    /// If set, the upgrade must carry `Authorization: Bearer TOKEN`.
    pub token: Option<String>,
    pub agent_id: String,
    /// If set, every reply waits for a permit before it ends (its text is
    /// all sent): a test holds replies open this way, without timing.
    pub gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            mode: Mode::Echo,
            chunks: 4,
            chunk_delay: Duration::from_millis(150),
            status_delay: Duration::ZERO,
            token: None,
            agent_id: "surfaces-reference-agent".into(),
            gate: None,
        }
    }
}

/// Accept connections until the listener fails; one task per connection.
pub async fn serve(listener: TcpListener, config: ServerConfig) -> std::io::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        let config = config.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, config).await {
                tracing::debug!(%peer, "agent connection ended: {e}");
            }
        });
    }
}

struct Stream {
    pieces: Vec<String>,
    sent: usize,
    tokens: u64,
    next_at: Instant,
    /// Its text is all sent; it ends when the gate lets it.
    at_gate: bool,
    /// The files that came with the message: sent back, after the text,
    /// as the echo's own.
    files: Vec<proto::Attachment>,
}

/// Send what is left of a reply (its files), then its end.
async fn finish<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, s: Stream) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    for f in s.files {
        send(
            ws,
            &ServerFrame::AgentEventAttachment {
                name: format!("echo-{}", f.name),
                mime: f.mime,
                url: f.url,
            },
        )
        .await?;
    }
    send(
        ws,
        &ServerFrame::AgentEventEnd {
            tokens_used: s.tokens,
        },
    )
    .await
}

/// A line about each file that came with a message: name, type, size and
/// SHA-256 of its bytes (so a test, or an operator, sees exactly what
/// arrived).
fn describe(files: &[proto::Attachment]) -> String {
    use sha2::{Digest, Sha256};
    files
        .iter()
        .map(|f| match proto::read_data_url(&f.url) {
            Ok((_, bytes)) => {
                let hash: String = Sha256::digest(&bytes)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                format!(
                    "\n\n📎 {} ({}, {} bytes, sha256 {hash})",
                    f.name,
                    f.mime,
                    bytes.len()
                )
            }
            Err(e) => format!("\n\n📎 {} could not be read: {e}", f.name),
        })
        .collect()
}

/// Serve one connection: handshake (checking the token), `status`, then
/// requests one at a time.
pub async fn serve_connection<S>(io: S, config: ServerConfig) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let token = config.token.clone();
    // The callback's signature is tungstenite's.
    #[allow(clippy::result_large_err)]
    let check = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let Some(token) = &token else {
            return Ok(resp);
        };
        let ok = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == format!("Bearer {token}"));
        if ok {
            Ok(resp)
        } else {
            let mut denied = ErrorResponse::new(Some("missing or wrong bearer token".into()));
            *denied.status_mut() = StatusCode::UNAUTHORIZED;
            Err(denied)
        }
    };
    let mut ws =
        tokio_tungstenite::accept_hdr_async_with_config(io, check, Some(super::ws_config()))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
    if config.mode == Mode::Silent {
        // Hold the connection open, read nothing, answer nothing.
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(config.status_delay).await;
    // A fresh connection is a fresh context.
    send(&mut ws, &status(&config, 0)).await?;
    if config.mode == Mode::Mute {
        std::future::pending::<()>().await;
    }
    let mut stream: Option<Stream> = None;
    loop {
        let next_at = stream.as_ref().filter(|s| !s.at_gate).map(|s| s.next_at);
        let at_gate = stream.as_ref().is_some_and(|s| s.at_gate);
        let gate = config.gate.clone();
        tokio::select! {
            permit = async { gate.as_ref()?.acquire().await.ok() }, if at_gate => {
                if let Some(permit) = permit {
                    permit.forget();
                }
                if let Some(s) = stream.take() {
                    finish(&mut ws, s).await?;
                }
            }
            frame = ws.next() => {
                let Some(frame) = frame else { return Ok(()) };
                let text = match frame.map_err(|e| e.to_string())? {
                    Message::Text(t) => t.to_string(),
                    Message::Close(_) => return Ok(()),
                    _ => continue,
                };
                if config.mode == Mode::Stall {
                    continue; // reads (so pings are answered), answers nothing
                }
                match proto::decode_client(&text) {
                    Ok(ClientFrame::UserMessage { text, attachments, .. }) => {
                        if stream.is_some() || config.mode == Mode::Busy {
                            send(&mut ws, &ServerFrame::Error {
                                code: proto::ErrorCode::Busy,
                                message: "a request is already in flight".into(),
                            }).await?;
                            continue;
                        }
                        let mut reply = match &config.mode {
                            Mode::Script(s) => s.clone(),
                            _ => text.clone(),
                        };
                        reply.push_str(&describe(&attachments));
                        let pieces = split(&reply, config.chunks);
                        let tokens = (text.split_whitespace().count() + reply.split_whitespace().count()) as u64;
                        stream = Some(Stream {
                            pieces,
                            sent: 0,
                            tokens,
                            next_at: Instant::now() + config.chunk_delay,
                            at_gate: false,
                            files: attachments,
                        });
                    }
                    Ok(ClientFrame::Cancel) => {
                        if let Some(s) = stream.take() {
                            let partial = s.tokens * s.sent as u64 / s.pieces.len().max(1) as u64;
                            send(&mut ws, &ServerFrame::AgentEventEnd { tokens_used: partial }).await?;
                        }
                    }
                    Ok(ClientFrame::Reset) => {
                        stream = None;
                        send(&mut ws, &status(&config, 0)).await?;
                    }
                    Ok(ClientFrame::Feedback { key, sender, .. }) => {
                        // Never answered; shown so an operator sees it arrive.
                        eprintln!("surfaces-agent: feedback {key} from {}", sender.id);
                    }
                    Err(e) => {
                        send(&mut ws, &ServerFrame::Error {
                            code: proto::ErrorCode::BadRequest,
                            message: e.to_string(),
                        }).await?;
                    }
                }
            }
            _ = sleep_until(next_at.unwrap_or_else(Instant::now)), if next_at.is_some() => {
                let Some(s) = stream.as_mut() else { continue };
                let half = s.pieces.len().div_ceil(2);
                let misbehave = matches!(config.mode, Mode::DropMidReply | Mode::Malformed);
                if misbehave && s.sent == half {
                    if config.mode == Mode::DropMidReply {
                        // Vanish without a close frame.
                        return Ok(());
                    }
                    ws.send(Message::Text("{\"type\": \"agent_event_text_chunk\", \"text\": ".into()))
                        .await
                        .map_err(|e| e.to_string())?;
                    let tokens = s.tokens;
                    stream = None;
                    send(&mut ws, &ServerFrame::AgentEventEnd { tokens_used: tokens }).await?;
                    continue;
                }
                if s.sent < s.pieces.len() {
                    let text = s.pieces[s.sent].clone();
                    s.sent += 1;
                    s.next_at = Instant::now() + config.chunk_delay;
                    send(&mut ws, &ServerFrame::AgentEventTextChunk { text }).await?;
                } else if config.gate.is_some() {
                    s.at_gate = true;
                } else if let Some(s) = stream.take() {
                    finish(&mut ws, s).await?;
                }
            }
        }
    }
}

fn status(config: &ServerConfig, context_tokens: u64) -> ServerFrame {
    ServerFrame::Status {
        state: proto::AgentState::Ready,
        agent_id: Some(config.agent_id.clone()),
        context_tokens: Some(context_tokens),
    }
}

async fn send<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    frame: &ServerFrame,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.send(Message::Text(proto::encode_server(frame).into()))
        .await
        .map_err(|e| e.to_string())
}

/// Cut `text` into about `n` pieces at char boundaries.
fn split(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return Vec::new();
    }
    let size = chars.len().div_ceil(n.max(1));
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}
