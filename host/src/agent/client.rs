//! The agent client: one WebSocket per agent context, kept open.
//!
//! A task per connection turns the guest's agent effects (submit, cancel,
//! reset) into frames, and frames into guest events (chunk, end, error,
//! status). It connects when the first `status` frame arrives (with a
//! timeout), pings, treats a silent connection as lost, and reconnects with
//! exponential backoff and jitter, saying so in `agent-status` events. One
//! request is in flight per connection: a second one is refused as `busy`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use surfaces_embed::media::{self, MediaRef};
use surfaces_embed::{
    Action, AgentAttachment, AgentFeedback, AgentMessage, AgentSession, Event, Link, Media,
};
use surfaces_protocol as proto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::server::{self, ServerConfig};
use crate::channels::InboundSender;
use crate::config::Secret;
use crate::media::{Files, KeptFile};
use crate::time::sleep_until_opt;

/// Where the agent is.
#[derive(Clone, Debug)]
pub enum Backend {
    /// A WebSocket URL, used exactly as given, and an optional bearer token.
    Url { url: String, token: Option<Secret> },
    /// The reference server's echo, in process over an in-memory pipe.
    Echo(ServerConfig),
}

#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub backend: Backend,
    /// TLS for `wss://` URLs (see [`super::tls::client_config`]).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Upgrade plus first `status` must complete within this.
    pub connect_timeout: Duration,
    /// A connection with no frame (not even a pong) for this long is lost.
    pub idle_timeout: Duration,
    pub ping_interval: Duration,
    /// A reply with no frame for this long fails (and is cancelled), even
    /// on a connection that still answers pings.
    pub reply_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Replies longer than this are cut ([`AgentSession::with_max_reply_bytes`]).
    pub max_reply_bytes: usize,
    /// Users' files to fetch and the agent's to keep (none: every file
    /// fails its request, every file from the agent is dropped).
    pub files: Option<Files>,
}

