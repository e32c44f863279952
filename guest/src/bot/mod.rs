//! The conversation state machine.
//!
//! Flow of one user message: [`inbound`] decides whether the bot is
//! addressed and answers commands at once ([`command`]); other text goes
//! to its context's queue ([`queue`]), whose head is handed to the agent,
//! opening a reply ([`replies`]). Agent chunks append to the reply's text
//! ([`stream`]); the [`pump`] turns the text into one Matrix message
//! (several, past one event's capacity) that is sent once and then edited
//! in place, at most once per `edit_interval_ms`, one request at a time.
//! The agent's end (or error) closes the reply; the final edit drops the
//! live marker and carries the whole text. Command output, queue positions
//! and errors are [`notices`], delivered through rate limits. After a host
//! restart, [`recover`] picks up what the last run left; [`rooms`] joins
//! and leaves, [`reload`] reports swaps, [`expiry`] forgets idle thread
//! contexts, [`controls`] carries out reactions, edits and redactions of
//! questions and answers, [`quota`] keeps each user's token quota,
//! [`files`] carries files to the agent and back.
//!
//! Every handler takes the host as `&mut dyn Host`; records are read and
//! written through [`Records`], typed by their keys.

mod command;
mod controls;
mod expiry;
mod files;
mod inbound;
mod notices;
pub mod pump;
mod queue;
mod quota;
mod recover;
mod reload;
mod replies;
mod rooms;
mod seen;
mod stream;

use std::collections::BTreeSet;

use crate::commands;
use crate::config::Config;
use crate::host::Host;
use crate::rate::RateModel;
use crate::state::Queued;
use crate::state::{Records, Route, TimerPurpose, route_key, timer_key};
use crate::types::{
    Event, GuestInfo, HostInfo, LogLevel, MatrixErrorKind, MatrixResult, RoomMessage,
};

pub use files::{agent_names, drop_failed};
pub use replies::Fate;
use surfaces_guest_sdk::schema::{self, Migration, Schema};

/// The format of the records this guest writes. Schema 2 (contract
/// 0.4.0) added files: `Outgoing::file`, `TimerPurpose::Files` and
/// `Queued::files`. A schema 1 guest would fail on the first two and drop
/// the third in silence, so it cannot read this store: a rollback to it
/// is refused. Schema 1 records read as they are (nothing to rewrite).
#[cfg(not(feature = "next-schema"))]
pub const SCHEMA: Schema = Schema {
    version: 2,
    readable_from: 2,
};
#[cfg(not(feature = "next-schema"))]
const MIGRATIONS: &[Migration] = &[(1, |_| Ok(()))];

/// The test build of a next release (`next-schema`): queued messages
/// carry when they were queued, a field schema 2 guests skip, so they
/// can still read what this one writes.
#[cfg(feature = "next-schema")]
pub const SCHEMA: Schema = Schema {
    version: 3,
    readable_from: 2,
};
#[cfg(feature = "next-schema")]
const MIGRATIONS: &[Migration] = &[(1, |_| Ok(())), (2, |_| Ok(()))]; // added fields with defaults: nothing to rewrite

/// How long a typing notice lasts; renewed before it runs out.
const TYPING_TIMEOUT_MS: u32 = 30_000;
const TYPING_RENEW_MS: u64 = 20_000;
/// Times a message is sent again after the connection dropped before the
/// agent answered it.
const MAX_LOST: u32 = 3;
/// Echoed user input (command names, agent messages) is cut to this.
const ECHO_MAX: usize = 64;

pub struct Bot {
    cfg: Config,
    info: HostInfo,
    replies: replies::Replies,
    /// When this instance last pruned the record of messages seen.
    seen_pruned_ms: Option<u64>,
    /// When this instance last finished expiring idle contexts, and where
    /// an unfinished sweep goes on.
    contexts_expired_ms: Option<u64>,
    expiry_after: Option<crate::state::Key<()>>,
    /// The homeserver's rate limit as this instance believes it to be
    /// (learned again by a new instance).
    rate: RateModel,
    /// Rooms this instance has sent to (see `spend_into`).
    sent_to: BTreeSet<String>,
    /// Queue notices stored in this call: they go at its end, told the
    /// place their message has then.
    placed: Vec<u64>,
}

