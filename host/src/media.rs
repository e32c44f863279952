//! Files between Matrix and the agent on the native host (the ids are
//! `surfaces_embed::media`'s).
//!
//! - A user's file stays on the homeserver: the agent client fetches it
//!   through a [`Fetch`] (the Matrix front end's, which downloads and
//!   decrypts it) when its message goes to the agent.
//! - A file the agent sends is kept in the database ([`Kept`], table
//!   `kept_files`) until the Matrix front end has sent it, and for a day
//!   at most: it survives a restart, and it never piles up.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rusqlite::{Connection, OptionalExtension, params};
use surfaces_embed::media::MediaRef;

use crate::store::StoreError;

/// How long a kept file waits to be sent before it is dropped.
pub const KEPT_FOR_MS: u64 = 24 * 3600 * 1000;

/// Most bytes kept at once: past it, the oldest files go first (a runaway
/// agent must not fill the disk).
pub const KEPT_MAX_BYTES: u64 = 256 << 20;

/// A file's bytes, or why they could not be had, in words for the user.
pub type Fetched = Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send>>;

/// Fetches a user's file (download, decrypt) by its ref.
pub trait Fetch: Send + Sync {
    fn fetch(&self, file: MediaRef) -> Fetched;
}

/// A file the agent sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptFile {
    pub name: String,
    pub mime: String,
    pub bytes: Vec<u8>,
}

/// Files the agent sent, until they are sent on.
pub struct Kept {
    conn: Mutex<Connection>,
}

impl Kept {
    /// Open the database [`crate::store::SqliteStore::open`] has created
    /// and migrated.
    pub fn open(path: &Path) -> Result<Kept, StoreError> {
        let conn = crate::store::connect(path)?;
        Ok(Kept {
            conn: Mutex::new(conn),
        })
    }

    /// A store of its own, in memory (no database: the terminal front).
    pub fn in_memory() -> Result<Kept, StoreError> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(crate::store::KEPT_FILES_TABLE)?;
        Ok(Kept {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // SQLite statements are atomic: a panic left nothing half-done.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keep a file; its number. Files older than a day go, and the oldest
    /// while the total is over [`KEPT_MAX_BYTES`].
    pub fn keep(&self, file: &KeptFile, now_ms: u64) -> Result<u64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO kept_files (name, mime, data, kept_ms) VALUES (?1, ?2, ?3, ?4)",
            params![file.name, file.mime, file.bytes, now_ms as i64],
        )?;
        let n = conn.last_insert_rowid() as u64;
        let cutoff = now_ms.saturating_sub(KEPT_FOR_MS) as i64;
        conn.execute("DELETE FROM kept_files WHERE kept_ms < ?1", params![cutoff])?;
        loop {
            let total: i64 = conn.query_row(
                "SELECT COALESCE(SUM(LENGTH(data)), 0) FROM kept_files",
                [],
                |r| r.get(0),
            )?;
            if total as u64 <= KEPT_MAX_BYTES {
                break;
            }
            let dropped = conn.execute(
                "DELETE FROM kept_files WHERE id = (SELECT MIN(id) FROM kept_files WHERE id != ?1)",
                params![n as i64],
            )?;
            if dropped == 0 {
                break;
            }
            tracing::warn!("kept files over {KEPT_MAX_BYTES} bytes: the oldest dropped");
        }
        Ok(n)
    }

    /// A kept file, if it is still here.
    pub fn get(&self, n: u64) -> Result<Option<KeptFile>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT name, mime, data FROM kept_files WHERE id = ?1",
                params![n as i64],
                |r| {
                    Ok(KeptFile {
                        name: r.get(0)?,
                        mime: r.get(1)?,
                        bytes: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// Forget a file once it is sent.
    pub fn forget(&self, n: u64) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM kept_files WHERE id = ?1", params![n as i64])?;
        Ok(())
    }
}

/// What the agent client needs for files: where to fetch users' files,
/// where to keep the agent's, and the largest it passes.
#[derive(Clone)]
pub struct Files {
    pub fetch: Option<Arc<dyn Fetch>>,
    pub kept: Arc<Kept>,
    pub max_bytes: u64,
}

impl fmt::Debug for Files {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Files")
            .field("fetch", &self.fetch.is_some())
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl Files {
    /// Fetch every file `refs` names (a failure is that file's, in words).
    /// Once what is fetched passes what one message takes, the rest are not
    /// downloaded (`media::inline` refuses the message at the file that
    /// passed it): memory stays bounded however many files a message has.
    pub async fn fetch_all(&self, refs: Vec<MediaRef>) -> Vec<(MediaRef, Result<Vec<u8>, String>)> {
        let mut out = Vec::with_capacity(refs.len());
        let mut total = 0u64;
        for r in refs {
            let got = match (&self.fetch, &r) {
                _ if total > surfaces_embed::media::MAX_MESSAGE_FILE_BYTES => {
                    Err("not downloaded: the files before it are already too many bytes".into())
                }
                (Some(fetch), MediaRef::Event { .. }) => fetch.fetch(r.clone()).await,
                (None, _) => Err("this front end has no files".to_string()),
                (_, MediaRef::Kept(_)) => Err("not a file a user sent".to_string()),
            };
            if let Ok(bytes) = &got {
                total += bytes.len() as u64;
            }
            out.push((r, got));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(n: usize) -> KeptFile {
        KeptFile {
            name: "a.png".into(),
            mime: "image/png".into(),
            bytes: vec![7; n],
        }
    }

    #[test]
    fn a_kept_file_is_there_until_forgotten_or_a_day_old() {
        let kept = Kept::in_memory().expect("opens");
        let a = kept.keep(&file(3), 1_000).expect("kept");
        assert_eq!(kept.get(a).expect("reads"), Some(file(3)));
        kept.forget(a).expect("forgets");
        assert_eq!(kept.get(a).expect("reads"), None);
        let b = kept.keep(&file(3), 1_000).expect("kept");
        let c = kept.keep(&file(4), 1_000 + KEPT_FOR_MS + 1).expect("kept");
        assert_eq!(kept.get(b).expect("reads"), None, "a day old");
        assert_eq!(kept.get(c).expect("reads"), Some(file(4)));
    }
}