impl ClientConfig {
    pub fn new(backend: Backend) -> Self {
        ClientConfig {
            backend,
            tls: None,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            ping_interval: Duration::from_secs(20),
            reply_timeout: Duration::from_secs(120),
            max_reply_bytes: surfaces_embed::agent::MAX_REPLY_BYTES,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            files: None,
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
    Feedback(AgentFeedback),
    /// Close the connection and end the task (idle: the guest is not told).
    Close,
    /// Close the connection for good: the guest hears the agent is gone,
    /// so it stops resubmitting.
    Shutdown,
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
pub fn spawn(context_id: String, config: ClientConfig, events: InboundSender) -> AgentHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let seed = jitter_seed(&context_id);
    let conn = Connection {
        session: AgentSession::new(context_id)
            .with_max_reply_bytes(config.max_reply_bytes)
            .with_max_attachment_bytes(
                config
                    .files
                    .as_ref()
                    .map_or(surfaces_embed::MAX_ATTACHMENT_BYTES, |f| f.max_bytes),
            ),
        config,
        events,
        commands: rx,
        out: Vec::new(),
        seed,
        shutting_down: false,
        ready_since: Instant::now(),
    };
    tokio::spawn(conn.run());
    AgentHandle { tx }
}

/// A jitter seed of the connection's own: connections that dropped together
/// (the agent restarted) must not come back in lockstep. From the context
/// id and the process's random hasher keys; never zero (xorshift's fixed
/// point).
fn jitter_seed(context_id: &str) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(context_id.as_bytes());
    h.finish() | 1
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

/// The I/O shell around one [`AgentSession`]: it owns the socket, the
/// timers and the backoff; the session decides what frames and events mean.
struct Connection {
    session: AgentSession,
    config: ClientConfig,
    events: InboundSender,
    commands: mpsc::UnboundedReceiver<Command>,
    /// The session's pending actions (kept to reuse the allocation).
    out: Vec<Action>,
    /// Jitter source (xorshift; randomness quality does not matter here).
    seed: u64,
    shutting_down: bool,
    /// When the connection last became ready.
    ready_since: Instant,
}

/// A connection up this long counts as working: the backoff starts over.
const STABLE: Duration = Duration::from_secs(10);

impl Connection {
    async fn run(mut self) {
        let mut attempt: u32 = 0;
        loop {
            self.session.connecting(&mut self.out);
            self.deliver().await;
            let deadline = Instant::now() + self.config.connect_timeout;
            let reason = match self.open(deadline).await {
                Ok(ws) => match self.serve(ws, deadline).await {
                    Ended::Closed => return,
                    Ended::Lost(reason) => reason,
                },
                Err(Ended::Closed) => return,
                Err(Ended::Lost(reason)) => reason,
            };
            // An agent that says `status` and then hangs up must not be
            // retried at once forever: only a connection that stayed up a
            // while resets the backoff.
            if self.session.link() == Link::Ready && self.ready_since.elapsed() >= STABLE {
                attempt = 0;
            }
            let delay = self.backoff(attempt);
            attempt = attempt.saturating_add(1);
            tracing::warn!(context = %self.session.context_id(), "agent connection lost: {reason}; retrying in {delay:?}");
            self.session.lost(&reason, Some(delay), &mut self.out);
            self.deliver().await;
            if self.wait_down(delay).await {
                return;
            }
        }
    }

    /// Open the socket, taking commands meanwhile (submits wait).
    async fn open(&mut self, deadline: Instant) -> Result<Ws, Ended> {
        let opening = open_socket(self.config.backend.clone(), self.config.tls.clone());
        tokio::pin!(opening);
        loop {
            tokio::select! {
                ws = &mut opening => return ws.map_err(Ended::Lost),
                command = self.commands.recv() => {
                    if !self.command(command).await {
                        return Err(self.close().await);
                    }
                    self.deliver().await;
                }
                _ = sleep_until(deadline) => return Err(self.connect_timed_out()),
            }
        }
    }

    /// Serve one open connection until it is lost or closed.
    async fn serve(&mut self, mut ws: Ws, connect_deadline: Instant) -> Ended {
        let mut last_frame = Instant::now();
        let mut next_ping = Instant::now() + self.config.ping_interval;
        // The request in flight and when it last made progress.
        let mut progress: Option<(u64, Instant)> = None;
        loop {
            // Until the first status, the connect deadline; then the idle limit.
            let (limit, ready) = match self.session.link() {
                Link::Ready => (last_frame + self.config.idle_timeout, true),
                _ => (connect_deadline, false),
            };
            progress = match (self.session.in_flight(), progress) {
                (None, _) => None,
                (Some(r), Some((p, at))) if r == p => Some((p, at)),
                (Some(r), _) => Some((r, Instant::now())),
            };
            let stall_at = progress.map(|(_, at)| at + self.config.reply_timeout);
            tokio::select! {
                frame = ws.next() => {
                    last_frame = Instant::now();
                    if let (Some((r, _)), Some(Ok(Message::Text(_)))) = (progress, &frame) {
                        progress = Some((r, last_frame));
                    }
                    let result = match frame {
                        None | Some(Ok(Message::Close(_))) => Err("the agent closed the connection".to_string()),
                        Some(Err(e)) => Err(format!("agent connection: {e}")),
                        Some(Ok(Message::Text(text))) => self.session.on_text(&text, &mut self.out).map_err(|b| b.0),
                        Some(Ok(Message::Binary(_))) => self.session.on_binary(&mut self.out).map_err(|b| b.0),
                        Some(Ok(_)) => Ok(()), // ping (answered by tungstenite), pong
                    };
                    if let Err(reason) = result {
                        return Ended::Lost(reason);
                    }
                }
                command = self.commands.recv() => {
                    let began = Instant::now();
                    if !self.command(command).await {
                        let ended = self.close().await;
                        let _ = ws.close(None).await;
                        return ended;
                    }
                    // A submit fetches its files before it goes: the time
                    // the socket was not read is no silence of the agent's.
                    // Its frames meanwhile wait in the socket; a ping now
                    // tells whether it is still there.
                    let away = began.elapsed();
                    if away >= self.config.ping_interval {
                        last_frame += away;
                        next_ping = Instant::now();
                        progress = progress.map(|(r, at)| (r, at + away));
                    }
                }
                _ = sleep_until(next_ping) => {
                    next_ping = Instant::now() + self.config.ping_interval;
                    if let Err(e) = ws.send(Message::Ping(Vec::new().into())).await {
                        return Ended::Lost(format!("agent connection: {e}"));
                    }
                }
                _ = sleep_until_opt(stall_at) => {
                    let why = format!("no word from the agent for {:?}", self.config.reply_timeout);
                    tracing::warn!(context = %self.session.context_id(), "{why}");
                    progress = progress.map(|(r, _)| (r, Instant::now()));
                    if let Err(broken) = self.session.stalled(&why, &mut self.out) {
                        return Ended::Lost(broken.0);
                    }
                }
                _ = sleep_until(limit) => {
                    return if ready {
                        Ended::Lost(format!("no frame from the agent for {:?}", self.config.idle_timeout))
                    } else {
                        self.connect_timed_out()
                    };
                }
            }
            if !ready && self.session.link() == Link::Ready {
                self.ready_since = Instant::now();
            }
            if let Err(reason) = self.flush(&mut ws).await {
                return Ended::Lost(reason);
            }
        }
    }

    /// Hand a command to the session; false if the host asked to close.
    async fn command(&mut self, command: Option<Command>) -> bool {
        match command {
            None | Some(Command::Close) => return false,
            Some(Command::Shutdown) => {
                self.shutting_down = true;
                return false;
            }
            Some(Command::Submit { request, message }) => {
                match self.with_files(request, message).await {
                    Ok(message) => self.session.submit(request, message, &mut self.out),
                    Err(e) => self.out.push(Action::Deliver(Event::AgentError(e))),
                }
            }
            Some(Command::Cancel) => self.session.cancel(&mut self.out),
            Some(Command::Reset) => self.session.reset(&mut self.out),
            Some(Command::Feedback(f)) => self.session.feedback(f, &mut self.out),
        }
        true
    }

    /// The message with its users' files fetched and inline, or the error
    /// that fails it (a file not fetched in time, or too large). Other
    /// commands wait meanwhile: a cancel comes after the submit it cancels.
    async fn with_files(
        &self,
        request: u64,
        message: AgentMessage,
    ) -> Result<AgentMessage, surfaces_embed::AgentError> {
        let refs = media::to_fetch(&message);
        if refs.is_empty() {
            return Ok(message);
        }
        let Some(files) = &self.config.files else {
            let none: Vec<_> = refs
                .into_iter()
                .map(|r| (r, Err("this front end has no files".to_string())))
                .collect();
            return media::inline(request, message, &none, 0);
        };
        let names: Vec<_> = refs.clone();
        let fetched =
            match tokio::time::timeout(self.config.reply_timeout, files.fetch_all(refs)).await {
                Ok(fetched) => fetched,
                Err(_) => names
                    .into_iter()
                    .map(|r| (r, Err("it took too long to download".to_string())))
                    .collect(),
            };
        media::inline(request, message, &fetched, files.max_bytes)
    }

    /// Keep a file the agent sent and tell the guest; without a store it
    /// is dropped, in the log.
    fn keep(&self, request: u64, name: String, mime: String, bytes: Vec<u8>) -> Option<Event> {
        let Some(files) = &self.config.files else {
            tracing::warn!(
                request,
                "the agent sent a file ({name}): no store for it here"
            );
            return None;
        };
        let size = bytes.len() as u64;
        let file = KeptFile {
            name: name.clone(),
            mime: mime.clone(),
            bytes,
        };
        match files.kept.keep(&file, crate::time::now_ms()) {
            Ok(n) => Some(Event::AgentAttachment(AgentAttachment {
                request,
                media: Media {
                    id: MediaRef::Kept(n).id(),
                    kind: media::kind_of(&mime),
                    name,
                    mime,
                    size: Some(size),
                },
            })),
            Err(e) => {
                tracing::error!(request, "cannot keep the agent's file {name}: {e}");
                None
            }
        }
    }

    async fn close(&mut self) -> Ended {
        if self.shutting_down {
            self.session
                .lost("the bot is shutting down", None, &mut self.out);
        } else {
            self.session
                .closed("the host closed the connection", &mut self.out);
        }
        self.deliver().await;
        Ended::Closed
    }

    fn connect_timed_out(&self) -> Ended {
        Ended::Lost(format!(
            "no status from the agent within {:?}",
            self.config.connect_timeout
        ))
    }

    /// While disconnected: wait out the backoff; the session refuses
    /// submits at once (the guest keeps the message queued). True if asked
    /// to close.
    async fn wait_down(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = sleep_until(until) => return false,
                command = self.commands.recv() => {
                    if !self.command(command).await {
                        return true;
                    }
                    self.deliver().await;
                }
            }
        }
    }

