//! The format of a guest's records, versioned in the store itself
//! (`meta/schema`), so a guest swapped in knows what it finds: the same
//! format, an older one to migrate forward in `init`, or a newer one it
//! may read only if the guest that wrote it said so.
//!
//! A guest declares the [`Schema`] it writes and its [`Migration`]s, and
//! calls [`open`] at the start of `init`:
//!
//! ```ignore
//! const SCHEMA: Schema = Schema { version: 2, readable_from: 2 };
//! fn v1_to_v2(host: &mut dyn Host) -> Result<(), String> { ... }
//! schema::open(host, SCHEMA, &[(1, v1_to_v2)])?;
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

fn key() -> Key<Schema> {
    Key::new("meta/schema".into())
}

/// The schema the store is at (version 0: empty, or written before
/// schemas).
pub fn stored(host: &mut dyn Host) -> Result<Schema, String> {
    Ok(host.load(&key())?.unwrap_or(Schema {
        version: 0,
        readable_from: 0,
    }))
}

/// Bring the store to `schema`, or say why this guest cannot use it. A
/// store without a schema (empty, or from before schemas) is taken to be
/// at the oldest schema this guest migrates from, or at its own.
pub fn open(
    host: &mut dyn Host,
    schema: Schema,
    migrations: &[Migration],
) -> Result<Opened, String> {
    let mut at = stored(host)?;
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
        if stored(host)?.version == 0 {
            host.save(&key(), &schema)?;
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
    host.save(&key(), &schema)?;
    host.info(&format!(
        "store migrated from schema {} to {}",
        at.version, schema.version
    ));
    Ok(Opened::Migrated { from: at.version })
}
