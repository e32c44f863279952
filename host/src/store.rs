//! Durable state in SQLite: the guest's key/value records behind its
//! `store` import, with a schema version and migrations.
//!
//! Every guest event's writes commit in one transaction. The database runs
//! in WAL mode with `synchronous = NORMAL`: a committed event survives the
//! host being killed (it may not survive the machine losing power, but
//! commits are lost from the newest back: the WAL is replayed in order up
//! to its last whole commit, so a later commit never survives an earlier
//! one, whichever connection wrote them). [`HostMeta`] relies on that.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use surfaces_embed::{KvError, KvStore, MemoryKv, Snapshotter, Write};

/// Migrations, in order; `user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    // 1: the guest's records. Keys are compared as bytes (BLOB), so a
    // prefix scan is a range scan.
    "CREATE TABLE guest_kv (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;",
    // 2: the host's own records (the database's identity).
    "CREATE TABLE host_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;",
    // 3: files the agent sent, until they are sent on (`crate::media`).
    KEPT_FILES_TABLE,
];

/// Files the agent sent (`crate::media::Kept`).
pub(crate) const KEPT_FILES_TABLE: &str = "CREATE TABLE kept_files (id INTEGER PRIMARY KEY \
    AUTOINCREMENT, name TEXT NOT NULL, mime TEXT NOT NULL, data BLOB NOT NULL, \
    kept_ms INTEGER NOT NULL);";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error(
        "database schema version {found} is newer than this host knows ({known}): refusing to touch it"
    )]
    TooNew { found: i64, known: i64 },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
}

pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Self::init(conn)
    }

    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<SqliteStore, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut store = SqliteStore { conn };
        store.migrate()?;
        Ok(store)
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    /// A random name for this database, made when it is first opened. The
    /// guest's request ids are unique only within one database; prefixed
    /// with this they make Matrix transaction ids that never repeat, even
    /// when the database is replaced while the Matrix device is kept (a
    /// repeated transaction id would make the homeserver drop the send).
    pub fn instance_id(&self) -> Result<String, StoreError> {
        let found: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM host_meta WHERE key = 'instance'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = found {
            return Ok(id);
        }
        let id = random_name();
        self.conn.execute(
            "INSERT INTO host_meta (key, value) VALUES ('instance', ?1)",
            params![id],
        )?;
        Ok(id)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let known = MIGRATIONS.len() as i64;
        let found = self.schema_version()?;
        if found > known {
            return Err(StoreError::TooNew { found, known });
        }
        let tx = self.conn.transaction()?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
        }
        tx.commit()?;
        Ok(())
    }
}

/// The host's own records in the same database (`host_meta`), through a
/// connection of their own: the Matrix sync task keeps its position here,
/// written after the loop has committed the batch's guest events, so the
/// position can never be newer than the commits (see the module's note).
pub struct HostMeta {
    /// Behind a lock only so the sync task can hold it across awaits.
    conn: std::sync::Mutex<Connection>,
}

/// Another connection to the database [`SqliteStore::open`] has created
/// and migrated (for the host's own records beside the guest's).
pub(crate) fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(|source| StoreError::Open {
        path: path.display().to_string(),
        source,
    })?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

impl HostMeta {
    /// Open the database that [`SqliteStore::open`] has created and
    /// migrated.
    pub fn open(path: &Path) -> Result<HostMeta, StoreError> {
        let conn = connect(path)?;
        Ok(HostMeta {
            conn: std::sync::Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding it left nothing half-written (SQLite
        // statements are atomic): go on with it.
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT value FROM host_meta WHERE key = ?1")?
            .query_row(params![key], |r| r.get(0))
            .optional()?)
    }

    pub fn put(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached("INSERT OR REPLACE INTO host_meta (key, value) VALUES (?1, ?2)")?
            .execute(params![key, value])?;
        Ok(())
    }
}

/// Twelve base-36 characters from the OS's randomness (via std's hasher
/// keys) and the clock.
fn random_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    let mut n = h.finish();
    let mut name = String::new();
    for _ in 0..12 {
        let d = (n % 36) as u32;
        name.push(char::from_digit(d, 36).unwrap_or('0'));
        n /= 36;
    }
    name
}

/// The smallest byte string greater than every string starting with
/// `prefix`, or `None` when there is none (all 0xFF).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn kv_err(e: rusqlite::Error) -> KvError {
    KvError(format!("database: {e}"))
}