    /// Carry out the session's actions on an open connection.
    async fn flush(&mut self, ws: &mut Ws) -> Result<(), String> {
        let mut actions = std::mem::take(&mut self.out);
        let mut result = Ok(());
        for action in actions.drain(..) {
            match action {
                Action::Deliver(event) => self.emit(event).await,
                Action::Send(frame) if result.is_ok() => {
                    result = ws
                        .send(Message::Text(proto::encode_client(&frame).into()))
                        .await
                        .map_err(|e| format!("agent connection: {e}"));
                }
                Action::Send(_) => {}
                Action::Keep {
                    request,
                    name,
                    mime,
                    bytes,
                } => {
                    if let Some(event) = self.keep(request, name, mime, bytes) {
                        self.emit(event).await;
                    }
                }
            }
        }
        self.out = actions;
        result
    }

    /// Carry out the session's actions with no connection open: the session
    /// only sends frames when it is ready, so there are only events.
    async fn deliver(&mut self) {
        let mut actions = std::mem::take(&mut self.out);
        for action in actions.drain(..) {
            if let Action::Deliver(event) = action {
                self.emit(event).await;
            }
        }
        self.out = actions;
    }

    /// Waits while the loop's channel is full: a connection whose events
    /// the loop cannot keep up with stops reading its socket, and the
    /// agent's writes wait in turn.
    async fn emit(&self, event: Event) {
        // The host stopped listening: it is shutting down.
        let _ = self.events.send(event).await;
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

/// Open the WebSocket (the session then waits for the first `status`).
async fn open_socket(
    backend: Backend,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Ws, String> {
    match backend {
        Backend::Url { url, token } => {
            let mut request = url
                .as_str()
                .into_client_request()
                .map_err(|e| format!("bad agent URL: {e}"))?;
            if let Some(token) = token {
                let value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .map_err(|_| "the agent token is not a valid header value".to_string())?;
                request.headers_mut().insert("authorization", value);
            }
            let uri = request.uri().clone();
            let secure = match uri.scheme_str() {
                Some("ws") => false,
                Some("wss") => true,
                _ => return Err(format!("the agent URL {url} is neither ws:// nor wss://")),
            };
            let host = uri.host().ok_or_else(|| format!("no host in {url}"))?;
            // An IPv6 literal comes bracketed in URLs, not in socket addresses.
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
            let tcp = tokio::net::TcpStream::connect((host, port))
                .await
                .map_err(|e| format!("cannot reach the agent at {host}:{port}: {e}"))?;
            let _ = tcp.set_nodelay(true);
            let io: Box<dyn Io> = if secure {
                let tls = tls.ok_or("wss:// needs a TLS configuration")?;
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| format!("bad agent host name {host}: {e}"))?;
                let stream = tokio_rustls::TlsConnector::from(tls)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with the agent at {host}:{port}: {e}"))?;
                Box::new(stream)
            } else {
                Box::new(tcp)
            };
            let (ws, _) =
                tokio_tungstenite::client_async_with_config(request, io, Some(super::ws_config()))
                    .await
                    .map_err(|e| format!("agent handshake: {e}"))?;
            Ok(ws)
        }
        Backend::Echo(server_config) => {
            let (client_io, server_io) = tokio::io::duplex(64 * 1024);
            tokio::spawn(async move {
                let _ = server::serve_connection(server_io, server_config).await;
            });
            let boxed: Box<dyn Io> = Box::new(client_io);
            let (ws, _) = tokio_tungstenite::client_async_with_config(
                "ws://echo.invalid/",
                boxed,
                Some(super::ws_config()),
            )
            .await
            .map_err(|e| format!("in-process echo agent: {e}"))?;
            Ok(ws)
        }
    }
}
