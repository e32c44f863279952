//! A reply being streamed, as stored: its record (`reply/`) with its
//! parts, and the keys of its text (`chunk/`), one per agent chunk.

use serde::{Deserialize, Serialize};
use surfaces_guest_sdk::store::{decimal, numbered};

use super::{Attached, Queued};

/// Why a reply was stopped other than by a `stop`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum StopFor {
    /// Its question was edited: it is asked again.
    Edit,
    /// Its asker wrote again (queue mode `interrupt`): the newer message
    /// is asked instead.
    Newer,
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
    /// Edits issued that may have landed (the edit budget, `pump::Pace`).
    #[serde(default)]
    pub edits: u32,
    /// Where in the reply's text the last send or edit issued ends (the
    /// whole text then, for one that is not final): more text since is
    /// more to show (see `pump::next`).
    #[serde(default)]
    pub issued_len: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Flight {
    pub request: u64,
    pub fingerprint: u64,
}

/// A reply being streamed into Matrix.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reply {
    pub context_id: Fixed<String>,
    pub origin: Fixed<Queued>,
    /// Chunks received and their total length: counted from the `chunk/`
    /// keys when the record is read, never stored (see `bot::replies`).
    #[serde(skip)]
    pub chunks: u32,
    #[serde(skip)]
    pub len: usize,
    pub ending: Option<Ending>,
    pub stop_requested: bool,
    /// Why it was stopped, when not by a `stop` (its ending says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_for: Option<StopFor>,
    /// The room refused the reply: drop what is left of it.
    pub abandoned: bool,
    pub parts: Vec<Part>,
    /// Largest edit event to produce, in bytes (shrinks after a 413).
    pub budget: usize,
    /// No Matrix request before this time (after a 429 or a failure).
    pub hold_until: u64,
    /// How long that hold was when it was set (0 once a request succeeds):
    /// after a restart it holds that long again (see `pump::restarted`).
    #[serde(default)]
    pub hold_ms: u64,
    /// The longest `retry_after_ms` the homeserver gave this reply: no
    /// two updates closer than that (`pump::Pace`).
    #[serde(default)]
    pub retry_after_ms: u64,
    pub failures: u32,
    /// Of those, errors of no known kind: only they count toward giving up
    /// (an outage is waited out however long it lasts).
    #[serde(default)]
    pub unknown_failures: u32,
    pub flush_timer: Option<u64>,
    pub typing_timer: Option<u64>,
    /// Files the agent sent with it: they follow its text once shown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<Attached>,
}

impl Reply {
    /// A reply to `origin` that has just gone to the agent: no text yet, one
    /// empty part, events of at most `budget` bytes.
    pub fn new(
        context_id: String,
        origin: Queued,
        budget: usize,
        typing_timer: Option<u64>,
    ) -> Reply {
        Reply {
            context_id: Fixed(context_id),
            origin: Fixed(origin),
            chunks: 0,
            len: 0,
            ending: None,
            stop_requested: false,
            stopped_for: None,
            abandoned: false,
            parts: vec![Part::default()],
            budget,
            hold_until: 0,
            hold_ms: 0,
            retry_after_ms: 0,
            failures: 0,
            unknown_failures: 0,
            flush_timer: None,
            typing_timer,
            files: Vec::new(),
        }
    }

    /// The same as `stored` in everything the store keeps that can change
    /// (the [`Fixed`] fields cannot; the text extent is not stored): a
    /// record to write back unchanged, without comparing the question's
    /// text at every chunk.
    pub fn same_state(&self, stored: &Reply) -> bool {
        // Destructured, so that a new field must be placed here.
        let Reply {
            context_id: _,
            origin: _,
            chunks: _,
            len: _,
            ending,
            stop_requested,
            stopped_for,
            abandoned,
            parts,
            budget,
            hold_until,
            hold_ms,
            retry_after_ms,
            failures,
            unknown_failures,
            flush_timer,
            typing_timer,
            files,
        } = self;
        *ending == stored.ending
            && *stop_requested == stored.stop_requested
            && *stopped_for == stored.stopped_for
            && *abandoned == stored.abandoned
            && *parts == stored.parts
            && *budget == stored.budget
            && *hold_until == stored.hold_until
            && *hold_ms == stored.hold_ms
            && *retry_after_ms == stored.retry_after_ms
            && *failures == stored.failures
            && *unknown_failures == stored.unknown_failures
            && *flush_timer == stored.flush_timer
            && *typing_timer == stored.typing_timer
            && *files == stored.files
    }
}

/// A field set when its record is made and never changed after: it can
/// be read (`Deref`) but not changed in place (no `DerefMut`), and no
/// other module can make one (its field is private), so only
/// [`Reply::new`] and decoding set it and a write-back can skip comparing
/// it ([`Reply::same_state`]). Stored as the value itself.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Fixed<T>(T);

impl<T> Fixed<T> {
    pub fn get(&self) -> &T {
        &self.0
    }
}

impl<T> std::ops::Deref for Fixed<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A reply's text is kept one piece per agent chunk, raw UTF-8 (not JSON),
/// so a chunk is one write whatever the reply's length.
pub fn chunk_prefix(req: u64) -> String {
    let mut s = numbered("chunk/", req, 20);
    s.push('/');
    s
}
/// The key of a reply's `n`th chunk (`chunk/{req:020}/{n:08}`), made on
/// the stack: it is made for every agent chunk, where an allocation was a
/// tenth of the guest's own time.
pub struct ChunkKey {
    // `chunk/` + 20 digits + `/` + up to 10 digits.
    buf: [u8; 37],
    len: usize,
}

impl ChunkKey {
    pub fn new(req: u64, n: u32) -> ChunkKey {
        let mut key = ChunkKey {
            buf: [b'0'; 37],
            len: 0,
        };
        key.put(b"chunk/");
        key.put_padded(req, 20);
        key.put(b"/");
        key.put_padded(u64::from(n), 8);
        key
    }

    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// The buffer starts as zeros: padding is skipping them.
    fn put_padded(&mut self, n: u64, width: usize) {
        let (digits, start) = decimal(n);
        self.len += width.saturating_sub(digits.len() - start);
        self.put(&digits[start..]);
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII was put.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}
