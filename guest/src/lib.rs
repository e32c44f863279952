//! The surfaces guest: dispatch and conversation logic.
//!
//! An event-driven state machine ([`bot::Bot`]) on the guest SDK
//! (`surfaces-guest-sdk`, in `sdk/`), which holds the bindings, the `Host`
//! trait every effect goes through, the typed store and the component's
//! exports. All durable state lives in the host's store; what the bot
//! keeps in memory is a cache it can rebuild, so a fresh instance (after a
//! trap or a swap) carries on where the last one stopped.

pub mod bot;
pub mod commands;
pub mod config;
pub mod planted;
pub mod quota;
pub mod rate;
pub mod render;
pub mod state;

pub use surfaces_guest_sdk::types;

/// What the bot may ask of its host: the SDK's trait, which the component
/// maps to its imports and a native build (tests, benchmarks) to Rust.
pub mod host {
    pub use surfaces_guest_sdk::{Host, WitHost};
}

impl surfaces_guest_sdk::Guest for bot::Bot {
    fn init(info: types::HostInfo, host: &mut dyn host::Host) -> Result<Self, String> {
        bot::Bot::new(info, host)
    }

    fn info(&self) -> types::GuestInfo {
        self.guest_info()
    }

    fn handle(&mut self, host: &mut dyn host::Host, event: types::Event) -> Result<(), String> {
        bot::Bot::handle(self, host, event)
    }
}

surfaces_guest_sdk::export_guest!(bot::Bot);
