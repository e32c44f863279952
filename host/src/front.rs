//! What the event loop needs of a front end: the Matrix port
//! (`matrix::port`) and the terminal (`terminal`) both implement it.

use surfaces_embed::MatrixEffect;

pub trait FrontEnd: Send {
    /// Start carrying out one Matrix effect; never blocks. Requests with
    /// an id are answered later with a `matrix-result` event.
    fn execute(&mut self, effect: MatrixEffect);

    /// Requests started and not answered yet (shutdown waits for them).
    fn pending(&self) -> usize {
        0
    }

    /// The bot is shutting down: stop taking in new messages and invites
    /// (requests still go out until the replies in flight end).
    fn stop_receiving(&mut self) {}
}
