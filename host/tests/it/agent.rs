//! The agent client against real WebSocket servers on loopback: the
//! reference server in each of its modes, and servers that misbehave.
//!
//! Waits are on events; the timeouts only stop a broken test from hanging.

use std::sync::Arc;
use std::time::Duration;

use surfaces_embed::{AgentErrorKind, AgentMessage, ConnectionState, Event, Sender};
use surfaces_host::agent::client::{self, AgentHandle, Backend, ClientConfig, Command};
use surfaces_host::agent::server::{self, Mode, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const PATIENCE: Duration = Duration::from_secs(20);

async fn reference_server(config: ServerConfig) -> String {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(server::serve(listener, config));
    format!("ws://{addr}/agent")
}

fn fast(mode: Mode) -> ServerConfig {
    ServerConfig {
        mode,
        chunks: 4,
        chunk_delay: Duration::from_millis(5),
        ..ServerConfig::default()
    }
}

fn quick_client(backend: Backend) -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(600),
        ping_interval: Duration::from_millis(100),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        ..ClientConfig::new(backend)
    }
}

struct Agent {
    handle: AgentHandle,
    events: mpsc::Receiver<Event>,
}

impl Agent {
    fn start(config: ClientConfig) -> Agent {
        let (tx, events) = mpsc::channel(surfaces_host::channels::INBOUND_CAPACITY);
        let handle = client::spawn("shared".into(), config, tx);
        Agent { handle, events }
    }

    async fn next(&mut self) -> Event {
        tokio::time::timeout(PATIENCE, self.events.recv())
            .await
            .expect("an agent event in time")
            .expect("the client is running")
    }

    /// Skip events until one matches.
    async fn until(&mut self, what: &str, f: impl Fn(&Event) -> bool) -> Event {
        loop {
            let e = self.next().await;
            if f(&e) {
                return e;
            }
            if let Event::AgentStatus(_) = e {
                continue;
            }
            assert!(
                matches!(e, Event::AgentChunk(_)),
                "waiting for {what}, got {e:?}"
            );
        }
    }

    /// Wait for a `disconnected` status; its detail says why.
    async fn disconnected(&mut self) -> String {
        match self
            .until(
                "disconnected",
                |e| matches!(e, Event::AgentStatus(s) if s.state == ConnectionState::Disconnected),
            )
            .await
        {
            Event::AgentStatus(s) => s.detail.unwrap_or_default(),
            other => panic!("not a status: {other:?}"),
        }
    }

    async fn ready(&mut self) {
        self.until(
            "ready",
            |e| matches!(e, Event::AgentStatus(s) if s.state == ConnectionState::Ready),
        )
        .await;
    }

    fn submit(&self, request: u64, text: &str) {
        assert!(self.handle.send(Command::Submit {
            request,
            message: AgentMessage {
                text: text.into(),
                sender: Sender {
                    id: "@alice:test".into(),
                    display_name: Some("Alice".into()),
                },
                skills: vec!["code".into()],
                attachments: vec![],
            },
        }));
    }

    /// Collect a reply: its chunks, and how it ended.
    async fn reply(&mut self, request: u64) -> (String, Result<u64, AgentErrorKind>) {
        let mut text = String::new();
        loop {
            match self.next().await {
                Event::AgentChunk(c) if c.request == request => text.push_str(&c.text),
                Event::AgentEnd(e) if e.request == request => return (text, Ok(e.tokens_used)),
                Event::AgentError(e) if e.request == request => return (text, Err(e.kind)),
                Event::AgentStatus(_) => {}
                other => panic!("unexpected {other:?} during reply #{request}"),
            }
        }
    }
}

#[tokio::test]
async fn streams_a_reply_and_records_tokens() {
    let url = reference_server(fast(Mode::Echo)).await;
    let mut agent = Agent::start(quick_client(Backend::Url { url, token: None }));
    agent.ready().await;
    agent.submit(1, "hello there agent");
    let (text, end) = agent.reply(1).await;
    assert_eq!(text, "hello there agent");
    assert_eq!(end, Ok(6));
}

