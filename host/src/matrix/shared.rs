//! What the sending and the receiving side of the Matrix front end share:
//! the events the bot sent (a reply to one addresses the bot) and, for
//! edits that name their original by request, this run's sends.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::PoisonError;

pub(crate) use surfaces_embed::inbox::Recent;

/// What the sending and the receiving side share.
#[derive(Default)]
pub(crate) struct Shared {
    inner: Mutex<SharedInner>,
}

#[derive(Default)]
struct SharedInner {
    /// Event ids the bot sent lately: a reply to one addresses the bot.
    sent: Recent,
    /// Request id -> event id of this run's sends, for edits that name
    /// their original by request.
    by_request: BTreeMap<u64, String>,
}

const REMEMBERED: usize = surfaces_embed::inbox::REMEMBERED;

impl Shared {
    fn with<T>(&self, f: impl FnOnce(&mut SharedInner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub(super) fn remember_sent(&self, event_id: &str) {
        self.with(|s| {
            s.sent.insert(event_id.to_string());
        });
    }

    pub(super) fn remember_send(&self, request: u64, event_id: &str) {
        self.with(|s| {
            s.by_request.insert(request, event_id.to_string());
            while s.by_request.len() > REMEMBERED {
                s.by_request.pop_first();
            }
        });
    }

    pub(super) fn event_of_request(&self, request: u64) -> Option<String> {
        self.with(|s| s.by_request.get(&request).cloned())
    }

    pub(super) fn was_sent(&self, event_id: &str) -> bool {
        self.with(|s| s.sent.contains(event_id))
    }
}