impl KvStore for SqliteStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.conn
            .prepare_cached("SELECT value FROM guest_kv WHERE key = ?1")
            .and_then(|mut st| {
                st.query_row(params![key.as_bytes()], |r| r.get(0))
                    .optional()
            })
            .map_err(kv_err)
    }

    fn keys(&self, prefix: &str) -> Result<Vec<String>, KvError> {
        let rows: Result<Vec<Vec<u8>>, rusqlite::Error> = match prefix_end(prefix.as_bytes()) {
            Some(end) => self
                .conn
                .prepare_cached(
                    "SELECT key FROM guest_kv WHERE key >= ?1 AND key < ?2 ORDER BY key",
                )
                .and_then(|mut st| {
                    st.query_map(params![prefix.as_bytes(), end], |r| r.get(0))?
                        .collect()
                }),
            None => self
                .conn
                .prepare_cached("SELECT key FROM guest_kv WHERE key >= ?1 ORDER BY key")
                .and_then(|mut st| {
                    st.query_map(params![prefix.as_bytes()], |r| r.get(0))?
                        .collect()
                }),
        };
        rows.map_err(kv_err)?
            .into_iter()
            .map(|k| String::from_utf8(k).map_err(|e| KvError(format!("key is not UTF-8: {e}"))))
            .collect()
    }

    fn keys_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, KvError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // From the prefix, or past `after`; up to the prefix's end.
        let start = match after {
            Some(a) if a.as_bytes() >= prefix.as_bytes() => {
                let mut past = a.as_bytes().to_vec();
                past.push(0);
                past
            }
            _ => prefix.as_bytes().to_vec(),
        };
        let end = prefix_end(prefix.as_bytes()).unwrap_or_else(|| vec![0xff; prefix.len() + 1]);
        let rows: Result<Vec<Vec<u8>>, rusqlite::Error> = self
            .conn
            .prepare_cached(
                "SELECT key FROM guest_kv WHERE key >= ?1 AND key < ?2 ORDER BY key LIMIT ?3",
            )
            .and_then(|mut st| {
                st.query_map(params![start, end, limit], |r| r.get(0))?
                    .collect()
            });
        rows.map_err(kv_err)?
            .into_iter()
            .map(|k| String::from_utf8(k).map_err(|e| KvError(format!("key is not UTF-8: {e}"))))
            .collect()
    }

    fn commit(&mut self, writes: Vec<Write>) -> Result<(), KvError> {
        if writes.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction().map_err(kv_err)?;
        {
            let mut put = tx
                .prepare_cached("INSERT OR REPLACE INTO guest_kv (key, value) VALUES (?1, ?2)")
                .map_err(kv_err)?;
            let mut del = tx
                .prepare_cached("DELETE FROM guest_kv WHERE key = ?1")
                .map_err(kv_err)?;
            for (key, value) in &writes {
                match value {
                    Some(v) => put.execute(params![key.as_bytes(), v]),
                    None => del.execute(params![key.as_bytes()]),
                }
                .map_err(kv_err)?;
            }
        }
        tx.commit().map_err(kv_err)
    }

    /// A read-only connection of its own reads the copy (WAL: it sees the
    /// last commit and never blocks the writer); a database in memory has
    /// no second connection and is copied at once.
    fn snapshotter(&self) -> Result<Snapshotter, KvError> {
        match self.conn.path().filter(|p| !p.is_empty()) {
            Some(path) => {
                let path = path.to_string();
                Ok(Box::new(move || {
                    let conn = Connection::open_with_flags(
                        &path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )
                    .map_err(kv_err)?;
                    read_all(&conn)
                }))
            }
            None => {
                let copy = read_all(&self.conn)?;
                Ok(Box::new(move || Ok(copy)))
            }
        }
    }
}

/// Every guest record, in one read transaction.
fn read_all(conn: &Connection) -> Result<MemoryKv, KvError> {
    let mut st = conn
        .prepare("SELECT key, value FROM guest_kv")
        .map_err(kv_err)?;
    let rows = st
        .query_map([], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
        })
        .map_err(kv_err)?;
    let mut copy = MemoryKv::default();
    for row in rows {
        let (key, value) = row.map_err(kv_err)?;
        let key = String::from_utf8(key).map_err(|e| KvError(format!("key is not UTF-8: {e}")))?;
        copy.map.insert(key, value);
    }
    Ok(copy)
}