impl Bot {
    pub fn new(info: HostInfo, host: &mut dyn Host) -> Result<Bot, String> {
        let mut settings = info.settings.clone();
        crate::planted::take_setting(&mut settings)?;
        let cfg = Config::parse(&settings)?;
        if info.max_event_bytes < 8 * 1024 {
            return Err(format!(
                "max-event-bytes {} is too small to stream replies",
                info.max_event_bytes
            ));
        }
        host.log(
            LogLevel::Info,
            &format!(
                "surfaces-guest {} ready ({}, scope {:?})",
                env!("CARGO_PKG_VERSION"),
                if info.resumed { "resumed" } else { "fresh" },
                cfg.scope
            ),
        );
        if !cfg.unknown.is_empty() {
            host.log(
                LogLevel::Warn,
                &format!(
                    "settings this guest does not know, ignored: {} (known: {})",
                    cfg.unknown.join(", "),
                    Config::KNOWN
                ),
            );
        }
        // The records' format (guest/src/state.rs); a change old guests
        // cannot read raises `readable_from` and adds a migration here.
        schema::open(host, "surfaces-bot", SCHEMA, MIGRATIONS)?;
        let resumed = info.resumed;
        let (per_second, burst) = (cfg.rate_per_kilosecond as f64 / 1000.0, cfg.rate_burst);
        let rate = if cfg.rate_told {
            RateModel::new(per_second, burst)
        } else {
            RateModel::guess(per_second, burst)
        };
        let mut bot = Bot {
            rate,
            placed: Vec::new(),
            sent_to: BTreeSet::new(),
            cfg,
            info,
            replies: replies::Replies::default(),
            seen_pruned_ms: None,
            contexts_expired_ms: None,
            expiry_after: None,
        };
        if !resumed {
            bot.recover(host)?;
            bot.send_placed(host)?;
        }
        Ok(bot)
    }

