//! The Matrix side of the host, as the event loop sees it.
//!
//! A front end turns what happens in rooms into guest events (messages,
//! invites, membership) and carries out the guest's Matrix effects (send,
//! edit, react, typing, receipts, join, leave), answering each request with
//! a `matrix-result` event. Both directions go through the loop's event
//! channel; `execute` never blocks.

use surfaces_embed::{Effect, Event};
use tokio::sync::mpsc;

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