#[tokio::test]
async fn the_in_process_echo_backend_streams_in_chunks() {
    let mut agent = Agent::start(quick_client(Backend::Echo(fast(Mode::Echo))));
    agent.ready().await;
    agent.submit(7, "ping pong");
    let mut chunks = 0;
    loop {
        match agent.next().await {
            Event::AgentChunk(_) => chunks += 1,
            Event::AgentEnd(e) => {
                assert_eq!(e.request, 7);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(chunks > 1, "the echo should stream, got {chunks} chunk(s)");
}

#[tokio::test]
async fn a_submit_while_connecting_waits_for_the_status() {
    let url = reference_server(ServerConfig {
        status_delay: Duration::from_millis(200),
        ..fast(Mode::Echo)
    })
    .await;
    let mut agent = Agent::start(quick_client(Backend::Url { url, token: None }));
    agent.submit(1, "early bird");
    // Held until the connection is up (status received), then sent.
    let (text, end) = agent.reply(1).await;
    assert_eq!((text.as_str(), end.is_ok()), ("early bird", true));
}

#[tokio::test]
async fn a_second_request_in_flight_is_refused_as_busy() {
    let url = reference_server(ServerConfig {
        chunk_delay: Duration::from_millis(50),
        ..fast(Mode::Echo)
    })
    .await;
    let mut agent = Agent::start(quick_client(Backend::Url { url, token: None }));
    agent.ready().await;
    agent.submit(1, "first");
    agent.submit(2, "second");
    let refused = agent
        .until(
            "a busy refusal",
            |e| matches!(e, Event::AgentError(x) if x.request == 2),
        )
        .await;
    assert!(matches!(refused, Event::AgentError(ref x) if x.kind == AgentErrorKind::Busy));
    let (text, end) = agent.reply(1).await;
    assert_eq!((text.as_str(), end.is_ok()), ("first", true));
}

#[tokio::test]
async fn the_agent_refusing_as_busy_is_an_error_event() {
    let url = reference_server(fast(Mode::Busy)).await;
    let mut agent = Agent::start(quick_client(Backend::Url { url, token: None }));
    agent.ready().await;
    agent.submit(1, "anyone?");
    assert_eq!(
        agent.reply(1).await,
        (String::new(), Err(AgentErrorKind::Busy))
    );
}

#[tokio::test]
async fn a_connection_dropped_mid_reply_ends_it_and_reconnects() {
    let url = reference_server(fast(Mode::DropMidReply)).await;
    let mut agent = Agent::start(quick_client(Backend::Url { url, token: None }));
    agent.ready().await;
    agent.submit(1, "one two three four five six seven eight");
    let (text, end) = agent.reply(1).await;
    assert_eq!(end, Err(AgentErrorKind::Disconnected));
    assert!(!text.is_empty(), "half the reply arrived first");
    agent.disconnected().await;
    agent.ready().await; // reconnected by itself
}

#[tokio::test]
async fn a_malformed_frame_fails_the_request_and_the_next_one_works() {
    let url = reference_server(fast(Mode::Malformed)).await;
    let mut agent = Agent::start(quick_client(Backend::Url { url, token: None }));
    agent.ready().await;
    agent.submit(1, "one two three four");
    let (_, end) = agent.reply(1).await;
    assert_eq!(end, Err(AgentErrorKind::Protocol));
    // Sent while the rest of #1 drains: it waits, then goes through.
    agent.submit(2, "again");
    let (_, end) = agent.reply(2).await;
    assert_eq!(
        end,
        Err(AgentErrorKind::Protocol),
        "the malformed mode misbehaves every time"
    );
}

#[tokio::test]
async fn no_status_in_time_is_a_failed_connect_that_is_retried() {
    let url = reference_server(fast(Mode::Silent)).await;
    let mut agent = Agent::start(quick_client(Backend::Url { url, token: None }));
    let detail = agent.disconnected().await;
    assert!(detail.contains("no status"), "{detail}: detail says why");
    agent
        .until(
            "connecting again",
            |e| matches!(e, Event::AgentStatus(s) if s.state == ConnectionState::Connecting),
        )
        .await;
}

#[tokio::test]
async fn a_silent_connection_is_lost_after_the_idle_limit() {
    let url = reference_server(fast(Mode::Mute)).await;
    let mut agent = Agent::start(quick_client(Backend::Url { url, token: None }));
    agent.ready().await;
    let detail = agent.disconnected().await;
    assert!(detail.contains("no frame"), "{detail}: detail says why");
}

#[tokio::test]
async fn the_bearer_token_is_sent_and_checked() {
    let config = ServerConfig {
        token: Some("s3cret".into()),
        ..fast(Mode::Echo)
    };
    let url = reference_server(config).await;
    let mut good = Agent::start(quick_client(Backend::Url {
        url: url.clone(),
        token: Some("s3cret".into()),
    }));
    good.ready().await;
    let mut bad = Agent::start(quick_client(Backend::Url {
        url,
        token: Some("wrong".into()),
    }));
    let detail = bad.disconnected().await;
    assert!(detail.contains("401"), "{detail}: the 401 is reported");
}

#[tokio::test]
async fn cancel_ends_the_reply_with_partial_tokens_and_reset_reports_status() {
    let url = reference_server(ServerConfig {
        // Long enough that the cancel always lands mid-reply.
        chunk_delay: Duration::from_millis(100),
        chunks: 50,
        ..fast(Mode::Echo)
    })
    .await;
    let mut agent = Agent::start(quick_client(Backend::Url { url, token: None }));
    agent.ready().await;
    agent.submit(1, &"word ".repeat(50));
    agent
        .until("a first chunk", |e| matches!(e, Event::AgentChunk(_)))
        .await;
    assert!(agent.handle.send(Command::Cancel));
    let (_, end) = agent.reply(1).await;
    let tokens = end.expect("a cancelled reply ends normally");
    assert!(tokens < 100, "partial tokens, got {tokens}");
    assert!(agent.handle.send(Command::Reset));
    let e = agent
        .until("status", |e| matches!(e, Event::AgentStatus(_)))
        .await;
    assert!(
        matches!(e, Event::AgentStatus(ref s) if s.context_tokens == Some(0)),
        "{e:?}"
    );
}

#[tokio::test]
async fn an_unreachable_agent_is_reported_and_submits_are_refused() {
    // A port nobody listens on: bind, learn it, close.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let mut agent = Agent::start(quick_client(Backend::Url {
        url: format!("ws://{addr}/"),
        token: None,
    }));
    agent.disconnected().await;
    agent.submit(1, "hello?");
    let e = agent
        .until("a refusal", |e| matches!(e, Event::AgentError(_)))
        .await;
    assert!(matches!(e, Event::AgentError(ref x) if x.kind == AgentErrorKind::Disconnected));
}

