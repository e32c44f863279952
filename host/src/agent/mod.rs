//! The agent side of the host: a client per agent context, and the
//! reference server (also the in-process echo backend).

pub mod client;
pub mod server;
