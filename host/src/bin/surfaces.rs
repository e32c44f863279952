//! `surfaces`: the bot's command line. So far: `guest check`, which
//! validates a guest component without running the bot.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use surfaces_embed::{BoxedKv, Budget, Embedding, Guest, HostInfo, MemoryKv, Sandbox};

#[derive(Parser)]
#[command(
    name = "surfaces",
    version,
    about = "A Matrix bot that streams an AI agent's replies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with guest components.
    Guest {
        #[command(subcommand)]
        command: GuestCommand,
    },
}

#[derive(Subcommand)]
enum GuestCommand {
    /// Check that a .wasm file is a guest this host can run: it compiles,
    /// fits the contract (imports, `init`, `handle`) and starts with the
    /// given settings. Nothing is written anywhere.
    Check {
        /// The guest component.
        file: PathBuf,
        /// A guest setting, as KEY=VALUE (repeatable).
        #[arg(long = "setting", value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Guest {
            command: GuestCommand::Check { file, settings },
        } => check(&file, &settings),
    }
}

fn check(file: &PathBuf, settings: &[String]) -> Result<()> {
    let wasm = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut pairs = Vec::new();
    for s in settings {
        let Some((k, v)) = s.split_once('=') else {
            bail!("--setting {s:?} is not KEY=VALUE");
        };
        pairs.push((k.trim().to_string(), v.to_string()));
    }
    let embedding = Embedding::new(Sandbox {
        // Deterministic budget: a check must not depend on a ticker.
        budget: Budget::Fuel {
            units: 2_000_000_000,
        },
        ..Sandbox::default()
    })?;
    let component = embedding
        .compile(&wasm)
        .with_context(|| format!("{} is not a guest this host can run", file.display()))?;
    let info = HostInfo {
        bot_user_id: "@surfaces-check:localhost".into(),
        bot_display_name: "surfaces".into(),
        host_version: format!("surfaces {}", env!("CARGO_PKG_VERSION")),
        settings: pairs,
        max_event_bytes: 65_536,
        resumed: false,
    };
    let mut kv: BoxedKv = Box::<MemoryKv>::default();
    let (guest, _) = Guest::start(&component, info, &mut kv, 0)
        .with_context(|| format!("{} does not start", file.display()))?;
    println!(
        "ok: {} {} ({} bytes) fits surfaces:bot@0.1.0 and starts",
        guest.info().name,
        guest.info().version,
        wasm.len()
    );
    Ok(())
}