/// A reference server behind TLS with a certificate for `localhost`,
/// signed by a fresh CA; returns the URL and the CA's PEM.
async fn tls_reference_server(config: ServerConfig) -> (String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA cert");
    let key = KeyPair::generate().expect("key");
    let params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let cert = params.signed_by(&key, &issuer).expect("cert");
    let server_tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .expect("server TLS");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let config = config.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let _ = server::serve_connection(tls, config).await;
                }
            });
        }
    });
    (format!("wss://localhost:{port}/agent"), ca.pem())
}

/// A client for `url` that trusts the system's roots and the CA in `pem`
/// (the directory holds the CA file while the test runs).
fn trusting(url: String, pem: &str) -> (tempfile::TempDir, ClientConfig) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, pem).expect("write CA");
    let mut config = quick_client(Backend::Url { url, token: None });
    config.tls =
        Some(surfaces_host::agent::tls::client_config(Some(&ca_file)).expect("TLS config"));
    (dir, config)
}

#[tokio::test]
async fn wss_with_a_private_ca_streams_a_reply() {
    let (url, ca_pem) = tls_reference_server(fast(Mode::Echo)).await;
    let (_dir, config) = trusting(url, &ca_pem);
    let mut agent = Agent::start(config);
    agent.ready().await;
    agent.submit(1, "over TLS");
    let (text, end) = agent.reply(1).await;
    assert_eq!(text, "over TLS");
    assert!(end.is_ok());
}

#[tokio::test]
async fn wss_to_an_untrusted_certificate_is_refused_and_says_why() {
    let (url, _) = tls_reference_server(fast(Mode::Echo)).await;
    // Trusts the system's roots and another CA, not the one that signed.
    let (_, other_ca) = tls_reference_server(fast(Mode::Echo)).await;
    let (_dir, config) = trusting(url, &other_ca);
    let mut agent = Agent::start(config);
    let why = agent.disconnected().await;
    assert!(why.contains("TLS") && why.contains("certificate"), "{why}");
}

#[test]
fn a_ca_file_that_is_not_pem_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, "not a certificate").expect("write");
    let err = surfaces_host::agent::tls::client_config(Some(&ca_file)).expect_err("refused");
    assert!(err.contains("ca.pem"), "{err}");
}

