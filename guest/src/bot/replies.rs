//! Reply records and their texts, cached so a chunk costs no decoding.
//!
//! A reply's record (`reply/`) holds its parts and timers; its text is in
//! `chunk/` keys, one per agent chunk, and its extent (`chunks`, `len`) is
//! counted from them when the record is read, never stored, so a chunk
//! does not rewrite the record. A handler gets a reply only through
//! [`Bot::with_reply`], and says what becomes of it ([`Fate`]): the record
//! is written back, dropped with everything stored for it, or left as the
//! store has it. None can be forgotten half-changed.

use std::collections::{BTreeMap, BTreeSet};

use super::Bot;
use crate::host::Host;
use crate::state::{ChunkKey, REPLIES, Records, Reply, chunk_prefix, reply_key, timer_key};

/// What becomes of a reply after a handler had it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Store it (unless it is unchanged) and keep it cached.
    Keep,
    /// The reply is over: forget it and everything stored for it.
    Discard,
    /// Nothing changed that must be stored: the next read is from the
    /// store.
    Untouched,
}

/// The reply records and texts this instance has read or written.
#[derive(Default)]
pub struct Replies {
    /// Reply texts, rebuilt from their chunks when missing.
    texts: BTreeMap<u64, String>,
    /// Reply records as last kept. A handler takes one out of its slot
    /// and puts it back for every chunk: the slot stays (no rebalancing),
    /// and only the box moves. An empty slot is not cached.
    cached: BTreeMap<u64, Option<Box<Reply>>>,
    /// Each record as it is in the store, so an unchanged record is not
    /// written again.
    in_store: BTreeMap<u64, Reply>,
    /// The replies in the store (each owed a final text), once counted.
    open: Option<BTreeSet<u64>>,
    /// Each reply's flush timer as this instance set it (id, when due): a
    /// chunk that asks for the same time sets nothing again.
    flush_due: BTreeMap<u64, (u64, u64)>,
}

impl Replies {
    /// The reply's text, out of the cache or rebuilt from its chunks.
    pub fn text(&mut self, host: &mut dyn Host, req: u64) -> &str {
        self.texts.entry(req).or_insert_with(|| {
            let mut s = String::new();
            for key in host.store_keys(&chunk_prefix(req)) {
                if let Some(bytes) = host.store_get(&key) {
                    s.push_str(&String::from_utf8_lossy(&bytes));
                }
            }
            s
        })
    }

    /// Lend the text out (no copy per chunk); give it back with
    /// [`Replies::put_text`]. The store is the truth: a cached text that
    /// disagrees with the record's extent is rebuilt first.
    pub fn lend_text(
        &mut self,
        host: &mut dyn Host,
        req: u64,
        r: &Reply,
    ) -> Result<String, String> {
        if self.text(host, req).len() != r.len {
            self.texts.remove(&req);
            let rebuilt = self.text(host, req).len();
            if rebuilt != r.len {
                return Err(format!(
                    "reply {req}: stored text is {rebuilt} bytes, record says {}",
                    r.len
                ));
            }
        }
        // Taken out of its entry, which stays (no rebalancing per chunk).
        Ok(self
            .texts
            .get_mut(&req)
            .map(std::mem::take)
            .unwrap_or_default())
    }

    pub fn put_text(&mut self, req: u64, text: String) {
        match self.texts.get_mut(&req) {
            Some(t) => *t = text,
            None => {
                self.texts.insert(req, text);
            }
        }
    }

    /// Append an agent chunk to the reply's text.
    pub fn append(&mut self, host: &mut dyn Host, req: u64, r: &mut Reply, chunk: &str) {
        self.text(host, req);
        host.store_put(ChunkKey::new(req, r.chunks).as_str(), chunk.as_bytes());
        r.chunks += 1;
        r.len += chunk.len();
        if let Some(t) = self.texts.get_mut(&req) {
            t.push_str(chunk);
        }
    }

    /// How many replies are in the store: each is owed a final text.
    pub fn open_count(&mut self, host: &mut dyn Host) -> usize {
        self.open
            .get_or_insert_with(|| Self::stored(host).into_iter().collect())
            .len()
    }

