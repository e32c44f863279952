//! The Matrix side of the host, as the event loop sees it.
//!
//! A front end turns what happens in rooms into guest events (messages,
//! invites, membership) and carries out the guest's Matrix effects (send,
//! edit, react, typing, receipts, join, leave), answering each request with
//! a `matrix-result` event. Both directions go through the loop's event
//! channel; `execute` never blocks.
//!
//! The real front end is matrix-sdk's client: [`session`] logs in (or
//! restores the saved session), [`sync`] receives, [`port`] sends;
//! [`access`] decides who may talk to the bot, [`convert`] turns timeline
//! events into guest messages.

pub mod access;
pub mod convert;
pub mod port;
pub mod session;
pub mod sync;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use surfaces_embed::{Effect, Event};
use tokio::sync::{mpsc, watch};

use crate::metrics::Metrics;
use crate::runtime::Handle;

/// The largest event content the guest may aim for. Synapse refuses events
/// over 65536 bytes, counted on the whole event as stored; in an encrypted
/// room the content travels as base64 ciphertext (4/3 of it) with the
/// encryption fields, and the event carries hashes, signatures and
/// references besides. 46 KiB of content stays under the limit either way,
/// measured on Synapse (`host/tests/matrix.rs`); 64 KiB made an encrypted
/// edit fail with 413 first.
pub const MAX_CONTENT_BYTES: u32 = 46 * 1024;

/// Where front ends send guest events.
pub type EventSender = mpsc::UnboundedSender<Event>;

pub trait MatrixPort: Send {
    /// Start carrying out one Matrix effect. Requests with an id are
    /// answered later with a `matrix-result` event.
    fn execute(&mut self, effect: Effect);

    /// Requests started and not answered yet (shutdown waits for them).
    fn pending(&self) -> usize {
        0
    }

    /// The bot is shutting down: stop taking in new messages and invites
    /// (requests still go out until the replies in flight end).
    fn stop_receiving(&mut self) {}
}

/// Whether the effect is the Matrix side's business.
pub fn is_matrix(effect: &Effect) -> bool {
    matches!(
        effect,
        Effect::Send { .. }
            | Effect::Edit { .. }
            | Effect::React { .. }
            | Effect::SetTyping { .. }
            | Effect::ReadReceipt { .. }
            | Effect::Join { .. }
            | Effect::Leave { .. }
    )
}

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

const REMEMBERED: usize = 4096;

impl Shared {
    fn with<T>(&self, f: impl FnOnce(&mut SharedInner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn remember_sent(&self, event_id: &str) {
        self.with(|s| {
            s.sent.insert(event_id.to_string());
        });
    }

    fn remember_send(&self, request: u64, event_id: &str) {
        self.with(|s| {
            s.by_request.insert(request, event_id.to_string());
            while s.by_request.len() > REMEMBERED {
                s.by_request.pop_first();
            }
        });
    }

    fn event_of_request(&self, request: u64) -> Option<String> {
        self.with(|s| s.by_request.get(&request).cloned())
    }

    fn was_sent(&self, event_id: &str) -> bool {
        self.with(|s| s.sent.contains(event_id))
    }
}

/// How the Matrix front end is set up, beyond its logged-in client.
pub struct FrontEndConfig {
    pub access: access::Access,
    pub bot_display_name: String,
    /// Prefix of every transaction id: the database's instance id.
    pub txn_prefix: String,
    pub sync_timeout: Duration,
    pub timeline_limit: u32,
    pub metrics: Arc<Metrics>,
}

/// Start receiving (a task) and return the sending side for the loop.
pub fn start(client: matrix_sdk::Client, config: FrontEndConfig, handle: &Handle) -> port::SdkPort {
    let shared = Arc::new(Shared::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let receiver = sync::Receiver {
        client: client.clone(),
        events: handle.events.clone(),
        control: handle.control.clone(),
        access: config.access,
        bot_user_id: client.user_id().map(|u| u.to_string()).unwrap_or_default(),
        bot_display_name: config.bot_display_name,
        shared: shared.clone(),
        stop: stop_rx,
        timeout: config.sync_timeout,
        timeline_limit: config.timeline_limit,
        metrics: config.metrics.clone(),
    };
    tokio::spawn(receiver.run());
    port::SdkPort::new(
        client,
        handle.events.clone(),
        &config.txn_prefix,
        shared,
        stop_tx,
        config.metrics,
    )
}

/// A bounded set of recent strings.
pub(crate) struct Recent {
    cap: usize,
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl Recent {
    pub fn new(cap: usize) -> Recent {
        Recent {
            cap,
            order: VecDeque::new(),
            set: HashSet::new(),
        }
    }

    pub fn contains(&self, s: &str) -> bool {
        self.set.contains(s)
    }

    pub fn insert(&mut self, s: String) {
        if self.set.insert(s.clone()) {
            self.order.push_back(s);
            if self.order.len() > self.cap
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
        }
    }
}

impl Default for Recent {
    fn default() -> Recent {
        Recent::new(REMEMBERED)
    }
}
