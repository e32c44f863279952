//! The event loop's two channels and the handle everything else holds:
//! guest events (from the front ends and the agent connections) and
//! control messages (swaps, timers, checkpoints, shutdown).

use surfaces_embed::{Event, GuestComponent};
use tokio::sync::{mpsc, oneshot};

/// Where front ends and agent connections send guest events.
pub type EventSender = mpsc::UnboundedSender<Event>;

/// Messages to the loop that are not guest events.
#[derive(Debug)]
pub enum Control {
    /// Swap in the guest file again; `request` is the guest's, if it asked.
    Reload {
        request: Option<u64>,
    },
    /// Shut down gracefully.
    Shutdown,
    /// Something the bot cannot serve without is gone for good (a task
    /// that kept dying, a session logged out): shut down gracefully, and
    /// end with this as the error (a non-zero exit).
    Fail(String),
    Timer {
        id: u64,
        token: u64,
    },
    Compiled(Result<GuestComponent, String>),
    /// Answer once every event sent before this message has been handled
    /// (and its store writes committed): a front end's checkpoint.
    Flush(oneshot::Sender<()>),
}

/// Senders to the loop, for front ends, signals, watchers and tests.
#[derive(Clone, Debug)]
pub struct Handle {
    pub events: EventSender,
    pub control: mpsc::UnboundedSender<Control>,
}

/// The loop's receiving ends; make them first, so front ends can be built
/// with the [`Handle`].
pub struct Channels {
    pub handle: Handle,
    pub(crate) events: mpsc::UnboundedReceiver<Event>,
    pub(crate) control: mpsc::UnboundedReceiver<Control>,
}

pub fn channels() -> Channels {
    let (events_tx, events) = mpsc::unbounded_channel();
    let (control_tx, control) = mpsc::unbounded_channel();
    Channels {
        handle: Handle {
            events: events_tx,
            control: control_tx,
        },
        events,
        control,
    }
}
