//! The native surfaces host: the I/O behind the guest's imports.
//!
//! - [`store`]: the guest's durable state in SQLite.
//! - [`agent`]: the agent client (one WebSocket per context, reconnecting)
//!   and the reference agent server.

pub mod agent;
pub mod store;
