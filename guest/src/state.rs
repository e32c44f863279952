//! Durable records and their keys in the host's store.
//!
//! Key layout (all under the guest's own namespace in the host's store):
//! - `meta/next-id`            the id counter for requests and timers
//! - `meta/swaps`              the last swaps, latest first ([`LastReload`]s;
//!   `meta/last-reload`, one, in older stores)
//! - `user/{user-id}`          [`User`]
//! - `ctx/{context-id}`        [`Context`], read and written only through
//!   [`Contexts::context`] and [`Contexts::save_context`], which keep its two
//!   indexes:
//! - `wait/{context-id}`       the context has work a host restart would
//!   strand (a request in flight, a queue, a retry, a broken connection):
//!   what recovery visits, however many contexts exist
//! - `ctxat/{ms:020}/{context-id}`  a thread context by its last activity,
//!   oldest first: what expiry visits
//! - `meta/ctx-index`          the indexes exist (older stores lacked them)
//! - `meta/run`                host runs so far (see [`Context::run`])
//! - `reply/{req:020}`         [`Reply`], a reply being streamed
//! - `chunk/{req:020}/{n:08}`  the reply's text, one piece per agent chunk
//! - `out/{req:020}`           [`Outgoing`], a notice not yet delivered
//! - `timer/{id:020}`          [`TimerPurpose`]
//! - `route/{req:020}`         [`Route`]: whose Matrix request this is
//! - `ask/{event-id}`          [`Asked`], a question the bot took (for
//!   reactions, edits and redactions of it), kept as long as `seen/`
//! - `ans/{event-id}`          the question a message of the bot's answered
//!   (its event id), for reactions on answers
//! - `utd/{room-id}/{user-id}` when that user was last told that a message
//!   of theirs could not be decrypted (ms)
//! - `file/{room}/{thread}/{user}`  [`Held`]: files a user sent that wait
//!   for their next text there (`thread` is `-` in the main timeline)
//! - `bad/{key}`               a record that no longer decoded, set aside
//!   (its bytes as they were), so the bot goes on without it

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use surfaces_guest_sdk::store::numbered;
pub use surfaces_guest_sdk::store::{BAD, Key, Prefix, Records};

use crate::host::Host;

mod reply;
pub use reply::{ChunkKey, Ending, Fixed, Flight, Part, Reply, StopFor, chunk_prefix};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct User {
    pub display_name: Option<String>,
    pub first_seen_ms: u64,
    pub messages: u64,
    pub tokens: u64,
    /// Skill name -> on/off; absent means off.
    pub skills: BTreeMap<String, bool>,
    /// The direct room this user last wrote from (admin notices go there).
    #[serde(default)]
    pub dm_room: Option<String>,
    /// Tokens spent today and this month, for their quota.
    #[serde(default)]
    pub quota: crate::quota::Spent,
    /// With a quota: the request being answered for them (their messages
    /// in other contexts wait for it, see `bot::quota`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy: Option<u64>,
    /// The contexts whose next message is theirs and waits for `busy`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<String>,
}

/// A swap's outcome (an admin's `reload`, or one the host started on its
/// own: a guest file change, SIGHUP, a rollback), for `status`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LastReload {
    pub at_ms: u64,
    pub outcome: Result<String, String>,
    /// The host swapped back the guest that had replaced this one.
    #[serde(default)]
    pub rolled_back: bool,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum Conn {
    #[default]
    Unknown,
    Connecting,
    Ready,
    Busy,
    Disconnected,
}

