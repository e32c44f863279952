//! The format of a guest's records, versioned in the store itself
//! (`meta/schema`), so a guest swapped in knows what it finds: the same
//! format, an older one to migrate forward in `init`, or a newer one it
//! may read only if the guest that wrote it said so.
//!
//! A guest declares the [`Schema`] it writes and its [`Migration`]s, and
//! calls [`open`] at the start of `init` with the name of its family of
//! records (each family has its own version, `meta/schema/{family}`: a
//! store another kind of guest wrote does not constrain this one):
//!
//! ```ignore
//! const SCHEMA: Schema = Schema { version: 2, readable_from: 2 };
//! fn v1_to_v2(host: &mut dyn Host) -> Result<(), String> { ... }
//! schema::open(host, "notes", SCHEMA, &[(1, v1_to_v2)])?;
//! ```
//!
//! `readable_from` is the oldest schema whose guests can still read what
//! this one writes: a change that only adds fields old guests ignore keeps
//! it where it was (so a rollback to the old guest reads on); a change old
//! guests cannot read raises it to `version` (and a rollback is refused:
//! the old guest does not start on the store).

use serde::{Deserialize, Serialize};

use crate::host::Host;
use crate::store::{Key, Records};

/// What a guest writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    pub version: u32,
    /// The oldest schema version whose guests can read this one's records.
    pub readable_from: u32,
}

/// One step forward: it rewrites the records of schema `from` into the
/// format of `from + 1`. It runs inside `init`, so within one call's
/// budget and caps (100,000 store writes).
pub type Migration = (u32, fn(&mut dyn Host) -> Result<(), String>);

/// What [`open`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opened {
    /// The store is at this guest's schema.
    Current,
    /// The store was at schema `from`, and is now at this guest's.
    Migrated { from: u32 },
    /// A newer guest wrote the store, and said that this one can read it.
    Newer { version: u32 },
}

fn key(family: &str) -> Key<Schema> {
    Key::new(format!("meta/schema/{family}"))
}

/// The schema `family`'s records are at (version 0: none yet, or written
/// before schemas). A schema record that does not decode is an error, not
/// a version 0: migrating current records again would ruin them.
pub fn stored(host: &mut dyn Host, family: &str) -> Result<Schema, String> {
    let key = key(family);
    match host.store_get(key.as_str()) {
        None => Ok(Schema {
            version: 0,
            readable_from: 0,
        }),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("{} does not decode ({e})", key.as_str())),
    }
}

/// Bring `family`'s records to `schema`, or say why this guest cannot use
/// the store. An empty store takes the guest's schema as it is; records
/// without a schema (from before schemas) are taken to be at the oldest
/// schema this guest migrates from, or at its own.
pub fn open(
    host: &mut dyn Host,
    family: &str,
    schema: Schema,
    migrations: &[Migration],
) -> Result<Opened, String> {
    if schema.readable_from > schema.version {
        return Err(format!(
            "schema {} cannot be readable only from the later schema {}",
            schema.version, schema.readable_from
        ));
    }
    let mut at = stored(host, family)?;
    if at.version == 0 && host.store_keys_page("", None, 1).is_empty() {
        host.save(&key(family), &schema)?;
        return Ok(Opened::Current);
    }
    if at.version == 0 {
        at.version = migrations
            .iter()
            .map(|(from, _)| *from)
            .min()
            .unwrap_or(schema.version)
            .min(schema.version);
    }
    if at.version > schema.version {
        if at.readable_from <= schema.version {
            return Ok(Opened::Newer {
                version: at.version,
            });
        }
        return Err(format!(
            "the store is at schema {}, which guests before schema {} cannot read; this guest reads schema {}",
            at.version, at.readable_from, schema.version
        ));
    }
    if at.version == schema.version {
        if stored(host, family)?.version == 0 {
            host.save(&key(family), &schema)?;
        }
        return Ok(Opened::Current);
    }
    for from in at.version..schema.version {
        match migrations.iter().find(|(f, _)| *f == from) {
            Some((_, step)) => {
                step(host).map_err(|e| format!("migrating the store from schema {from}: {e}"))?
            }
            None => {
                return Err(format!(
                    "the store is at schema {from}, and this guest has no migration from it to schema {}",
                    from + 1
                ));
            }
        }
    }
    host.save(&key(family), &schema)?;
    host.info(&format!(
        "{family} records migrated from schema {} to {}",
        at.version, schema.version
    ));
    Ok(Opened::Migrated { from: at.version })
}
