//! Typed records in the host's store: JSON values under keys typed by the
//! record they hold, so a key made for one kind of record cannot load or
//! save another.
//!
//! ```ignore
//! const NOTES: Prefix<Note> = Prefix::new("note/");
//! let key = NOTES.key("alice");
//! host.save(&key, &Note { text })?;
//! let note: Option<Note> = host.load(&key)?;
//! ```

use std::marker::PhantomData;

use serde::{Serialize, de::DeserializeOwned};

use crate::host::Host;

/// Prefixes of work in progress (`out/`, `timer/`, `reply/`, `chunk/`,
/// `route/`) and of records set aside (`bad/`): once every message is
/// answered and nothing is pending, a guest's store holds none of them,
/// and the simulator's rule "nothing transient is left in the store"
/// checks it. Keep what lasts (users, counters) under other prefixes.
pub use surfaces_contract::TRANSIENT;

/// Records set aside because they no longer decoded, under their old key.
pub const BAD: &str = "bad/";

/// `n` in decimal: the digits are `buf[start..]` of the returned
/// `(buf, start)`.
pub fn decimal(n: u64) -> ([u8; 20], usize) {
    let mut digits = [b'0'; 20]; // u64::MAX has 20
    let mut i = digits.len();
    let mut rest = n;
    // In 32 bits once it fits: wasm32 divides a u64 by a constant through
    // a 128-bit multiply call.
    while rest > u64::from(u32::MAX) {
        i -= 1;
        digits[i] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    let mut small = rest as u32;
    loop {
        i -= 1;
        digits[i] = b'0' + (small % 10) as u8;
        small /= 10;
        if small == 0 {
            break;
        }
    }
    (digits, i)
}

/// Append `n` in decimal, zero-padded to `width` digits: what `{n:0w$}`
/// writes, without `format!`'s machinery, which in wasm was a third of
/// the guest's own time for an agent chunk (a key is made for most
/// events).
pub fn push_padded(s: &mut String, n: u64, width: usize) {
    const ZEROS: &str = "00000000000000000000";
    let (digits, start) = decimal(n);
    let mut pad = width.saturating_sub(digits.len() - start);
    while pad > 0 {
        let k = pad.min(ZEROS.len());
        s.push_str(&ZEROS[..k]);
        pad -= k;
    }
    s.extend(digits[start..].iter().map(|&d| char::from(d)));
}

/// `prefix` followed by `n` zero-padded to `width` digits.
pub fn numbered(prefix: &str, n: u64, width: usize) -> String {
    let mut s = String::with_capacity(prefix.len() + width.max(20));
    s.push_str(prefix);
    push_padded(&mut s, n, width);
    s
}

/// A record's key in the store, typed by the record it holds.
pub struct Key<T> {
    name: String,
    record: PhantomData<fn() -> T>,
}

// By hand: derived, these would ask the record type for them too.
impl<T> Clone for Key<T> {
    fn clone(&self) -> Self {
        Key::new(self.name.clone())
    }
}
impl<T> PartialEq for Key<T> {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl<T> Eq for Key<T> {}
impl<T> std::fmt::Debug for Key<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({:?})", self.name)
    }
}

impl<T> Key<T> {
    pub fn new(name: String) -> Key<T> {
        Key {
            name,
            record: PhantomData,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }
}

/// The keys of one kind of record: those starting with the prefix.
pub struct Prefix<T> {
    prefix: &'static str,
    record: PhantomData<fn() -> T>,
}

impl<T> Prefix<T> {
    pub const fn new(prefix: &'static str) -> Prefix<T> {
        Prefix {
            prefix,
            record: PhantomData,
        }
    }

    pub fn as_str(&self) -> &'static str {
        self.prefix
    }

    /// The key of the record `id` of this kind (`ctx/` + `shared`).
    pub fn key(&self, id: &str) -> Key<T> {
        Key::new(format!("{}{id}", self.prefix))
    }

    /// The id part of a full key of this prefix (`ctx/shared` -> `shared`).
    pub fn id<'k>(&self, key: &'k Key<T>) -> &'k str {
        key.name.strip_prefix(self.prefix).unwrap_or(&key.name)
    }
}

/// Typed access to the host's store, on the host handle itself.
pub trait Records {
    /// The record, or `None` when there is none. A record that does not
    /// decode is set aside under [`BAD`] and read as absent: one bad record
    /// must not fail every later event that touches it.
    fn load<T: DeserializeOwned>(&mut self, key: &Key<T>) -> Result<Option<T>, String>;
    fn save<T: Serialize>(&mut self, key: &Key<T>, value: &T) -> Result<(), String>;
    fn remove<T>(&mut self, key: &Key<T>);
    /// Every key of one kind, in byte order.
    fn scan<T>(&mut self, prefix: &Prefix<T>) -> Vec<Key<T>>;
    /// At most `limit` keys of one kind after `after`, in byte order: how a
    /// kind of record that can grow large is read, a page per event.
    fn page<T>(&mut self, prefix: &Prefix<T>, after: Option<&Key<T>>, limit: u32) -> Vec<Key<T>>;

    /// The record, or its default when there is none yet.
    fn load_or_default<T: DeserializeOwned + Default>(
        &mut self,
        key: &Key<T>,
    ) -> Result<T, String> {
        Ok(self.load(key)?.unwrap_or_default())
    }

    /// A fresh id for a request or a timer, unique for the bot's life (the
    /// counter is a record: it survives swaps and restarts).
    fn next_id(&mut self) -> Result<u64, String> {
        let key = next_id_key();
        let id = self.load(&key)?.unwrap_or(1);
        self.save(&key, &(id + 1))?;
        Ok(id)
    }
}

fn next_id_key() -> Key<u64> {
    Key::new("meta/next-id".into())
}

impl Records for dyn Host + '_ {
    fn load<T: DeserializeOwned>(&mut self, key: &Key<T>) -> Result<Option<T>, String> {
        let Some(bytes) = self.store_get(&key.name) else {
            return Ok(None);
        };
        match serde_json::from_slice(&bytes) {
            Ok(value) => Ok(Some(value)),
            Err(e) => {
                self.error(&format!(
                    "record {} does not decode ({e}): set aside as {BAD}{0}, going on without it",
                    key.name
                ));
                self.store_put(&format!("{BAD}{}", key.name), &bytes);
                self.store_delete(&key.name);
                Ok(None)
            }
        }
    }

    fn save<T: Serialize>(&mut self, key: &Key<T>, value: &T) -> Result<(), String> {
        let bytes = serde_json::to_vec(value).map_err(|e| format!("encode {}: {e}", key.name))?;
        self.store_put(&key.name, &bytes);
        Ok(())
    }

    fn remove<T>(&mut self, key: &Key<T>) {
        self.store_delete(&key.name);
    }

    fn scan<T>(&mut self, prefix: &Prefix<T>) -> Vec<Key<T>> {
        self.store_keys(prefix.prefix)
            .into_iter()
            .map(Key::new)
            .collect()
    }

    fn page<T>(&mut self, prefix: &Prefix<T>, after: Option<&Key<T>>, limit: u32) -> Vec<Key<T>> {
        let after = after.map(|k| k.name.as_str());
        self.store_keys_page(prefix.prefix, after, limit)
            .into_iter()
            .map(Key::new)
            .collect()
    }
}