    pub fn guest_info(&self) -> GuestInfo {
        GuestInfo {
            name: env!("CARGO_PKG_NAME").to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// Count an event sent into `room_id` at `now` against the rate
    /// budget. The first into a room per run counts twice: in an
    /// encrypted room the room key goes to the members' devices first,
    /// and Synapse counts that against the same limit (a first reply met
    /// a 429 one event short of the model, on Synapse's defaults).
    fn spend_into(&mut self, room_id: &str, now: u64) {
        if !self.sent_to.contains(room_id) {
            self.sent_to.insert(room_id.to_string());
            self.rate.spent(now);
        }
        self.rate.spent(now);
    }

    pub fn handle(&mut self, host: &mut dyn Host, event: Event) -> Result<(), String> {
        // (Left by a call that failed: its store writes are undone.)
        self.placed.clear();
        match event {
            Event::Message(m) => self.on_message(host, m),
            Event::Invite(i) => self.on_invite(host, i),
            Event::MembersChanged(m) => self.on_members(host, m),
            Event::MatrixResult(r) => self.on_matrix_result(host, r),
            Event::AgentChunk(c) => self.on_chunk(host, c.request, &c.text),
            Event::AgentEnd(e) => self.on_end(host, e),
            Event::AgentError(e) => self.on_agent_error(host, e),
            Event::AgentStatus(s) => self.on_status(host, s),
            Event::Timer(id) => self.on_timer(host, id),
            Event::ReloadResult(r) => self.on_reload(host, r),
            Event::Undecryptable(u) => self.on_undecryptable(host, u),
            Event::Reaction(r) => self.on_reaction(host, r),
            Event::MessageEdited(e) => self.on_edited(host, e),
            Event::Redacted(d) => self.on_redacted(host, d),
            Event::AgentAttachment(a) => self.on_agent_attachment(host, a),
        }?;
        self.send_placed(host)
    }

    /// A Matrix request's answer goes to whoever made the request.
    fn on_matrix_result(&mut self, host: &mut dyn Host, r: MatrixResult) -> Result<(), String> {
        let route = host.load(&route_key(r.request))?;
        // Events the bot sent: what the rate limit let through teaches the
        // model (joins have a limit of their own).
        if let Some(Route::Part { .. } | Route::Notice) = route {
            match &r.outcome {
                Ok(_) => self.rate.taken(host.now()),
                Err(e) if e.kind == MatrixErrorKind::RateLimited => {
                    let before = self.rate.limit();
                    self.rate.refused(host.now(), e.retry_after_ms);
                    if let Some((rate, burst)) = self.rate.limit()
                        && self.rate.limit() != before
                    {
                        host.log(
                            LogLevel::Info,
                            &format!(
                                "the homeserver's rate limit is taken to be {rate:.3} events a \
                                 second in bursts of {burst} (from a 429)"
                            ),
                        );
                    }
                }
                Err(_) => {}
            }
        }
        match route {
            Some(Route::Part { reply }) => self.on_part_result(host, reply, r),
            Some(Route::Notice) => self.on_notice_result(host, &r),
            Some(Route::Join { room_id, attempt }) => {
                self.on_join_result(host, r.request, room_id, attempt, r.outcome)
            }
            Some(Route::Reload { .. }) | Some(Route::Membership) | None => {
                if let Err(e) = &r.outcome {
                    host.log(
                        LogLevel::Warn,
                        &format!("request {} failed: {:?} {}", r.request, e.kind, e.message),
                    );
                }
                host.remove(&route_key(r.request));
                Ok(())
            }
        }
    }

    /// A timer goes to whatever set it.
    fn on_timer(&mut self, host: &mut dyn Host, id: u64) -> Result<(), String> {
        let Some(purpose) = host.load(&timer_key(id))? else {
            return Ok(());
        };
        match purpose {
            TimerPurpose::Flush { reply } => self.on_flush_timer(host, id, reply),
            TimerPurpose::Typing { reply } => self.on_typing_timer(host, id, reply),
            TimerPurpose::Retry { context_id } => self.on_retry_timer(host, id, &context_id),
            TimerPurpose::Resend { request } => self.on_resend_timer(host, id, request),
            TimerPurpose::Join { room_id, attempt } => {
                self.on_join_timer(host, id, &room_id, attempt)
            }
            TimerPurpose::Recover { after } => self.on_recover_timer(host, id, &after),
            TimerPurpose::Files { key } => self.on_files_timer(host, id, &key),
        }
    }

    fn is_admin(&self, user: &str) -> bool {
        self.cfg.admins.iter().any(|a| a == user)
    }
}

/// Where a user message was, to answer it there.
struct Place<'a> {
    room_id: &'a str,
    event_id: &'a str,
    sender: &'a str,
    thread_root: Option<&'a str>,
    is_direct: bool,
}

impl<'a> From<&'a RoomMessage> for Place<'a> {
    fn from(m: &'a RoomMessage) -> Self {
        Place {
            room_id: &m.room_id,
            event_id: &m.event_id,
            sender: &m.sender,
            thread_root: m.thread_root.as_deref(),
            is_direct: m.is_direct,
        }
    }
}

impl<'a> From<&'a Queued> for Place<'a> {
    fn from(q: &'a Queued) -> Self {
        Place {
            room_id: &q.room_id,
            event_id: &q.event_id,
            sender: &q.sender,
            thread_root: q.thread_root.as_deref(),
            is_direct: q.is_direct,
        }
    }
}

/// `1 message`, `2 messages`, `1,234 messages`.
fn count(n: u64, noun: &str) -> String {
    let s = if n == 1 { "" } else { "s" };
    format!("{} {noun}{s}", commands::thousands(n))
}

/// At most `max` characters of `s`.
fn cut(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// `@alice:example.org` -> `alice`.
fn localpart(user_id: &str) -> &str {
    let s = user_id.strip_prefix('@').unwrap_or(user_id);
    s.split(':').next().unwrap_or(s)
}
