//! An echo bot on the surfaces guest SDK: it answers every message meant
//! for it with the same text, and `!count` with how many it has echoed
//! for you. Small, but it keeps the promise every surfaces guest keeps:
//! each message meant for the bot ends in an answer. So a send the
//! homeserver refuses for now (rate limit, outage) is sent again, after a
//! host restart too, and only a refusal for good (forbidden, too large)
//! gives up, in the log.
//!
//! The host calls `handle` with one event at a time; everything durable is
//! in the store, so any instance (after a swap, a trap or a restart)
//! carries on where the last one stopped.

use serde::{Deserialize, Serialize};
use surfaces_guest_sdk::store::{Key, Prefix, Records};
use surfaces_guest_sdk::types::{
    Event, GuestInfo, HostInfo, MatrixErrorKind, MatrixResult, MessageContent, RoomMessage,
};
use surfaces_guest_sdk::schema::{self, Schema};
use surfaces_guest_sdk::{Addressed, Guest, Host, address, timers};

/// The format of the records below. Change one in a way this version
/// cannot read, and the next version raises `readable_from` and brings a
/// migration (see `surfaces_guest_sdk::schema`).
const SCHEMA: Schema = Schema {
    version: 1,
    readable_from: 1,
};

/// Messages echoed per person: `tally/{user-id}`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Tally {
    echoed: u64,
}
const TALLIES: Prefix<Tally> = Prefix::new("tally/");

/// A request not yet confirmed: `out/{request:020}`.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    what: Request,
    /// Failures of no known kind so far; past [`MAX_FAILURES`] it gives up.
    failures: u32,
}

#[derive(Debug, Serialize, Deserialize)]
enum Request {
    /// An answer to the message `reply_to`.
    Send {
        room_id: String,
        body: String,
        notice: bool,
        reply_to: String,
        thread_root: Option<String>,
    },
    /// A join on invite: until it is in, nothing said there reaches it.
    Join { room_id: String },
}
const PENDING: Prefix<Pending> = Prefix::new("out/");

fn pending_key(request: u64) -> Key<Pending> {
    PENDING.key(&format!("{request:020}"))
}

/// What a timer is for.
#[derive(Debug, Serialize, Deserialize)]
enum Timer {
    /// Make request `request` again.
    Resend { request: u64 },
}

const TIMERS: Prefix<Timer> = Prefix::new(timers::PREFIX);

const MAX_FAILURES: u32 = 5;

pub struct Echo {
    info: HostInfo,
}

impl Guest for Echo {
    fn init(info: HostInfo, host: &mut dyn Host) -> Result<Self, String> {
        schema::open(host, SCHEMA, &[])?;
        if !info.resumed {
            // The host has just started: the last run's requests and timers
            // are gone, so forget those timers and send again what was
            // never confirmed.
            for key in host.scan(&TIMERS) {
                host.remove(&key);
            }
            for key in host.scan(&PENDING) {
                if let Ok(request) = PENDING.id(&key).parse() {
                    issue(host, request)?;
                }
            }
        }
        host.info("echo guest ready");
        Ok(Echo { info })
    }

