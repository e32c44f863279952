//! The native surfaces host: the I/O behind the guest's imports.
//!
//! - [`runtime`]: the event loop that owns the guest and the database;
//!   [`channels`]: its channels and handle; [`front`]: what it needs of a
//!   front end; [`time`]: clock helpers.
//! - [`store`]: the guest's durable state in SQLite; [`media`]: files
//!   between Matrix and the agent.
//! - [`agent`]: the agent client (one WebSocket per context, reconnecting),
//!   the pool of connections, and the reference agent server.
//! - [`matrix`]: the Matrix front end (matrix-sdk); [`terminal`]: one
//!   that talks through stdin/stdout; [`access`] (from the shared core):
//!   who may talk to the bot.
//! - [`config`]: the TOML file and its environment overrides.
//! - [`metrics`]: Prometheus metrics and the health endpoint.
//! - [`watch`]: swap triggers (guest file changes, SIGHUP);
//!   [`swapcheck`]: a candidate's behaviour check before a swap;
//!   [`probation`]: when a swapped-in guest is sent back.
//! - [`guestkit`]: `surfaces guest new | build` (a project from the
//!   template, and its build).

pub use surfaces_embed::access;
pub mod agent;
pub mod backlog;
pub mod channels;
pub mod config;
pub mod front;
pub mod guestkit;
pub mod heap;
pub mod history;
pub mod kept;
pub mod matrix;
pub mod media;
pub mod metrics;
pub mod probation;
pub mod runtime;
pub mod store;
pub mod swapcheck;
pub mod terminal;
pub mod time;
pub mod watch;