/// One agent context: its queue, the request in flight, its counters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Context {
    pub in_flight: Option<u64>,
    pub queue: VecDeque<Queued>,
    /// Tokens used since the last reset, as the agent reported per request.
    pub tokens: u64,
    /// Messages answered since the last reset.
    pub messages: u64,
    /// Tokens the agent says its context holds (from `status`).
    pub agent_tokens: Option<u64>,
    pub conn: Conn,
    pub conn_detail: Option<String>,
    /// Consecutive `busy` refusals of the message at the queue's head.
    pub busy_attempts: u32,
    /// Set while a retry after `busy` is pending.
    pub retry_timer: Option<u64>,
    /// When a message last came to this context or was answered (ms).
    #[serde(default)]
    pub active_ms: u64,
    /// The `active_ms` it is indexed under in `ctxat/` (kept by
    /// [`Contexts::save_context`]).
    #[serde(default)]
    pub indexed_ms: Option<u64>,
    /// The host run it was last saved in (`meta/run`): a context saved in
    /// this run holds nothing stale for recovery to clear.
    #[serde(default)]
    pub run: u64,
}

impl Context {
    /// Whether a host restart would strand something of this context: it
    /// must be visited by recovery.
    pub fn needs_recovery(&self) -> bool {
        self.in_flight.is_some()
            || !self.queue.is_empty()
            || self.retry_timer.is_some()
            || !matches!(self.conn, Conn::Unknown | Conn::Ready)
    }
}

/// Thread contexts, one per conversation started, are the ones that pile
/// up: only they are indexed by activity and expire.
pub fn expires(context_id: &str) -> bool {
    context_id.starts_with("thread:")
}

/// A user message waiting for (or given to) the agent.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Queued {
    pub room_id: String,
    pub event_id: String,
    pub sender: String,
    pub display_name: Option<String>,
    pub text: String,
    pub thread_root: Option<String>,
    pub is_direct: bool,
    /// Times it was sent and lost with the connection before an answer.
    #[serde(default)]
    pub attempts: u32,
    /// Others whose messages were collected into this one (queue mode
    /// `collect`): the answer mentions them too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub with: Vec<String>,
    /// Files that go with it (since contract 0.4.0).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<Attached>,
    /// When it was queued: written only by the `next-schema` test build
    /// (schema 3, see `bot::SCHEMA`); every build reads it or its absence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_ms: Option<u64>,
}

/// What kind of file an [`Attached`] is (the contract's `media-kind`).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum FileKind {
    Image,
    File,
    Audio,
    Voice,
    Video,
}

/// A file the host keeps (the contract's `media`), as a record: one a
/// user sent (with the event that carried it) or one the agent sent.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Attached {
    /// The message that carried it ("" for the agent's).
    pub event_id: String,
    /// The host's `surfaces-media:` id.
    pub id: String,
    pub name: String,
    pub mime: String,
    pub size: Option<u64>,
    pub kind: FileKind,
}

/// Files a user sent without text, waiting (a little) for their next text
/// in the same place, which takes them to the agent.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Held {
    pub room_id: String,
    pub sender: String,
    pub display_name: Option<String>,
    pub thread_root: Option<String>,
    pub is_direct: bool,
    pub files: Vec<Attached>,
    /// One of them was for the bot (a direct chat, a mention, a reply to
    /// it): if no text comes, they go to the agent alone.
    pub addressed: bool,
    /// The timer that ends the wait.
    pub timer: u64,
    /// Files too large for the agent, sent where the bot was not yet
    /// addressed: the text that takes the others says they were refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<Attached>,
}

/// A question the bot took for the agent: where it went, so a reaction,
/// an edit or a redaction of it (or of its answer) can act on it. Whether
/// it waits, is being answered or was answered is read from its context
/// (its queue, its reply in flight), never kept twice.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Asked {
    pub context_id: String,
    pub sender: String,
    pub thread_root: Option<String>,
    /// Server time of the text it holds now (the message or its newest
    /// edit): an older edit arriving late changes nothing.
    pub revised_ms: u64,
    /// The start of its text, for the agent's feedback.
    pub excerpt: String,
    /// The bot's messages that answered it (every part, every answer).
    pub answers: Vec<String>,
    /// The files that went with it: asked again, it carries them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<Attached>,
}

