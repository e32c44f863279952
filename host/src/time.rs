//! Time helpers shared by the loop, the front ends and the agent client.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Milliseconds since the Unix epoch, as the host and its guest see them:
/// the wall clock read once when the process starts, advanced by the
/// monotonic clock since. Within one run it never goes back and does not
/// jump when the system clock is set (the guest spaces edits and retries
/// by it, so a jump would send an edit early or hold one for hours); a
/// restart picks the wall clock up again.
pub fn now_ms() -> u64 {
    static START: OnceLock<(u64, std::time::Instant)> = OnceLock::new();
    let (wall_ms, at) = START.get_or_init(|| (wall_ms(), std::time::Instant::now()));
    wall_ms.saturating_add(at.elapsed().as_millis() as u64)
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Sleep until `deadline`, or for ever if there is none (a `select!` arm
/// that only fires when armed).
pub(crate) async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
