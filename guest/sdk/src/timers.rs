//! Timers that know what they are for. The host only knows a timer's id;
//! its purpose is a record under `timer/{id}`, so a timer set by one
//! instance is understood by the next (after a swap, a trap or a restart),
//! and one whose record is gone fires into nothing. A host restart loses
//! the timers themselves (not a swap or a trap): a guest told so
//! (`host-info.resumed` false) forgets their records and sets what it
//! still needs again.
//!
//! ```ignore
//! let id = timers::start(host, &Purpose::Remind { room }, 60_000)?;
//! // later, on Event::Timer(id):
//! if let Some(purpose) = timers::take::<Purpose>(host, id)? { ... }
//! ```

use serde::{Serialize, de::DeserializeOwned};

use crate::host::Host;
use crate::store::{Key, Records};

/// Where timers' purposes are kept.
pub const PREFIX: &str = "timer/";

/// The record of timer `id`'s purpose.
pub fn key<P>(id: u64) -> Key<P> {
    Key::new(crate::store::numbered(PREFIX, id, 20))
}

/// Set a timer for `purpose` that fires after `delay_ms`; its id.
pub fn start<P: Serialize>(host: &mut dyn Host, purpose: &P, delay_ms: u64) -> Result<u64, String> {
    let id = host.next_id()?;
    host.save(&key(id), purpose)?;
    host.set_timer(id, delay_ms);
    Ok(id)
}

/// What timer `id` was for, without forgetting it.
pub fn purpose<P: DeserializeOwned>(host: &mut dyn Host, id: u64) -> Result<Option<P>, String> {
    host.load(&key(id))
}

/// What timer `id` was for, forgetting it: the usual way to handle a
/// `timer` event (`None`: cancelled, or not this guest's).
pub fn take<P: DeserializeOwned>(host: &mut dyn Host, id: u64) -> Result<Option<P>, String> {
    let purpose = host.load(&key(id))?;
    host.remove(&key::<P>(id));
    Ok(purpose)
}

/// Cancel timer `id`: it will not fire, and its purpose is forgotten.
pub fn cancel(host: &mut dyn Host, id: u64) {
    host.remove(&key::<()>(id));
    host.cancel_timer(id);
}
