//! The agent side of the host: a client per agent context, the pool that
//! keeps them, and the reference server (also the in-process echo backend).

pub mod client;
pub mod pool;
pub mod server;
pub mod tls;
