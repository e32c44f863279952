//! The epoch ticker behind [`crate::Budget::Epoch`]: a thread that advances
//! the engine's epoch every [`EPOCH_TICK`] while a guest call runs, and is
//! parked otherwise. A ticker that ran all the time woke 200 times a second
//! for calls that take microseconds: a quarter of the bot's CPU while it
//! streamed a reply, and all of it while idle.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use wasmtime::Engine;

/// The unit of a wall-clock budget: the epoch advances this often while a
/// call runs.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The budget of `ms` milliseconds, in ticks (at least one).
pub fn ticks_for_ms(ms: u64) -> u64 {
    ms.div_ceil(EPOCH_TICK.as_millis() as u64).max(1)
}

struct Shared {
    /// Calls in progress (a swap's check may run beside the serving guest).
    running: AtomicUsize,
    stop: AtomicBool,
    thread: OnceLock<Thread>,
}

/// Owns the ticker thread; dropping it ends the thread.
pub(crate) struct Ticker {
    shared: Arc<Shared>,
}

impl Ticker {
    /// Start the thread. Without one (the system refused a thread) no call
    /// can time out, so the caller reports it.
    pub(crate) fn start(engine: Engine) -> std::io::Result<Ticker> {
        let shared = Arc::new(Shared {
            running: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            thread: OnceLock::new(),
        });
        let theirs = shared.clone();
        let handle = std::thread::Builder::new()
            .name("surfaces-epoch".into())
            .spawn(move || tick_while_running(&theirs, &engine))?;
        let _ = shared.thread.set(handle.thread().clone());
        Ok(Ticker { shared })
    }

    /// Tick until the returned guard drops: hold it across a call.
    pub(crate) fn running(&self) -> Running {
        if self.shared.running.fetch_add(1, Ordering::SeqCst) == 0 {
            wake(&self.shared);
        }
        Running {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        wake(&self.shared);
    }
}

/// A call in progress; see [`Ticker::running`].
pub(crate) struct Running {
    shared: Arc<Shared>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shared.running.fetch_sub(1, Ordering::SeqCst);
    }
}

fn wake(shared: &Shared) {
    if let Some(thread) = shared.thread.get() {
        thread.unpark();
    }
}

fn tick_while_running(shared: &Shared, engine: &Engine) {
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        // An unpark that came before this park makes it return at once,
        // so a call that starts between the load and the park is not
        // missed.
        if shared.running.load(Ordering::SeqCst) == 0 {
            std::thread::park();
            continue;
        }
        std::thread::sleep(EPOCH_TICK);
        engine.increment_epoch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_rounds_up_to_whole_ticks() {
        assert_eq!(ticks_for_ms(0), 1);
        assert_eq!(ticks_for_ms(1), 1);
        assert_eq!(ticks_for_ms(5), 1);
        assert_eq!(ticks_for_ms(6), 2);
        assert_eq!(ticks_for_ms(200), 40);
    }
}
