//! `surfaces-agent`: the reference agent server, for trying the bot and for
//! tests. It speaks the agent protocol over a real WebSocket.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use surfaces_host::agent::server::{self, Mode, ServerConfig};

#[derive(Parser)]
#[command(
    name = "surfaces-agent",
    version,
    about = "Reference agent server speaking the surfaces agent protocol"
)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8765")]
    listen: String,
    /// echo, script:TEXT, busy, drop (mid-reply), malformed, silent (no
    /// status), mute (status, then nothing).
    #[arg(long, default_value = "echo")]
    mode: Mode,
    /// Pieces each reply is streamed in.
    #[arg(long, default_value_t = 4)]
    chunks: usize,
    /// Pause before each piece, in ms.
    #[arg(long, default_value_t = 150)]
    chunk_delay_ms: u64,
    /// Pause before the first status frame, in ms.
    #[arg(long, default_value_t = 0)]
    status_delay_ms: u64,
    /// Require `Authorization: Bearer TOKEN` on the upgrade.
    #[arg(long, env = "AGENT_TOKEN")]
    token: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let listener = tokio::net::TcpListener::bind(&cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!("reference agent ({:?}) listening on ws://{addr}/", cli.mode);
    server::serve(
        listener,
        ServerConfig {
            mode: cli.mode,
            chunks: cli.chunks,
            chunk_delay: Duration::from_millis(cli.chunk_delay_ms),
            status_delay: Duration::from_millis(cli.status_delay_ms),
            token: cli.token,
            ..ServerConfig::default()
        },
    )
    .await
    .context("accepting connections")
}