fn message(text: &str) -> AgentMessage {
    AgentMessage {
        text: text.into(),
        sender: Sender {
            id: "@alice:test".into(),
            display_name: None,
        },
        skills: vec![],
        attachments: vec![],
    }
}

/// A pool on the agent at `url`, and the guest's end of its events.
fn pool_at(
    url: String,
    max: usize,
    idle_close: Duration,
) -> (
    surfaces_host::agent::pool::AgentPool,
    mpsc::UnboundedReceiver<Event>,
) {
    let (tx, events) = mpsc::unbounded_channel();
    // The connections' events, on their bounded channel, join the pool's
    // own in one stream, as both reach the loop.
    let (inbound, mut from_connections) = mpsc::channel(64);
    let forward = tx.clone();
    tokio::spawn(async move {
        while let Some(event) = from_connections.recv().await {
            if forward.send(event).is_err() {
                break;
            }
        }
    });
    let pool = surfaces_host::agent::pool::AgentPool::new(
        quick_client(Backend::Url { url, token: None }),
        max,
        idle_close,
        tx,
        inbound,
    );
    (pool, events)
}

/// Tell the pool a request ended, as the loop does when it delivers it.
fn ended(pool: &mut surfaces_host::agent::pool::AgentPool, request: u64) {
    pool.observe(&Event::AgentEnd(surfaces_embed::AgentEnd {
        request,
        tokens_used: 0,
    }));
}

/// Events until `request` ends; returns its text and every status seen.
async fn pool_reply(
    events: &mut mpsc::UnboundedReceiver<Event>,
    request: u64,
) -> (String, Result<(), AgentErrorKind>, Vec<ConnectionState>) {
    let mut text = String::new();
    let mut states = Vec::new();
    loop {
        let event = tokio::time::timeout(PATIENCE, events.recv())
            .await
            .expect("an event in time")
            .expect("the pool is running");
        match event {
            Event::AgentChunk(c) if c.request == request => text.push_str(&c.text),
            Event::AgentEnd(e) if e.request == request => return (text, Ok(()), states),
            Event::AgentError(e) if e.request == request => return (text, Err(e.kind), states),
            Event::AgentStatus(s) => states.push(s.state),
            _ => {}
        }
    }
}

#[tokio::test]
async fn the_pool_keeps_a_connection_per_context_within_its_cap() {
    let url = reference_server(fast(Mode::Echo)).await;
    let (mut pool, mut events) = pool_at(url, 2, Duration::from_secs(3600));
    for (request, context) in [(1, "!a:test"), (2, "!b:test"), (3, "!c:test")] {
        pool.submit(context, request, message(context));
        let (text, end, _) = pool_reply(&mut events, request).await;
        assert_eq!((text.as_str(), end), (context, Ok(())));
        ended(&mut pool, request);
        assert!(pool.len() <= 2, "the cap holds: {}", pool.len());
    }
    // Both open connections busy: a third context is refused, not queued
    // without bound (the guest keeps the message and retries).
    pool.submit("!a:test", 4, message("one"));
    pool.submit("!b:test", 5, message("two"));
    pool.submit("!d:test", 6, message("three"));
    let (_, end, _) = pool_reply(&mut events, 6).await;
    assert_eq!(end, Err(AgentErrorKind::Busy));
}

#[tokio::test]
async fn an_idle_context_is_closed_quietly_and_reopened_on_use() {
    let url = reference_server(fast(Mode::Echo)).await;
    let (mut pool, mut events) = pool_at(url, 4, Duration::ZERO);
    pool.submit("!room:test", 1, message("first"));
    let (text, _, _) = pool_reply(&mut events, 1).await;
    assert_eq!(text, "first");
    ended(&mut pool, 1);
    pool.sweep();
    assert!(pool.is_empty(), "the idle room connection is closed");
    pool.submit("!room:test", 2, message("second"));
    let (text, end, states) = pool_reply(&mut events, 2).await;
    assert_eq!((text.as_str(), end), ("second", Ok(())));
    assert!(
        !states.contains(&ConnectionState::Disconnected),
        "closing for idleness is not an outage: {states:?}"
    );
}

