//! The agent client: one WebSocket per agent context, kept open.
//!
//! A task per connection turns the guest's agent effects (submit, cancel,
//! reset) into frames, and frames into guest events (chunk, end, error,
//! status). It connects when the first `status` frame arrives (with a
//! timeout), pings, treats a silent connection as lost, and reconnects with
//! exponential backoff and jitter, saying so in `agent-status` events. One
//! request is in flight per connection: a second one is refused as `busy`.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use surfaces_embed::{
    AgentChunk, AgentEnd, AgentError, AgentErrorKind, AgentMessage, AgentStatus, ConnectionState,
    Event,
};
use surfaces_protocol::{self as proto, ClientFrame, ServerFrame};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::server::{self, ServerConfig};

/// Where the agent is.
#[derive(Clone, Debug)]
pub enum Backend {
    /// A WebSocket URL, used exactly as given, and an optional bearer token.
    Url { url: String, token: Option<String> },
    /// The reference server's echo, in process over an in-memory pipe.
    Echo(ServerConfig),
}

#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub backend: Backend,
    /// Upgrade plus first `status` must complete within this.
    pub connect_timeout: Duration,
    /// A connection with no frame (not even a pong) for this long is lost.
    pub idle_timeout: Duration,
    pub ping_interval: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl ClientConfig {
    pub fn new(backend: Backend) -> Self {
        ClientConfig {
            backend,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            ping_interval: Duration::from_secs(20),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// What the host asks of a connection.
#[derive(Debug)]
pub enum Command {
    Submit {
        request: u64,
        message: AgentMessage,
    },
    Cancel,
    Reset,
    /// Close the connection and end the task.
    Close,
}

/// The host's end of one agent connection.
#[derive(Clone, Debug)]
pub struct AgentHandle {
    tx: mpsc::UnboundedSender<Command>,
}

impl AgentHandle {
    /// Queue a command; false if the connection task has ended.
    pub fn send(&self, command: Command) -> bool {
        self.tx.send(command).is_ok()
    }
}

/// Start the connection task for `context_id`; its events go to `events`.
pub fn spawn(
    context_id: String,
    config: ClientConfig,
    events: mpsc::UnboundedSender<Event>,
) -> AgentHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let conn = Connection {
        context_id,
        config,
        events,
        commands: rx,
        in_flight: None,
        draining: false,
        waiting: None,
        seed: 0x9e37_79b9_7f4a_7c15,
    };
    tokio::spawn(conn.run());
    AgentHandle { tx }
}

type Ws = WebSocketStream<Box<dyn Io>>;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

enum Ended {
    /// The host asked to close (or dropped its handle).
    Closed,
    /// The connection failed; the reason is for logs and status.
    Lost(String),
}

struct Connection {
    context_id: String,
    config: ClientConfig,
    events: mpsc::UnboundedSender<Event>,
    commands: mpsc::UnboundedReceiver<Command>,
    in_flight: Option<u64>,
    /// After a malformed frame: drop the rest of that reply until it ends.
    draining: bool,
    /// A submit that arrived while connecting or draining.
    waiting: Option<(u64, AgentMessage)>,
    /// Jitter source (xorshift; randomness quality does not matter here).
    seed: u64,
}

impl Connection {
    async fn run(mut self) {
        let mut attempt: u32 = 0;
        loop {
            self.status(ConnectionState::Connecting, None, None);
            let connected = timeout(self.config.connect_timeout, self.connect()).await;
            let reason = match connected {
                Ok(Ok((ws, tokens))) => {
                    attempt = 0;
                    self.status(ConnectionState::Ready, tokens, None);
                    match self.session(ws).await {
                        Ended::Closed => return,
                        Ended::Lost(reason) => reason,
                    }
                }
                Ok(Err(e)) => e,
                Err(_) => format!(
                    "no status from the agent within {:?}",
                    self.config.connect_timeout
                ),
            };
            self.fail_all(AgentErrorKind::Disconnected, &reason);
            let delay = self.backoff(attempt);
            attempt = attempt.saturating_add(1);
            tracing::warn!(context = %self.context_id, "agent connection lost: {reason}; retrying in {delay:?}");
            self.status(
                ConnectionState::Disconnected,
                None,
                Some(format!("{reason}; retrying in {}s", delay.as_secs().max(1))),
            );
            if self.wait_refusing(delay).await {
                return;
            }
        }
    }

    /// Open the WebSocket and wait for the first `status`.
    async fn connect(&mut self) -> Result<(Ws, Option<u64>), String> {
        let mut ws: Ws = match &self.config.backend {
            Backend::Url { url, token } => {
                let mut request = url
                    .as_str()
                    .into_client_request()
                    .map_err(|e| format!("bad agent URL: {e}"))?;
                if let Some(token) = token {
                    let value = HeaderValue::from_str(&format!("Bearer {token}"))
                        .map_err(|_| "the agent token is not a valid header value".to_string())?;
                    request.headers_mut().insert("authorization", value);
                }
                let uri = request.uri().clone();
                if uri.scheme_str() != Some("ws") {
                    return Err(format!(
                        "unsupported agent URL scheme in {url}: only ws:// is built in so far"
                    ));
                }
                let host = uri.host().ok_or_else(|| format!("no host in {url}"))?;
                let port = uri.port_u16().unwrap_or(80);
                let tcp = tokio::net::TcpStream::connect((host, port))
                    .await
                    .map_err(|e| format!("cannot reach the agent at {host}:{port}: {e}"))?;
                let _ = tcp.set_nodelay(true);
                let boxed: Box<dyn Io> = Box::new(tcp);
                let (ws, _) = tokio_tungstenite::client_async(request, boxed)
                    .await
                    .map_err(|e| format!("agent handshake: {e}"))?;
                ws
            }
            Backend::Echo(server_config) => {
                let (client_io, server_io) = tokio::io::duplex(64 * 1024);
                let server_config = server_config.clone();
                tokio::spawn(async move {
                    let _ = server::serve_connection(server_io, server_config).await;
                });
                let boxed: Box<dyn Io> = Box::new(client_io);
                let (ws, _) = tokio_tungstenite::client_async("ws://echo.invalid/", boxed)
                    .await
                    .map_err(|e| format!("in-process echo agent: {e}"))?;
                ws
            }
        };
        loop {
            let frame = ws
                .next()
                .await
                .ok_or("the agent closed the connection before its status")?
                .map_err(|e| format!("agent connection: {e}"))?;
            if let Message::Text(text) = frame {
                match proto::decode_server(&text) {
                    Ok(ServerFrame::Status { context_tokens, .. }) => {
                        return Ok((ws, context_tokens));
                    }
                    Ok(_) => continue,
                    Err(e) => return Err(format!("agent broke the protocol: {e}")),
                }
            }
        }
    }

    /// Serve one open connection until it is lost or closed.
    async fn session(&mut self, mut ws: Ws) -> Ended {
        let mut last_frame = Instant::now();
        let mut next_ping = Instant::now() + self.config.ping_interval;
        loop {
            let idle_at = last_frame + self.config.idle_timeout;
            tokio::select! {
                frame = ws.next() => {
                    last_frame = Instant::now();
                    let ended = match frame {
                        None => Some(Ended::Lost("the agent closed the connection".into())),
                        Some(Err(e)) => Some(Ended::Lost(format!("agent connection: {e}"))),
                        Some(Ok(Message::Close(_))) => Some(Ended::Lost("the agent closed the connection".into())),
                        Some(Ok(Message::Text(text))) => self.on_frame(proto::decode_server(&text), &mut ws).await,
                        Some(Ok(Message::Binary(_))) => self.on_frame(Err(proto::ProtocolError::Binary), &mut ws).await,
                        Some(Ok(_)) => None, // ping (answered by tungstenite), pong
                    };
                    if let Some(ended) = ended {
                        return ended;
                    }
                }
                command = self.commands.recv() => {
                    let result = match command {
                        None | Some(Command::Close) => {
                            self.fail_all(AgentErrorKind::Disconnected, "the host closed the connection");
                            let _ = ws.close(None).await;
                            return Ended::Closed;
                        }
                        Some(Command::Submit { request, message }) => {
                            if self.in_flight.is_some() && !self.draining || self.waiting.is_some() {
                                self.refuse(request, AgentErrorKind::Busy, "a request is already in flight on this connection");
                                Ok(())
                            } else if self.draining {
                                self.waiting = Some((request, message));
                                Ok(())
                            } else {
                                self.submit(&mut ws, request, message).await
                            }
                        }
                        Some(Command::Cancel) => {
                            if self.in_flight.is_some() {
                                send(&mut ws, &ClientFrame::Cancel).await
                            } else {
                                Ok(())
                            }
                        }
                        Some(Command::Reset) => send(&mut ws, &ClientFrame::Reset).await,
                    };
                    if let Err(e) = result {
                        return Ended::Lost(e);
                    }
                }
                _ = sleep_until(next_ping) => {
                    next_ping = Instant::now() + self.config.ping_interval;
                    if let Err(e) = ws.send(Message::Ping(Vec::new().into())).await {
                        return Ended::Lost(format!("agent connection: {e}"));
                    }
                }
                _ = sleep_until(idle_at) => {
                    return Ended::Lost(format!("no frame from the agent for {:?}", self.config.idle_timeout));
                }
            }
        }
    }

    async fn submit(
        &mut self,
        ws: &mut Ws,
        request: u64,
        message: AgentMessage,
    ) -> Result<(), String> {
        let frame = ClientFrame::UserMessage {
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
                    name: a.name,
                    mime: a.mime,
                    url: a.url,
                })
                .collect(),
        };
        self.in_flight = Some(request);
        send(ws, &frame).await
    }

    /// Turn one frame into events. Returns how the session ended, if it did.
    async fn on_frame(
        &mut self,
        frame: Result<ServerFrame, proto::ProtocolError>,
        ws: &mut Ws,
    ) -> Option<Ended> {
        match frame {
            Ok(ServerFrame::Status { context_tokens, .. }) => {
                self.status(ConnectionState::Ready, context_tokens, None);
            }
            Ok(ServerFrame::AgentEventTextChunk { text }) => {
                if let (Some(request), false) = (self.in_flight, self.draining) {
                    self.emit(Event::AgentChunk(AgentChunk { request, text }));
                }
            }
            Ok(ServerFrame::AgentEventEnd { tokens_used }) => {
                if let Some(request) = self.in_flight.take() {
                    if !self.draining {
                        self.emit(Event::AgentEnd(AgentEnd {
                            request,
                            tokens_used,
                        }));
                    }
                    return self.next_waiting(ws).await;
                }
            }
            Ok(ServerFrame::Error { code, message }) => {
                if let Some(request) = self.in_flight.take() {
                    if !self.draining {
                        let kind = match code {
                            proto::ErrorCode::Busy => AgentErrorKind::Busy,
                            proto::ErrorCode::BadRequest => AgentErrorKind::BadRequest,
                            proto::ErrorCode::ContextOverflow => AgentErrorKind::ContextOverflow,
                            proto::ErrorCode::Internal | proto::ErrorCode::Unknown => {
                                AgentErrorKind::Internal
                            }
                        };
                        self.emit(Event::AgentError(AgentError {
                            request,
                            kind,
                            message,
                        }));
                    }
                    return self.next_waiting(ws).await;
                }
            }
            Ok(ServerFrame::Unknown) => {}
            Err(e) => {
                tracing::warn!(context = %self.context_id, "agent sent a bad frame: {e}");
                if let (Some(request), false) = (self.in_flight, self.draining) {
                    self.draining = true;
                    self.emit(Event::AgentError(AgentError {
                        request,
                        kind: AgentErrorKind::Protocol,
                        message: e.to_string(),
                    }));
                    if let Err(e) = send(ws, &ClientFrame::Cancel).await {
                        return Some(Ended::Lost(e));
                    }
                }
            }
        }
        None
    }

    /// The request in flight is over: send the one that waited, if any.
    async fn next_waiting(&mut self, ws: &mut Ws) -> Option<Ended> {
        self.draining = false;
        let (request, message) = self.waiting.take()?;
        self.submit(ws, request, message)
            .await
            .err()
            .map(Ended::Lost)
    }

    /// While disconnected: wait out the backoff, refusing submits at once
    /// (the guest keeps the message queued). True if asked to close.
    async fn wait_refusing(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = sleep_until(until) => return false,
                command = self.commands.recv() => match command {
                    None | Some(Command::Close) => return true,
                    Some(Command::Submit { request, .. }) => {
                        self.refuse(request, AgentErrorKind::Disconnected, "the agent is not connected");
                    }
                    Some(Command::Cancel | Command::Reset) => {}
                },
            }
        }
    }

    fn fail_all(&mut self, kind: AgentErrorKind, why: &str) {
        self.draining = false;
        let lost: Vec<u64> = self
            .in_flight
            .take()
            .into_iter()
            .chain(self.waiting.take().map(|w| w.0))
            .collect();
        for request in lost {
            self.refuse(request, kind, why);
        }
    }

    fn refuse(&self, request: u64, kind: AgentErrorKind, why: &str) {
        self.emit(Event::AgentError(AgentError {
            request,
            kind,
            message: why.to_string(),
        }));
    }

    fn status(&self, state: ConnectionState, context_tokens: Option<u64>, detail: Option<String>) {
        self.emit(Event::AgentStatus(AgentStatus {
            context_id: self.context_id.clone(),
            state,
            context_tokens,
            detail,
        }));
    }

    fn emit(&self, event: Event) {
        // The host stopped listening: it is shutting down.
        let _ = self.events.send(event);
    }

    /// Exponential backoff with "full jitter" in its upper half.
    fn backoff(&mut self, attempt: u32) -> Duration {
        let base = self
            .config
            .backoff_min
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.config.backoff_max);
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let half = base / 2;
        half + Duration::from_nanos(self.seed % (half.as_nanos() as u64 + 1))
    }
}

async fn send(ws: &mut Ws, frame: &ClientFrame) -> Result<(), String> {
    ws.send(Message::Text(proto::encode_client(frame).into()))
        .await
        .map_err(|e| format!("agent connection: {e}"))
}
