//! End-to-end tests live in `tests/`; this library holds their harness.
//!
//! - [`synapse`]: a real Synapse homeserver from PyPI, on loopback.

pub mod synapse;
