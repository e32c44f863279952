//! The SQLite store keeps what was committed across a reopen (a restart),
//! applies an event's writes atomically, and behaves like the in-memory
//! store the simulator uses.

use proptest::prelude::*;
use surfaces_embed::{KvStore, MemoryKv};
use surfaces_host::store::{SqliteStore, StoreError};

fn put(k: &str, v: &str) -> (String, Option<Vec<u8>>) {
    (k.to_string(), Some(v.as_bytes().to_vec()))
}

#[test]
fn committed_writes_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    {
        let mut s = SqliteStore::open(&path).expect("open");
        s.commit(vec![put("user/@a:x", "1"), put("ctx/shared", "2")])
            .expect("commit");
        s.commit(vec![("ctx/shared".into(), None)]).expect("commit");
        // Dropped without any shutdown step, as a killed host would.
    }
    let s = SqliteStore::open(&path).expect("reopen");
    assert_eq!(s.get("user/@a:x").unwrap(), Some(b"1".to_vec()));
    assert_eq!(s.get("ctx/shared").unwrap(), None);
    assert_eq!(s.schema_version().unwrap(), 3);
}

#[test]
fn the_instance_id_is_made_once_and_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    let first = SqliteStore::open(&path)
        .expect("open")
        .instance_id()
        .expect("id");
    let again = SqliteStore::open(&path)
        .expect("reopen")
        .instance_id()
        .expect("id");
    assert_eq!(first, again);
    assert_eq!(first.len(), 12);
    let other = SqliteStore::open(&dir.path().join("other.db"))
        .expect("open")
        .instance_id()
        .expect("id");
    assert_ne!(first, other, "a new database is a new instance");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    drop(SqliteStore::open(&path).expect("open"));
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    conn.pragma_update(None, "user_version", 99).expect("bump");
    drop(conn);
    let err = SqliteStore::open(&path).err().expect("refused");
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
}

#[test]
fn prefix_scans_are_exact() {
    let mut s = SqliteStore::open_in_memory().expect("open");
    s.commit(vec![
        put("a", "x"),
        put("ab", "x"),
        put("ab/c", "x"),
        put("ac", "x"),
        put("b", "x"),
    ])
    .unwrap();
    assert_eq!(s.keys("ab").unwrap(), vec!["ab", "ab/c"]);
    assert_eq!(s.keys("").unwrap().len(), 5);
    assert!(s.keys("z").unwrap().is_empty());
}

proptest! {
    /// Any sequence of commits leaves SQLite and the in-memory store equal,
    /// key for key, scan for scan and page for page.
    #[test]
    fn behaves_like_the_memory_store(
        batches in prop::collection::vec(
            prop::collection::vec(
                ("[a-c/é]{0,4}", prop::option::of("[a-z]{0,3}")),
                0..6,
            ),
            0..8,
        ),
        prefix in "[a-c/é]{0,2}",
        after in prop::option::of("[a-c/é]{0,4}"),
        limit in 0usize..5,
    ) {
        let mut sql = SqliteStore::open_in_memory().unwrap();
        let mut mem = MemoryKv::default();
        for batch in batches {
            let writes: Vec<_> = batch
                .into_iter()
                .map(|(k, v)| (k, v.map(String::into_bytes)))
                .collect();
            sql.commit(writes.clone()).unwrap();
            mem.commit(writes).unwrap();
        }
        prop_assert_eq!(sql.keys(&prefix).unwrap(), mem.keys(&prefix).unwrap());
        // A page: the same as the whole scan, filtered and cut.
        let expected: Vec<String> = mem
            .keys(&prefix)
            .unwrap()
            .into_iter()
            .filter(|k| after.as_deref().is_none_or(|a| k.as_str() > a))
            .take(limit)
            .collect();
        let after = after.as_deref();
        prop_assert_eq!(&sql.keys_page(&prefix, after, limit).unwrap(), &expected);
        prop_assert_eq!(&mem.keys_page(&prefix, after, limit).unwrap(), &expected);
        for k in mem.keys("").unwrap() {
            prop_assert_eq!(sql.get(&k).unwrap(), mem.get(&k).unwrap());
        }
    }
}
