//! The event loop's channels and the handle everything else holds: guest
//! events from the busy producers outside the loop (the agent connections,
//! the Matrix sync task) on a bounded channel, so they wait when the loop
//! falls behind instead of piling up in memory; other guest events (the
//! results of the loop's own requests: one per effect) and control
//! messages (swaps, timers, checkpoints, shutdown) on unbounded ones.

use surfaces_embed::Event;
use tokio::sync::{mpsc, oneshot};

/// Where the results of the loop's own requests go (never waits: the loop
/// sends some itself).
pub type EventSender = mpsc::UnboundedSender<Event>;

/// Where the agent connections and the sync task send guest events: a
/// send waits while the loop is [`INBOUND_CAPACITY`] events behind.
pub type InboundSender = mpsc::Sender<Event>;

/// Events the loop may be behind on the inbound channel.
pub const INBOUND_CAPACITY: usize = 1024;

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
    Compiled(Result<crate::runtime::Compiled, String>),
    /// Answer once every event sent before this message has been handled
    /// (and its store writes committed): a front end's checkpoint.
    Flush(oneshot::Sender<()>),
}

/// Senders to the loop, for front ends, signals, watchers and tests.
#[derive(Clone, Debug)]
pub struct Handle {
    pub events: EventSender,
    pub inbound: InboundSender,
    pub control: mpsc::UnboundedSender<Control>,
}

/// The loop's receiving ends; make them first, so front ends can be built
/// with the [`Handle`].
pub struct Channels {
    pub handle: Handle,
    pub(crate) events: mpsc::UnboundedReceiver<Event>,
    pub(crate) inbound: mpsc::Receiver<Event>,
    pub(crate) control: mpsc::UnboundedReceiver<Control>,
}

pub fn channels() -> Channels {
    let (events_tx, events) = mpsc::unbounded_channel();
    let (inbound_tx, inbound) = mpsc::channel(INBOUND_CAPACITY);
    let (control_tx, control) = mpsc::unbounded_channel();
    Channels {
        handle: Handle {
            events: events_tx,
            inbound: inbound_tx,
            control: control_tx,
        },
        events,
        inbound,
        control,
    }
}
