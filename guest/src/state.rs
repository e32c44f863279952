//! Durable records and their keys in the host's store.
//!
//! Key layout (all under the guest's own namespace in the host's store):
//! - `meta/next-id`            the id counter for requests and timers
//! - `meta/last-reload`        [`LastReload`], the host's last swap
//! - `user/{user-id}`          [`User`]
//! - `ctx/{context-id}`        [`Context`]
//! - `reply/{req:020}`         [`Reply`], a reply being streamed
//! - `chunk/{req:020}/{n:08}`  the reply's text, one piece per agent chunk
//! - `out/{req:020}`           [`Outgoing`], a notice not yet delivered
//! - `timer/{id:020}`          [`TimerPurpose`]
//! - `route/{req:020}`         [`Route`]: whose Matrix request this is

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::host::Host;
use crate::types::MessageContent;

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
}

/// The outcome of the last swap the host started on its own (guest file
/// change, SIGHUP), for `status`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LastReload {
    pub at_ms: u64,
    pub outcome: Result<String, String>,
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
}

/// How a streamed reply ended.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Ending {
    Complete,
    /// Ended early; the note is appended to the text shown.
    Cut(String),
}

/// One Matrix message of a reply. A reply longer than one event holds
/// continues in the next part.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Part {
    /// Byte offset in the reply's text where this part starts.
    pub start: usize,
    /// Set once the part is full: where it ends.
    pub end: Option<usize>,
    /// The code fence open at `start`, if the part starts inside code.
    pub fence: Option<String>,
    pub event_id: Option<String>,
    /// Request id of this part's first send; reused for its retries, so
    /// the homeserver de-duplicates them.
    pub send_request: Option<u64>,
    pub in_flight: Option<Flight>,
    /// Fingerprint of the content the homeserver has.
    pub shown: Option<u64>,
    /// When the last send or edit was issued (throttle).
    pub last_update: Option<u64>,
    /// The first send failed once: if a retry finds it landed after all,
    /// the content it shows may be older.
    #[serde(default)]
    pub retried: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Flight {
    pub request: u64,
    pub fingerprint: u64,
}

/// A reply being streamed into Matrix.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reply {
    pub context_id: String,
    pub origin: Queued,
    /// Chunks received and their total length: counted from the `chunk/`
    /// keys when the record is read, never stored (see `Bot::take_reply`).
    #[serde(skip)]
    pub chunks: u32,
    #[serde(skip)]
    pub len: usize,
    pub ending: Option<Ending>,
    pub stop_requested: bool,
    /// The room refused the reply: drop what is left of it.
    pub abandoned: bool,
    pub parts: Vec<Part>,
    /// Largest edit event to produce, in bytes (shrinks after a 413).
    pub budget: usize,
    /// No Matrix request before this time (after a 429 or a failure).
    pub hold_until: u64,
    pub failures: u32,
    pub flush_timer: Option<u64>,
    pub typing_timer: Option<u64>,
}

/// A notice (command output, queue position, error) until it is delivered.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Outgoing {
    pub room_id: String,
    pub content: StoredContent,
    pub attempts: u32,
}

/// [`MessageContent`] in a serializable form.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
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
}

/// Who is waiting for the outcome of a Matrix request.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Route {
    Part {
        reply: u64,
    },
    Notice,
    Reload {
        room_id: String,
        reply_to: String,
        thread_root: Option<String>,
    },
    Membership,
}

pub fn user_key(id: &str) -> String {
    format!("user/{id}")
}
pub fn ctx_key(id: &str) -> String {
    format!("ctx/{id}")
}
pub fn reply_key(req: u64) -> String {
    format!("reply/{req:020}")
}
pub fn chunk_prefix(req: u64) -> String {
    format!("chunk/{req:020}/")
}
pub fn chunk_key(req: u64, n: u32) -> String {
    format!("chunk/{req:020}/{n:08}")
}
pub fn out_key(req: u64) -> String {
    format!("out/{req:020}")
}
pub fn timer_key(id: u64) -> String {
    format!("timer/{id:020}")
}
pub fn route_key(req: u64) -> String {
    format!("route/{req:020}")
}
/// A message the bot has acted on, by event id (a redelivered one is
/// ignored).
pub fn seen_key(event_id: &str) -> String {
    format!("seen/{event_id}")
}
/// The same, ordered by when it was seen, for pruning.
pub fn seen_at_key(ms: u64, event_id: &str) -> String {
    format!("{SEEN_AT}{ms:020}/{event_id}")
}
pub const SEEN_AT: &str = "seenat/";
const NEXT_ID: &str = "meta/next-id";
pub const LAST_RELOAD: &str = "meta/last-reload";

/// Typed access to the host's store.
pub struct Db<'h, H: Host + ?Sized> {
    pub host: &'h mut H,
}

impl<H: Host + ?Sized> Db<'_, H> {
    pub fn get<T: DeserializeOwned>(&mut self, key: &str) -> Result<Option<T>, String> {
        match self.host.store_get(key) {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("corrupt record {key}: {e}")),
        }
    }

    pub fn put<T: Serialize>(&mut self, key: &str, value: &T) -> Result<(), String> {
        let bytes = serde_json::to_vec(value).map_err(|e| format!("encode {key}: {e}"))?;
        self.host.store_put(key, &bytes);
        Ok(())
    }

    pub fn delete(&mut self, key: &str) {
        self.host.store_delete(key);
    }

    /// A fresh id for a request or a timer, unique for the bot's life.
    pub fn next_id(&mut self) -> Result<u64, String> {
        let id: u64 = self.get(NEXT_ID)?.unwrap_or(1);
        self.put(NEXT_ID, &(id + 1))?;
        Ok(id)
    }
}