/// A notice (command output, queue position, error) until it is delivered.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Outgoing {
    pub room_id: String,
    pub content: StoredContent,
    /// Sends made that failed, plus one (429s do not count).
    pub attempts: u32,
    /// Failures of no known kind: only they count toward giving up.
    #[serde(default)]
    pub unknown_failures: u32,
    /// The `retry_after_ms` of the 429 that holds it (0: none): after a
    /// restart it waits that long again before it is sent.
    #[serde(default)]
    pub hold_ms: u64,
    /// A file to send (a `media` id) instead of the text: the content
    /// gives its thread and the message it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// A queue notice: the place it tells, checked again when it goes (a
    /// notice held by the rate budget must not tell a place gone stale).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<QueuePlace>,
}

/// Where a queue notice said a message waits.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueuePlace {
    pub context_id: String,
    pub event_id: String,
    /// Its index in the queue when told, and the position shown.
    pub index: usize,
    pub position: usize,
}

/// [`MessageContent`](crate::types::MessageContent) in a serializable form (the SDK's, as its outbox
/// keeps it: the same record).
pub use surfaces_guest_sdk::outbox::StoredContent;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum TimerPurpose {
    /// Update a reply's message (throttle or rate limit elapsed).
    Flush { reply: u64 },
    /// Renew the typing notice while the agent works.
    Typing { reply: u64 },
    /// Try the context's queue again after `busy`.
    Retry { context_id: String },
    /// Send a notice again after a 429 or a failure.
    Resend { request: u64 },
    /// Try joining a room again (`attempt` is the one to make).
    Join { room_id: String, attempt: u32 },
    /// Go on recovering contexts after a host start, past this id.
    Recover { after: String },
    /// The wait for a text to go with held files is over.
    Files { key: String },
}

/// Who is waiting for the outcome of a Matrix request.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Route {
    Part {
        reply: u64,
    },
    Notice,
    /// An admin's `reload`, or (`back`) `rollback`.
    Reload {
        room_id: String,
        reply_to: String,
        thread_root: Option<String>,
        #[serde(default)]
        back: bool,
    },
    /// A leave (a join that failed long ago, from an older guest, too).
    Membership,
    /// A join on invite, until the homeserver confirms it.
    Join {
        room_id: String,
        attempt: u32,
    },
}

pub const CONTEXTS: Prefix<Context> = Prefix::new("ctx/");
/// Contexts that recovery must visit.
pub const WAITING: Prefix<()> = Prefix::new("wait/");
/// Thread contexts by last activity (`{ms:020}/{context-id}`).
pub const CONTEXTS_AT: Prefix<()> = Prefix::new("ctxat/");
pub const TIMERS: Prefix<TimerPurpose> = Prefix::new("timer/");
pub const ROUTES: Prefix<Route> = Prefix::new("route/");
pub const OUTGOING: Prefix<Outgoing> = Prefix::new("out/");
pub const REPLIES: Prefix<Reply> = Prefix::new("reply/");
/// Messages seen, ordered by when they were seen, for pruning.
pub const SEEN_AT: Prefix<()> = Prefix::new("seenat/");

