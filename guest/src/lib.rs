//! The surfaces guest: dispatch and conversation logic.
//!
//! An event-driven state machine ([`bot::Bot`]). It never blocks: every
//! effect goes through the [`host::Host`] trait, which the wasm build maps to
//! the component's imports and a native build (benchmarks) to plain Rust.
//! All durable state lives in the host's store; what the bot keeps in memory
//! is a cache it can rebuild, so a fresh instance (after a trap or a swap)
//! carries on where the last one stopped.

pub mod bot;
pub mod commands;
pub mod config;
pub mod host;
pub mod planted;
pub mod render;
pub mod state;

/// Bindings generated from `wit/surfaces.wit`.
#[allow(clippy::too_many_arguments)] // generated import shims
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "bot",
        // Records compare by value (the pump's plans are tested that way).
        additional_derives: [PartialEq, Eq],
    });
}

pub use bindings::surfaces::bot::types;

#[cfg(target_arch = "wasm32")]
mod component {
    use std::cell::RefCell;

    use crate::bot::Bot;
    use crate::host::WitHost;
    use crate::types::{Event, GuestInfo, HostInfo};

    thread_local! {
        static BOT: RefCell<Option<Bot>> = const { RefCell::new(None) };
    }

    struct Component;

    impl crate::bindings::Guest for Component {
        fn init(info: HostInfo) -> Result<GuestInfo, String> {
            // stderr goes nowhere: a panic's message (it traps the call)
            // reaches the host as a log line of the failed call instead.
            std::panic::set_hook(Box::new(|p| {
                crate::bindings::surfaces::bot::host::log(
                    crate::types::LogLevel::Error,
                    &format!("guest panic: {p}"),
                );
            }));
            let bot = Bot::new(info, &mut WitHost)?;
            let out = bot.guest_info();
            BOT.with(|b| *b.borrow_mut() = Some(bot));
            Ok(out)
        }

        fn handle(event: Event) -> Result<(), String> {
            BOT.with(|b| match b.borrow_mut().as_mut() {
                Some(bot) => bot.handle(&mut WitHost, event),
                None => Err("handle called before init".to_string()),
            })
        }
    }

    crate::bindings::export!(Component with_types_in crate::bindings);
}
