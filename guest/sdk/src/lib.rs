//! The surfaces guest SDK: what a guest is built on, so its author writes
//! the bot's logic and nothing else.
//!
//! - [`bindings`] and [`types`]: the contract (`wit/surfaces.wit`,
//!   `surfaces:bot@0.1.0`) as Rust.
//! - [`Host`]: every import as one trait, so the same logic runs in the
//!   component ([`WitHost`]) and natively in tests ([`testing::MemoryHost`]).
//! - [`store`]: records as JSON under keys typed by the record they hold.
//! - [`outbox`]: sends and joins kept until the homeserver confirms them.
//! - [`schema`]: the format of the records, versioned in the store, and
//!   migrations forward in `init`.
//! - [`timers`]: timers whose purpose is a record, so they survive a swap,
//!   a trap or a host restart.
//! - [`address`]: whether a message is for the bot.
//! - [`Guest`] and [`export_guest!`]: the component's exports, the
//!   instance's state and a panic hook that tells the host why it trapped.
//!
//! A guest is an event-driven state machine: the host calls
//! [`Guest::handle`] with one event at a time; imports only record what to
//! do and return at once; outcomes come back later as events carrying the
//! id the guest chose. Whatever the guest keeps in memory is a cache: the
//! instance may be replaced at any event (a swap, a trap, a restart) and a
//! new one starts from the store.

// The generated code names this crate by its name, from inside it too.
extern crate self as surfaces_guest_sdk;

mod host;
pub mod outbox;
pub mod schema;
pub mod store;
pub mod testing;
pub mod timers;

pub use host::{Host, WitHost};
/// Whether a message is for the bot, and as what (a command, or text with
/// the address dropped), as the hosts and the simulator decide it.
pub use surfaces_contract::{Addressed, address};
pub use wit_bindgen;

/// Bindings generated from the contract.
#[allow(clippy::too_many_arguments)] // generated import shims
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "bot",
        // Records compare by value (guests test their plans that way).
        additional_derives: [PartialEq, Eq],
        pub_export_macro: true,
        // Guests need no wit-bindgen of their own: generated code and the
        // export macro (expanded in the guest crate) reach it through here.
        runtime_path: "surfaces_guest_sdk::wit_bindgen::rt",
    });
}

pub use bindings::surfaces::bot::types;

/// The contract this SDK builds guests for.
pub const CONTRACT: &str = "surfaces:bot@0.3.0";

/// A guest's logic. One value lives per instance; [`export_guest!`] makes
/// the component's exports from it.
pub trait Guest: Sized + 'static {
    /// Start an instance: read the settings, check what must hold, pick up
    /// from the store. An error refuses the start (a swap to this guest is
    /// then refused and the old guest kept).
    fn init(info: types::HostInfo, host: &mut dyn Host) -> Result<Self, String>;

    /// The name and version the host reports (`!status`, logs).
    fn info(&self) -> types::GuestInfo;

    /// One event. An error (or a panic) drops the call's store writes and
    /// effects; the host logs it and may deliver the event once more.
    fn handle(&mut self, host: &mut dyn Host, event: types::Event) -> Result<(), String>;
}

/// Log a panic's message through the host before the call traps: a
/// component's stderr goes nowhere.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|p| {
        bindings::surfaces::bot::host::log(types::LogLevel::Error, &format!("guest panic: {p}"));
    }));
}

/// Make the component's exports (`init`, `handle`) from a [`Guest`] type.
/// Invoke it once, in the guest crate itself (a `cdylib`):
///
/// ```ignore
/// surfaces_guest_sdk::export_guest!(MyBot);
/// ```
#[macro_export]
macro_rules! export_guest {
    ($guest:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use ::std::cell::RefCell;

            ::std::thread_local! {
                static INSTANCE: RefCell<Option<$guest>> = const { RefCell::new(None) };
            }

            struct Component;

            impl $crate::bindings::Guest for Component {
                fn init(
                    info: $crate::types::HostInfo,
                ) -> ::std::result::Result<$crate::types::GuestInfo, ::std::string::String>
                {
                    $crate::install_panic_hook();
                    let guest = <$guest as $crate::Guest>::init(info, &mut $crate::WitHost)?;
                    let out = $crate::Guest::info(&guest);
                    INSTANCE.with(|g| *g.borrow_mut() = Some(guest));
                    Ok(out)
                }

                fn handle(
                    event: $crate::types::Event,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    INSTANCE.with(|g| match g.borrow_mut().as_mut() {
                        Some(guest) => $crate::Guest::handle(guest, &mut $crate::WitHost, event),
                        None => Err("handle called before init".to_string()),
                    })
                }
            }

    $crate::bindings::export!(Component with_types_in $crate::bindings);
        };
    };
}
