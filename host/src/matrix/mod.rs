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
//! [`convert`] turns timeline events into guest messages (who may talk to
//! the bot is `crate::access`'s decision).

pub mod convert;
pub mod port;
pub mod session;
mod shared;
pub mod sync;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::access::Access;
use crate::channels::Handle;
use crate::metrics::Metrics;
use shared::Shared;

/// The largest event content the guest may aim for. Synapse refuses events
/// over 65536 bytes, counted on the whole event as stored; in an encrypted
/// room the content travels as base64 ciphertext (4/3 of it) with the
/// encryption fields, and the event carries hashes, signatures and
/// references besides. 46 KiB of content stays under the limit either way,
/// measured on Synapse (`host/tests/it/matrix.rs`); 64 KiB made an encrypted
/// edit fail with 413 first.
pub const MAX_CONTENT_BYTES: u32 = 46 * 1024;

/// How the Matrix front end is set up, beyond its logged-in client.
pub struct FrontEndConfig {
    pub access: Access,
    pub bot_display_name: String,
    /// Prefix of every transaction id: the database's instance id.
    pub txn_prefix: String,
    pub sync_timeout: Duration,
    pub timeline_limit: u32,
    pub metrics: Arc<Metrics>,
    /// Where the sync position is kept: the guest's database.
    pub position: crate::store::HostMeta,
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
        position: config.position,
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
