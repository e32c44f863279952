//! The agent side of the host: a client per agent context, the pool that
//! keeps them, and the reference server (also the in-process echo backend).

pub mod client;
pub mod pool;
pub mod server;
pub mod tls;

/// Both ends' WebSocket limits: frames as large as the protocol allows
/// (files travel inline), one message to a frame.
pub(crate) fn ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    let max = Some(surfaces_protocol::MAX_FRAME_BYTES);
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(max)
        .max_frame_size(max)
}
