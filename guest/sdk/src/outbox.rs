//! Sends and joins kept until the homeserver confirms them: the promise
//! every surfaces guest keeps (each message meant for the bot ends in an
//! answer) for a guest that answers with plain messages.
//!
//! A request is a record under `out/msg/{request}` until its outcome
//! arrives. A rate limit waits the homeserver's `retry_after`, an outage
//! waits a little, an unknown failure backs off (five times at most); a
//! refusal for good (forbidden, too large, not found) gives up, in the
//! log. Each try reuses the request id, so the homeserver keeps one copy
//! of a send that landed after all. After a host restart (`resumed`
//! false) [`resume`] makes again what was never confirmed, after the
//! wait its last failure asked for.
//!
//! Its ids come from [`Records::next_id`], as every id a guest uses must:
//! then no id of the guest's own is ever the outbox's.
//!
//! ```ignore
//! // in init:      outbox::resume(host, info.resumed)?;
//! // to answer:    outbox::send(host, &m.room_id, &content)?;
//! // on invite:    outbox::join(host, &invite.room_id)?;
//! // Event::MatrixResult(r) => if outbox::on_result(host, &r)? { return Ok(()) } ...
//! // Event::Timer(id)       => if outbox::on_timer(host, id)? { return Ok(()) } ...
//! ```

use serde::{Deserialize, Serialize};

use crate::host::Host;
use crate::store::{Key, Prefix, Records, numbered};
use crate::types::{MatrixErrorKind, MatrixResult, MessageContent};

/// Unknown failures a request survives before it is given up.
pub const MAX_FAILURES: u32 = 5;

/// A request not yet confirmed: `out/msg/{request:020}`.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    what: Request,
    failures: u32,
    /// How long the last failure asked to wait (0: none): after a host
    /// restart, it waits that long again before it goes out, so a 429's
    /// `retry_after` holds across restarts too.
    #[serde(default)]
    hold_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
enum Request {
    Send {
        room_id: String,
        content: StoredContent,
    },
    Join {
        room_id: String,
    },
}

/// [`MessageContent`] as a record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredContent {
    pub body: String,
    pub formatted_body: Option<String>,
    pub notice: bool,
    pub live: bool,
    pub thread_root: Option<String>,
    pub reply_to: Option<String>,
    pub mentions: Vec<String>,
}

impl From<&MessageContent> for StoredContent {
    fn from(c: &MessageContent) -> Self {
        StoredContent {
            body: c.body.clone(),
            formatted_body: c.formatted_body.clone(),
            notice: c.notice,
            live: c.live,
            thread_root: c.thread_root.clone(),
            reply_to: c.reply_to.clone(),
            mentions: c.mentions.clone(),
        }
    }
}

impl From<&StoredContent> for MessageContent {
    fn from(c: &StoredContent) -> Self {
        MessageContent {
            body: c.body.clone(),
            formatted_body: c.formatted_body.clone(),
            notice: c.notice,
            live: c.live,
            thread_root: c.thread_root.clone(),
            reply_to: c.reply_to.clone(),
            mentions: c.mentions.clone(),
        }
    }
}

const PENDING: Prefix<Pending> = Prefix::new("out/msg/");
/// The outbox's timers, by timer id: which request they make again.
const TIMERS: Prefix<u64> = Prefix::new("out/timer/");

fn pending_key(request: u64) -> Key<Pending> {
    Key::new(numbered(PENDING.as_str(), request, 20))
}

fn timer_key(id: u64) -> Key<u64> {
    Key::new(numbered(TIMERS.as_str(), id, 20))
}

/// Send `content` to `room_id` until it is confirmed; the request id.
pub fn send(host: &mut dyn Host, room_id: &str, content: &MessageContent) -> Result<u64, String> {
    start(
        host,
        Request::Send {
            room_id: room_id.into(),
            content: content.into(),
        },
    )
}

/// Join `room_id` until the homeserver confirms it; the request id.
pub fn join(host: &mut dyn Host, room_id: &str) -> Result<u64, String> {
    start(
        host,
        Request::Join {
            room_id: room_id.into(),
        },
    )
}

fn start(host: &mut dyn Host, what: Request) -> Result<u64, String> {
    let request = host.next_id()?;
    let pending = Pending {
        what,
        failures: 0,
        hold_ms: 0,
    };
    host.save(&pending_key(request), &pending)?;
    issue(host, request)?;
    Ok(request)
}

/// Make request `request` (again).
fn issue(host: &mut dyn Host, request: u64) -> Result<(), String> {
    match host.load(&pending_key(request))?.map(|p| p.what) {
        Some(Request::Send { room_id, content }) => {
            host.send(request, &room_id, &MessageContent::from(&content));
        }
        Some(Request::Join { room_id }) => host.join(request, &room_id),
        None => {}
    }
    Ok(())
}

/// A host start (`resumed` false): the last run's requests and timers are
/// gone, so forget the timers and make again what was never confirmed.
pub fn resume(host: &mut dyn Host, resumed: bool) -> Result<(), String> {
    if resumed {
        return Ok(());
    }
    for key in host.scan(&TIMERS) {
        host.remove(&key);
    }
    for key in host.scan(&PENDING) {
        let Ok(request) = PENDING.id(&key).parse() else {
            continue;
        };
        match host.load(&key)? {
            Some(p) if p.hold_ms > 0 => retry_after(host, request, p.hold_ms)?,
            Some(_) => issue(host, request)?,
            None => {}
        }
    }
    Ok(())
}

/// Make request `request` again after `delay_ms`.
fn retry_after(host: &mut dyn Host, request: u64, delay_ms: u64) -> Result<(), String> {
    let id = host.next_id()?;
    host.save(&timer_key(id), &request)?;
    host.set_timer(id, delay_ms);
    Ok(())
}

/// A Matrix request's outcome: `true` when it was the outbox's (done,
/// again later, or given up), `false` when it is the guest's own.
pub fn on_result(host: &mut dyn Host, r: &MatrixResult) -> Result<bool, String> {
    let key = pending_key(r.request);
    let Some(mut pending) = host.load(&key)? else {
        return Ok(false);
    };
    let wait = match &r.outcome {
        Ok(_) => None,
        Err(e) => match e.kind {
            MatrixErrorKind::RateLimited => Some(e.retry_after_ms.unwrap_or(1_000)),
            MatrixErrorKind::Unavailable => Some(5_000),
            MatrixErrorKind::Other if pending.failures < MAX_FAILURES => {
                pending.failures += 1;
                Some(1_000 << pending.failures)
            }
            MatrixErrorKind::Other
            | MatrixErrorKind::Forbidden
            | MatrixErrorKind::NotFound
            | MatrixErrorKind::TooLarge => {
                host.warn(&format!(
                    "gave up on request {}: {:?} {}",
                    r.request, e.kind, e.message
                ));
                None
            }
        },
    };
    match wait {
        Some(delay_ms) => {
            pending.hold_ms = delay_ms;
            host.save(&key, &pending)?;
            retry_after(host, r.request, delay_ms)?;
        }
        None => host.remove(&key),
    }
    Ok(true)
}

/// A timer: `true` when it was the outbox's (and its request is made
/// again), `false` when it is the guest's own.
pub fn on_timer(host: &mut dyn Host, id: u64) -> Result<bool, String> {
    let key = timer_key(id);
    let Some(request) = host.load(&key)? else {
        return Ok(false);
    };
    host.remove(&key);
    issue(host, request)?;
    Ok(true)
}