    fn info(&self) -> GuestInfo {
        GuestInfo {
            name: env!("CARGO_PKG_NAME").into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    fn handle(&mut self, host: &mut dyn Host, event: Event) -> Result<(), String> {
        match event {
            Event::Message(m) => self.on_message(host, m),
            Event::Invite(i) => start(host, Request::Join { room_id: i.room_id }),
            Event::MatrixResult(r) => on_result(host, r),
            Event::Timer(id) => match timers::take::<Timer>(host, id)? {
                Some(Timer::Resend { request }) => issue(host, request),
                None => Ok(()),
            },
            // Events this bot has no use for.
            Event::MembersChanged(_)
            | Event::AgentChunk(_)
            | Event::AgentEnd(_)
            | Event::AgentError(_)
            | Event::AgentStatus(_)
            | Event::ReloadResult(_)
            | Event::Undecryptable(_) => Ok(()),
        }
    }
}

impl Echo {
    fn on_message(&mut self, host: &mut dyn Host, m: RoomMessage) -> Result<(), String> {
        if m.sender == self.info.bot_user_id {
            return Ok(());
        }
        let addressed = address(
            &m.body,
            m.is_direct,
            m.mentions_bot,
            m.is_notice,
            "!",
            &self.info.bot_user_id,
            &self.info.bot_display_name,
        );
        let tally_key = TALLIES.key(&m.sender);
        match addressed {
            Addressed::No => Ok(()),
            Addressed::Command(cmd) if cmd.trim().eq_ignore_ascii_case("count") => {
                let tally = host.load_or_default(&tally_key)?;
                let text = format!("I have echoed {} of your messages.", tally.echoed);
                say(host, &m, text, true)
            }
            Addressed::Command(_) => say(host, &m, "I know one command: !count".into(), true),
            Addressed::Text(text) => {
                let mut tally = host.load_or_default(&tally_key)?;
                tally.echoed += 1;
                host.save(&tally_key, &tally)?;
                let text = if text.is_empty() { "…" } else { text };
                say(host, &m, text.to_string(), false)
            }
        }
    }
}

/// Answer `m` with `body`, in its thread, as a reply to it.
fn say(host: &mut dyn Host, m: &RoomMessage, body: String, notice: bool) -> Result<(), String> {
    let send = Request::Send {
        room_id: m.room_id.clone(),
        body,
        notice,
        reply_to: m.event_id.clone(),
        thread_root: m.thread_root.clone(),
    };
    start(host, send)
}

/// Keep a request until it is confirmed, and make it.
fn start(host: &mut dyn Host, what: Request) -> Result<(), String> {
    let request = host.next_id()?;
    host.save(&pending_key(request), &Pending { what, failures: 0 })?;
    issue(host, request)
}

/// Make request `request` (again: the same id, so the homeserver keeps
/// one copy if an earlier try landed after all).
fn issue(host: &mut dyn Host, request: u64) -> Result<(), String> {
    match host.load(&pending_key(request))?.map(|p| p.what) {
        Some(Request::Send {
            room_id,
            body,
            notice,
            reply_to,
            thread_root,
        }) => {
            let content = MessageContent {
                body,
                formatted_body: None,
                notice,
                live: false,
                thread_root,
                reply_to: Some(reply_to),
                mentions: vec![],
            };
            host.send(request, &room_id, &content);
        }
        Some(Request::Join { room_id }) => host.join(request, &room_id),
        None => {}
    }
    Ok(())
}

/// A request's outcome: done, again later, or given up.
fn on_result(host: &mut dyn Host, r: MatrixResult) -> Result<(), String> {
    let key = pending_key(r.request);
    let Some(mut out) = host.load(&key)? else {
        return Ok(()); // a duplicate answer
    };
    let wait = match &r.outcome {
        Ok(_) => None,
        Err(e) => match e.kind {
            MatrixErrorKind::RateLimited => Some(e.retry_after_ms.unwrap_or(1_000)),
            MatrixErrorKind::Unavailable => Some(5_000),
            MatrixErrorKind::Other if out.failures < MAX_FAILURES => {
                out.failures += 1;
                Some(1_000 << out.failures)
            }
            MatrixErrorKind::Other
            | MatrixErrorKind::Forbidden
            | MatrixErrorKind::NotFound
            | MatrixErrorKind::TooLarge => {
                host.warn(&format!(
                    "gave up on {}: {:?} {}",
                    r.request, e.kind, e.message
                ));
                None
            }
        },
    };
    match wait {
        Some(delay_ms) => {
            host.save(&key, &out)?;
            timers::start(host, &Timer::Resend { request: r.request }, delay_ms)?;
        }
        None => host.remove(&key),
    }
    Ok(())
}

surfaces_guest_sdk::export_guest!(Echo);

#[cfg(test)]
mod tests {
    use super::*;
    use surfaces_guest_sdk::testing::{self, Effect, MemoryHost};
    use surfaces_guest_sdk::types::MatrixError;

    fn started(host: &mut MemoryHost) -> Echo {
        Echo::init(testing::host_info(&[]), host).expect("starts")
    }

    #[test]
    fn echoes_a_direct_message_and_counts_it() {
        let mut host = MemoryHost::default();
        let mut bot = started(&mut host);
        let hi = testing::message("!dm", "@alice:example.org", "hello there");
        bot.handle(&mut host, Event::Message(hi)).unwrap();
        let count = testing::message("!dm", "@alice:example.org", "!count");
        bot.handle(&mut host, Event::Message(count)).unwrap();
        assert_eq!(
            host.sent_bodies(),
            ["hello there", "I have echoed 1 of your messages."]
        );
    }

    #[test]
    fn stays_quiet_in_a_group_room_unless_spoken_to() {
        let mut host = MemoryHost::default();
        let mut bot = started(&mut host);
        let mut m = testing::message("!group", "@alice:example.org", "hello all");
        m.is_direct = false;
        bot.handle(&mut host, Event::Message(m.clone())).unwrap();
        m.body = "bot: hello you".into();
        m.mentions_bot = true; // the host marks a message that names the bot
        bot.handle(&mut host, Event::Message(m)).unwrap();
        assert_eq!(host.sent_bodies(), ["hello you"]);
    }

    #[test]
    fn a_rate_limited_send_goes_again_with_the_same_request() {
        let mut host = MemoryHost::default();
        let mut bot = started(&mut host);
        let m = testing::message("!dm", "@alice:example.org", "hi");
        bot.handle(&mut host, Event::Message(m)).unwrap();
        let Some(Effect::Send { request, .. }) = host.take_effects().pop() else {
            panic!("no send");
        };
        let limited = MatrixResult {
            request,
            outcome: Err(MatrixError {
                kind: MatrixErrorKind::RateLimited,
                message: "slow down".into(),
                retry_after_ms: Some(3_000),
            }),
        };
        bot.handle(&mut host, Event::MatrixResult(limited)).unwrap();
        let Some(Effect::SetTimer { id, delay_ms }) = host.take_effects().pop() else {
            panic!("no timer");
        };
        assert_eq!(delay_ms, 3_000);
        bot.handle(&mut host, Event::Timer(id)).unwrap();
        assert!(matches!(
            host.take_effects().as_slice(),
            [Effect::Send { request: again, .. }] if *again == request
        ));
        let done = MatrixResult {
            request,
            outcome: Ok("$echo".into()),
        };
        bot.handle(&mut host, Event::MatrixResult(done)).unwrap();
        assert!(host.store.keys().all(|k| !k.starts_with("out/")));
    }
}
