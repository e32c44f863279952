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
pub mod media;
pub mod port;
pub mod recovery;
pub mod session;
mod shared;
pub mod sync;
pub mod verification;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::access::Access;
use crate::channels::{Control, Handle};
use crate::metrics::{Kind, Metrics};
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
    /// `/healthz` says unhealthy after this long without a successful sync.
    pub sync_stale_after: Duration,
    /// The agent's files, until they are sent.
    pub kept: Arc<crate::media::Kept>,
}

/// Restarts of the sync task (after a panic) before the bot gives up.
const SYNC_RESTARTS: u32 = 5;

/// Run the task `start` makes, and start it again if it panics (the sync
/// task picks up from its saved position); after `restarts` restarts the
/// bot stops with an error. A task that ends is done: it ends only when
/// the bot stops or cannot go on (and then says so itself).
pub(crate) async fn supervise<F, Fut>(
    name: &'static str,
    start: F,
    restarts: u32,
    control: mpsc::UnboundedSender<Control>,
    metrics: Arc<Metrics>,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    for restart in 0..=restarts {
        let died = match tokio::spawn(start()).await {
            Ok(()) => return,
            Err(e) if e.is_panic() => panic_message(e.into_panic()),
            Err(_) => return, // cancelled: the runtime is going away
        };
        if restart == restarts {
            let _ = control.send(Control::Fail(format!(
                "the {name} task died {} times; the last time: {died}",
                restarts + 1
            )));
            return;
        }
        tracing::error!("the {name} task died ({died}); starting it again");
        metrics
            .task_restarts
            .get_or_create(&Kind { kind: name })
            .inc();
        tokio::time::sleep(Duration::from_secs(1 << restart.min(5))).await;
    }
}

/// What a panic said, if it said it in words.
pub(crate) fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// Start receiving (a task) and return the sending side for the loop.
pub fn start(client: matrix_sdk::Client, config: FrontEndConfig, handle: &Handle) -> port::SdkPort {
    let shared = Arc::new(Shared::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let receiver = sync::Receiver {
        client: client.clone(),
        events: handle.inbound.clone(),
        control: handle.control.clone(),
        access: config.access,
        bot_user_id: client.user_id().map(|u| u.to_string()).unwrap_or_default(),
        bot_display_name: config.bot_display_name,
        shared: shared.clone(),
        stop: stop_rx,
        timeout: config.sync_timeout,
        timeline_limit: config.timeline_limit,
        metrics: config.metrics.clone(),
        position: Arc::new(config.position),
    };
    config
        .metrics
        .watch_sync(config.sync_stale_after, crate::time::now_ms());
    tokio::spawn(supervise(
        "Matrix sync",
        move || receiver.clone().run(),
        SYNC_RESTARTS,
        handle.control.clone(),
        config.metrics.clone(),
    ));
    port::SdkPort::new(
        client,
        handle.events.clone(),
        &config.txn_prefix,
        shared,
        stop_tx,
        config.metrics,
        config.kept,
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use tokio::sync::mpsc;

    use super::supervise;
    use crate::channels::Control;
    use crate::metrics::Metrics;

    #[tokio::test(start_paused = true)]
    async fn a_task_that_dies_is_started_again_and_one_that_keeps_dying_stops_the_bot() {
        let metrics = Metrics::new();
        let (control, mut controls) = mpsc::unbounded_channel();
        // Dies twice, then runs to its end.
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        supervise(
            "test",
            move || {
                let n = counted.fetch_add(1, Ordering::SeqCst);
                async move { assert!(n >= 2, "dies on run {n}") }
            },
            5,
            control.clone(),
            metrics.clone(),
        )
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert!(controls.try_recv().is_err(), "no reason to stop the bot");
        assert!(
            metrics
                .encode()
                .contains("surfaces_task_restarts_total{kind=\"test\"} 2")
        );
        // Always dies: after the restarts, the bot is told to stop.
        supervise("test", || async { panic!("always") }, 2, control, metrics).await;
        match controls.try_recv() {
            Ok(Control::Fail(why)) => assert!(why.contains("always"), "{why}"),
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}
