//! The durable key/value state behind the guest's `store` import.

use std::collections::BTreeMap;

/// A failure of the host's store.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KvError(pub String);

/// One write of an event: a value to put, or `None` to delete.
pub type Write = (String, Option<Vec<u8>>);

/// The host side of the guest's durable state. The native host keeps it in
/// SQLite, the simulator in memory.
pub trait KvStore: Send {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    /// Keys starting with `prefix`, in byte order.
    fn keys(&self, prefix: &str) -> Result<Vec<String>, KvError>;
    /// At most `limit` of [`KvStore::keys`] greater than `after`, without
    /// reading the rest.
    fn keys_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, KvError> {
        Ok(self
            .keys(prefix)?
            .into_iter()
            .filter(|k| after.is_none_or(|a| k.as_str() > a))
            .take(limit)
            .collect())
    }
    /// Apply all writes of one event atomically, in order.
    fn commit(&mut self, writes: Vec<Write>) -> Result<(), KvError>;
    /// A way to read a consistent copy of every record, to run on another
    /// thread while this store goes on serving (a candidate guest is
    /// started on the copy before a swap).
    fn snapshotter(&self) -> Result<Snapshotter, KvError>;
}

/// Reads a copy of a store (see [`KvStore::snapshotter`]).
pub type Snapshotter = Box<dyn FnOnce() -> Result<MemoryKv, KvError> + Send>;

/// How hosts hand their store to the embedding.
pub type BoxedKv = Box<dyn KvStore>;

/// In-memory store (the simulator's, and tests').
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryKv {
    pub map: BTreeMap<String, Vec<u8>>,
}

impl KvStore for MemoryKv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.map.get(key).cloned())
    }

    fn keys(&self, prefix: &str) -> Result<Vec<String>, KvError> {
        Ok(self
            .map
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect())
    }

    fn keys_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, KvError> {
        use std::ops::Bound;
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a.to_owned()),
            _ => Bound::Included(prefix.to_owned()),
        };
        Ok(self
            .map
            .range((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, _)| k.clone())
            .collect())
    }

    fn snapshotter(&self) -> Result<Snapshotter, KvError> {
        let copy = self.clone();
        Ok(Box::new(move || Ok(copy)))
    }

    fn commit(&mut self, writes: Vec<Write>) -> Result<(), KvError> {
        for (key, value) in writes {
            match value {
                Some(v) => self.map.insert(key, v),
                None => self.map.remove(&key),
            };
        }
        Ok(())
    }
}

/// Stands in for the host's store while it is lent to a guest call.
pub(crate) struct Detached;

impl KvStore for Detached {
    fn get(&self, _: &str) -> Result<Option<Vec<u8>>, KvError> {
        Err(KvError("store is lent to a guest call".into()))
    }
    fn keys(&self, _: &str) -> Result<Vec<String>, KvError> {
        Err(KvError("store is lent to a guest call".into()))
    }
    fn commit(&mut self, _: Vec<Write>) -> Result<(), KvError> {
        Err(KvError("store is lent to a guest call".into()))
    }
    fn snapshotter(&self) -> Result<Snapshotter, KvError> {
        Err(KvError("store is lent to a guest call".into()))
    }
}