pub fn user_key(id: &str) -> Key<User> {
    Key::new(format!("user/{id}"))
}
fn ctx_key(id: &str) -> Key<Context> {
    CONTEXTS.key(id)
}
fn waiting_key(id: &str) -> Key<()> {
    WAITING.key(id)
}
pub fn context_at_key(ms: u64, id: &str) -> Key<()> {
    CONTEXTS_AT.key(&format!("{ms:020}/{id}"))
}
pub fn context_index_key() -> Key<u32> {
    Key::new("meta/ctx-index".into())
}
/// Host runs so far: a host start counts one more (see `bot::recover`).
pub fn run_key() -> Key<u64> {
    Key::new("meta/run".into())
}
pub fn reply_key(req: u64) -> Key<Reply> {
    Key::new(numbered("reply/", req, 20))
}
pub fn out_key(req: u64) -> Key<Outgoing> {
    Key::new(numbered("out/", req, 20))
}
pub fn timer_key(id: u64) -> Key<TimerPurpose> {
    surfaces_guest_sdk::timers::key(id)
}
pub fn route_key(req: u64) -> Key<Route> {
    Key::new(numbered("route/", req, 20))
}
/// A message the bot has acted on, by event id, with when it was seen (a
/// redelivered one is ignored).
pub fn seen_key(event_id: &str) -> Key<u64> {
    Key::new(format!("seen/{event_id}"))
}
/// The same, ordered by when it was seen, for pruning.
pub fn seen_at_key(ms: u64, event_id: &str) -> Key<()> {
    SEEN_AT.key(&format!("{ms:020}/{event_id}"))
}
pub fn asked_key(event_id: &str) -> Key<Asked> {
    Key::new(format!("ask/{event_id}"))
}
/// The question one of the bot's messages answered.
pub fn answer_key(event_id: &str) -> Key<String> {
    Key::new(format!("ans/{event_id}"))
}
pub const HELD: Prefix<Held> = Prefix::new("file/");
pub fn held_key(room_id: &str, thread_root: Option<&str>, sender: &str) -> Key<Held> {
    HELD.key(&format!(
        "{room_id}/{}/{sender}",
        thread_root.unwrap_or("-")
    ))
}
pub fn undecryptable_key(room_id: &str, user_id: &str) -> Key<u64> {
    Key::new(format!("utd/{room_id}/{user_id}"))
}
pub fn last_reload_key() -> Key<LastReload> {
    Key::new("meta/last-reload".into())
}
/// Swaps remembered for `status`.
pub const SWAPS_KEPT: usize = 5;
pub fn swaps_key() -> Key<Vec<LastReload>> {
    Key::new("meta/swaps".into())
}

/// The bot's contexts, on the host handle: reached only through these, which
/// keep their two indexes (`wait/`, `ctxat/`) true.
pub trait Contexts: Records {
    /// The context, or a fresh one.
    fn context(&mut self, id: &str) -> Result<Context, String> {
        self.load_or_default(&ctx_key(id))
    }

    /// Save a context and keep its indexes (`wait/`, `ctxat/`) true.
    fn save_context(&mut self, id: &str, ctx: &mut Context) -> Result<(), String> {
        ctx.run = self.load(&run_key())?.unwrap_or(0);
        if ctx.needs_recovery() {
            self.save(&waiting_key(id), &())?;
        } else {
            self.remove(&waiting_key(id));
        }
        if expires(id) && ctx.indexed_ms != Some(ctx.active_ms) {
            if let Some(old) = ctx.indexed_ms {
                self.remove(&context_at_key(old, id));
            }
            self.save(&context_at_key(ctx.active_ms, id), &())?;
            ctx.indexed_ms = Some(ctx.active_ms);
        }
        self.save(&ctx_key(id), ctx)
    }

    /// Up to `limit` ids of the contexts recovery visits, after the id
    /// `after`: those marked in `wait/`, or every context of a store from
    /// before that index (see `bot::recover`).
    fn contexts_to_recover(
        &mut self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, String> {
        Ok(if self.load(&context_index_key())?.is_some() {
            let after = after.map(waiting_key);
            let keys = self.page(&WAITING, after.as_ref(), limit);
            keys.iter().map(|k| WAITING.id(k).to_string()).collect()
        } else {
            let after = after.map(ctx_key);
            let keys = self.page(&CONTEXTS, after.as_ref(), limit);
            keys.iter().map(|k| CONTEXTS.id(k).to_string()).collect()
        })
    }

    /// Forget a context and its index entries.
    fn remove_context(&mut self, id: &str, ctx: &Context) {
        self.remove(&waiting_key(id));
        if let Some(ms) = ctx.indexed_ms {
            self.remove(&context_at_key(ms, id));
        }
        self.remove(&ctx_key(id));
    }
}

impl Contexts for dyn Host + '_ {}
