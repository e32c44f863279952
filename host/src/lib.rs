//! The native surfaces host: the I/O behind the guest's imports.
//!
//! - [`runtime`]: the event loop that owns the guest and the database.
//! - [`store`]: the guest's durable state in SQLite.
//! - [`agent`]: the agent client (one WebSocket per context, reconnecting),
//!   the pool of connections, and the reference agent server.
//! - [`matrix`]: what the loop needs of a Matrix front end;
//!   [`terminal`]: one that talks through stdin/stdout.
//! - [`config`]: the TOML file and its environment overrides.
//! - [`metrics`]: Prometheus metrics and the health endpoint.
//! - [`watch`]: swap triggers (guest file changes, SIGHUP).

pub mod agent;
pub mod config;
pub mod matrix;
pub mod metrics;
pub mod runtime;
pub mod store;
pub mod terminal;
pub mod watch;