#[tokio::test]
async fn a_reply_the_agent_stops_sending_fails_and_then_the_connection_is_dropped() {
    let url = reference_server(fast(Mode::Stall)).await;
    let mut config = quick_client(Backend::Url { url, token: None });
    config.reply_timeout = Duration::from_millis(150);
    // Pings keep the connection alive; only the reply is stuck.
    config.idle_timeout = Duration::from_secs(30);
    config.ping_interval = Duration::from_millis(20);
    let mut agent = Agent::start(config);
    agent.ready().await;
    agent.submit(1, "anyone there?");
    let (text, end) = agent.reply(1).await;
    assert_eq!((text.as_str(), end), ("", Err(AgentErrorKind::Internal)));
    // The agent ignores the cancel too: the connection is given up.
    let why = agent.disconnected().await;
    assert!(why.contains("ignored a cancel"), "{why}");
    agent.ready().await;
}

#[tokio::test]
async fn a_context_the_guest_was_told_is_down_is_never_closed_quietly() {
    let url = reference_server(fast(Mode::DropMidReply)).await;
    let (mut pool, mut events) = pool_at(url, 4, Duration::ZERO);
    pool.submit("!room:test", 1, message("a reply that is dropped half way"));
    // The guest hears the connection is down (and waits for `ready`): a
    // quiet close now would leave it waiting for ever.
    loop {
        let event = tokio::time::timeout(PATIENCE, events.recv())
            .await
            .expect("an event in time")
            .expect("the pool is running");
        pool.observe(&event);
        if matches!(&event, Event::AgentStatus(s) if s.state == ConnectionState::Disconnected) {
            break;
        }
    }
    pool.sweep();
    assert_eq!(pool.len(), 1, "the reconnecting context is kept");
}

/// A homeserver whose downloads take `delay` (a slow link): the fetch is
/// the fault injected, not a wait of the test's.
struct SlowFetch {
    delay: Duration,
    bytes: Vec<u8>,
}

impl surfaces_host::media::Fetch for SlowFetch {
    fn fetch(&self, _: surfaces_embed::media::MediaRef) -> surfaces_host::media::Fetched {
        let (delay, bytes) = (self.delay, self.bytes.clone());
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Ok(bytes)
        })
    }
}

#[tokio::test]
async fn a_file_slower_to_download_than_the_idle_limit_still_goes_and_comes_back() {
    use surfaces_embed::Attachment;
    use surfaces_embed::media::MediaRef;
    use surfaces_host::media::{Files, Kept};
    let url = reference_server(fast(Mode::Echo)).await;
    let kept = Arc::new(Kept::in_memory().expect("a store"));
    let config = ClientConfig {
        files: Some(Files {
            fetch: Some(Arc::new(SlowFetch {
                // Past the client's idle limit (600 ms): the agent said
                // nothing meanwhile, and that is no fault of the agent's.
                delay: Duration::from_millis(1_500),
                bytes: vec![1, 2, 3],
            })),
            kept: kept.clone(),
            max_bytes: 1 << 20,
        }),
        ..quick_client(Backend::Url { url, token: None })
    };
    let mut agent = Agent::start(config);
    agent.ready().await;
    let file = MediaRef::Event {
        room_id: "!dm:test".into(),
        event_id: "$f".into(),
    };
    assert!(agent.handle.send(Command::Submit {
        request: 1,
        message: AgentMessage {
            attachments: vec![Attachment {
                name: "a.png".into(),
                mime: "image/png".into(),
                url: file.id(),
            }],
            ..message("what is this?")
        },
    }));
    let mut text = String::new();
    let mut back = None;
    loop {
        match agent.next().await {
            Event::AgentChunk(c) => text.push_str(&c.text),
            Event::AgentAttachment(a) => back = Some(a),
            Event::AgentEnd(_) => break,
            Event::AgentStatus(s) => assert_ne!(
                s.state,
                ConnectionState::Disconnected,
                "the connection dropped while the file downloaded: {s:?}"
            ),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        text,
        "what is this?\n\n📎 a.png (image/png, 3 bytes, sha256 \
         039058c6f2c0cb492c533b0a4d14ef77cc0f78abccced5287d84a1a2011cfb81)"
    );
    // The reference agent sends the file back; the host keeps it for the
    // guest, which names it by the id in the event.
    let back = back.expect("the agent's file");
    assert_eq!(back.media.name, "echo-a.png");
    let Some(MediaRef::Kept(n)) = MediaRef::parse(&back.media.id) else {
        panic!("not a kept file: {}", back.media.id);
    };
    let kept_file = kept.get(n).expect("reads").expect("kept");
    assert_eq!(kept_file.bytes, vec![1, 2, 3]);
}