    /// Note that reply `req`'s flush timer `id` is set for `due`; false if
    /// it already was (nothing to set).
    pub fn flush_at(&mut self, req: u64, id: u64, due: u64) -> bool {
        if self.flush_due.get(&req) == Some(&(id, due)) {
            return false;
        }
        self.flush_due.insert(req, (id, due));
        true
    }

    /// Reply `req`'s flush timer fired.
    pub fn flush_done(&mut self, req: u64) {
        self.flush_due.remove(&req);
    }

    /// A new reply, with no text yet.
    pub fn open(&mut self, host: &mut dyn Host, req: u64, r: Reply) -> Result<(), String> {
        self.texts.insert(req, String::new());
        if let Some(open) = &mut self.open {
            open.insert(req);
        }
        self.keep(host, req, Box::new(r))
    }

    /// The reply, read-only.
    pub fn peek(&mut self, host: &mut dyn Host, req: u64) -> Result<Option<&Reply>, String> {
        if !self.cached.get(&req).is_some_and(Option::is_some) {
            let Some(r) = self.read(host, req)? else {
                return Ok(None);
            };
            self.cached.insert(req, Some(r));
        }
        Ok(self.cached.get(&req).and_then(|r| r.as_deref()))
    }

    /// The request ids of every reply in the store.
    pub fn stored(host: &mut dyn Host) -> Vec<u64> {
        host.scan(&REPLIES)
            .iter()
            .filter_map(|k| REPLIES.id(k).parse().ok())
            .collect()
    }

    fn take(&mut self, host: &mut dyn Host, req: u64) -> Result<Option<Box<Reply>>, String> {
        if let Some(r) = self.cached.get_mut(&req).and_then(Option::take) {
            return Ok(Some(r));
        }
        self.read(host, req)
    }

    fn read(&mut self, host: &mut dyn Host, req: u64) -> Result<Option<Box<Reply>>, String> {
        let Some(mut r) = host.load(&reply_key(req))?.map(Box::new) else {
            return Ok(None);
        };
        self.in_store.insert(req, (*r).clone());
        r.chunks = host.store_keys(&chunk_prefix(req)).len() as u32;
        r.len = self.text(host, req).len();
        Ok(Some(r))
    }

    /// Store the record (unless it is unchanged) and cache it.
    fn keep(&mut self, host: &mut dyn Host, req: u64, r: Box<Reply>) -> Result<(), String> {
        if !self.in_store.get(&req).is_some_and(|s| r.same_state(s)) {
            host.save(&reply_key(req), &*r)?;
            self.in_store.insert(req, (*r).clone());
        }
        match self.cached.get_mut(&req) {
            Some(slot) => *slot = Some(r),
            None => {
                self.cached.insert(req, Some(r));
            }
        }
        Ok(())
    }

    /// Forget a reply and everything stored for it.
    fn discard(&mut self, host: &mut dyn Host, req: u64, r: &Reply) {
        self.flush_due.remove(&req);
        for t in [r.flush_timer, r.typing_timer].into_iter().flatten() {
            host.cancel_timer(t);
            host.remove(&timer_key(t));
        }
        if r.typing_timer.is_some() {
            host.set_typing(&r.origin.room_id, false, 0);
        }
        for key in host.store_keys(&chunk_prefix(req)) {
            host.store_delete(&key);
        }
        host.remove(&reply_key(req));
        self.texts.remove(&req);
        self.cached.remove(&req);
        self.in_store.remove(&req);
        if let Some(open) = &mut self.open {
            open.remove(&req);
        }
    }
}

impl Bot {
    /// Give reply `req` to `f`, which decides its fate. False when there is
    /// no such reply (one already over). When `f` fails, nothing of the
    /// reply stays cached: the next read is from the store.
    pub(super) fn with_reply(
        &mut self,
        host: &mut dyn Host,
        req: u64,
        f: impl FnOnce(&mut Bot, &mut dyn Host, &mut Reply) -> Result<Fate, String>,
    ) -> Result<bool, String> {
        let Some(mut r) = self.replies.take(host, req)? else {
            return Ok(false);
        };
        match f(self, host, &mut r)? {
            Fate::Keep => self.replies.keep(host, req, r)?,
            Fate::Discard => {
                self.send_files(host, &r)?;
                self.replies.discard(host, req, &r);
            }
            Fate::Untouched => {}
        }
        Ok(true)
    }
}
