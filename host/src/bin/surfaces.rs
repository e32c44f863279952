//! `surfaces`: the bot's command line: `run` the bot, `guest check` a
//! guest component without running the bot.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::time::Duration;

use surfaces_embed::{BoxedKv, Budget, Embedding, Entropy, Guest, HostInfo, MemoryKv, Sandbox};
use surfaces_host::access::Access;
use surfaces_host::agent::client::{Backend, ClientConfig};
use surfaces_host::agent::pool::AgentPool;
use surfaces_host::agent::server::ServerConfig;
use surfaces_host::agent::tls;
use surfaces_host::channels::{self, Control};
use surfaces_host::config::{AgentBackend, Config, LogConfig, LogFormat};
use surfaces_host::front::FrontEnd;
use surfaces_host::guestkit;
use surfaces_host::matrix::media::SdkFetch;
use surfaces_host::matrix::{self, FrontEndConfig, session};
use surfaces_host::media::{Files, Kept};
use surfaces_host::metrics::{self, Metrics};
use surfaces_host::runtime::{GuestSource, Runtime, RuntimeConfig};
use surfaces_host::store::{HostMeta, SqliteStore};
use surfaces_host::terminal::{self, Terminal};
use surfaces_host::watch;
use surfaces_sim::Scenario;
use surfaces_sim::trial::{Trial, corpus};

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
    /// Run the bot on a Matrix homeserver (matrix.homeserver and
    /// matrix.user, with matrix.password for the first login). Everything
    /// else has embedded defaults: the built-in guest, the in-process echo
    /// agent, SQLite in ./data. Environment overrides: MATRIX_HOMESERVER,
    /// MATRIX_USER, MATRIX_PASSWORD, MATRIX_ACCESS_TOKEN, MATRIX_RECOVERY_KEY,
    /// MATRIX_PLATFORM_BACKEND=mock|real, AGENT_WS_URL, AGENT_TOKEN,
    /// SURFACES_DATA_DIR, SURFACES_GUEST, SURFACES_GUEST_CACHE, SURFACES_LOG,
    /// SURFACES_LOG_FORMAT=text|json, SURFACES_METRICS_LISTEN.
    Run {
        /// The TOML config file (see surfaces.example.toml).
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Talk to the bot in this terminal instead of Matrix: each line is
        /// a direct message; end of input stops the bot.
        #[arg(long)]
        terminal: bool,
    },
    /// Work with guest components.
    Guest {
        #[command(subcommand)]
        command: GuestCommand,
    },
    /// The bot's encryption identity beyond its store: secret storage and
    /// server-side key backup, opened by a recovery key.
    Recovery {
        #[command(subcommand)]
        command: RecoveryCommand,
    },
}

#[derive(Subcommand)]
enum RecoveryCommand {
    /// Set up recovery (or replace its key) and print the new recovery key,
    /// once. Run it with the bot stopped, with the bot's config. Keep the
    /// key outside the data directory (matrix.recovery_key or
    /// MATRIX_RECOVERY_KEY): with it, a bot whose store was lost keeps its
    /// identity and reads what was sent to its earlier device.
    New {
        /// The TOML config file (see surfaces.example.toml).
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
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
    /// Write a new guest project into DIR (new or empty): an echo bot with
    /// one command and its own tests, on the guest SDK, and a README on
    /// building, testing and swapping it into a running bot.
    New {
        dir: PathBuf,
        /// The guest SDK (guest/sdk in a surfaces checkout); default: the
        /// checkout this binary was built from.
        #[arg(long, value_name = "PATH")]
        sdk: Option<PathBuf>,
    },
    /// Build the guest project in DIR for wasm32-wasip2 (release) and
    /// check that the component starts; prints its path.
    Build {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Run a candidate guest in the simulator: the scenario corpus and a
    /// swarm of worlds with faults, every rule checked; prints each rule's
    /// result and the fuel and memory per event, and fails on any broken
    /// rule (each failure with the command that replays it).
    Test {
        /// The guest component.
        file: PathBuf,
        /// Scenario files (a directory, searched recursively) instead of
        /// the corpus built into this binary.
        #[arg(long, value_name = "DIR")]
        scenarios: Option<PathBuf>,
        /// Swarm seeds (each a world and a fault mix), from 1.
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        /// Seeds per scenario, from 1.
        #[arg(long, default_value_t = 3)]
        scenario_seeds: u64,
        /// Worker threads (default: one per core).
        #[arg(long)]
        jobs: Option<usize>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run { config, terminal } => run_bot(config.as_deref(), terminal)?,
        Command::Recovery {
            command: RecoveryCommand::New { config },
        } => new_recovery_key(config.as_deref())?,
        Command::Guest { command } => match command {
            GuestCommand::Check { file, settings } => check(&file, &settings)?,
            GuestCommand::New { dir, sdk } => new_guest(&dir, sdk.as_deref())?,
            GuestCommand::Build { dir } => {
                let wasm = guestkit::build_project(&dir)?;
                check(&wasm, &[])?;
                println!("{}", wasm.display());
            }
            GuestCommand::Test {
                file,
                scenarios,
                seeds,
                scenario_seeds,
                jobs,
            } => return test_guest(&file, scenarios.as_deref(), seeds, scenario_seeds, jobs),
        },
    }
    Ok(ExitCode::SUCCESS)
}

fn new_guest(dir: &Path, sdk: Option<&Path>) -> Result<()> {
    let project = guestkit::new_project(dir, sdk)?;
    let d = project.dir.display();
    println!("wrote the guest {} in {d}", project.name);
    println!("  build it:  surfaces guest build {d}");
    println!("  test it:   (cd {d} && cargo test)");
    println!(
        "             surfaces guest test {}",
        project.dir.join(&project.component).display()
    );
    println!("  swap it in: set guest.path (or SURFACES_GUEST) to that file; see {d}/README.md");
    Ok(())
}

fn test_guest(
    file: &Path,
    scenarios: Option<&Path>,
    seeds: u64,
    scenario_seeds: u64,
    jobs: Option<usize>,
) -> Result<ExitCode> {
    let wasm = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let component = surfaces_sim::embedding()?
        .compile(&wasm)
        .with_context(|| format!("{} is not a guest this host can run", file.display()))?;
    let scenarios = match scenarios {
        Some(dir) => scenario_files(dir)?,
        None => corpus::scenarios().map_err(anyhow::Error::msg)?,
    };
    let jobs = jobs
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1);
    let started = std::time::Instant::now();
    let report = Trial {
        scenarios: &scenarios,
        scenario_seeds,
        swarm_seeds: seeds,
        jobs,
        guest_path: file.display().to_string(),
    }
    .run(&component);
    println!("{report}");
    println!(
        "({} scenarios x {scenario_seeds} seeds and {seeds} swarm seeds in {:.1} s)",
        scenarios.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Every scenario file under `dir` (or `dir` itself), parsed, in path order.
fn scenario_files(dir: &Path) -> Result<Vec<(String, Scenario)>> {
    let mut paths = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        if p.is_dir() {
            for entry in
                std::fs::read_dir(&p).with_context(|| format!("cannot read {}", p.display()))?
            {
                todo.push(entry?.path());
            }
        } else if p.extension().is_some_and(|e| e == "toml") {
            paths.push(p);
        }
    }
    paths.sort();
    if paths.is_empty() {
        bail!("no scenario files (*.toml) in {}", dir.display());
    }
    paths
        .into_iter()
        .map(|p| Ok((p.display().to_string(), Scenario::load(&p)?)))
        .collect()
}

fn check(file: &Path, settings: &[String]) -> Result<()> {
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
        guest_hash: String::new(),
        max_attachment_bytes: surfaces_embed::MAX_ATTACHMENT_BYTES,
    };
    let mut kv: BoxedKv = Box::<MemoryKv>::default();
    let (guest, _) = Guest::start(&component, info, &mut kv, 0)
        .with_context(|| format!("{} does not start", file.display()))?;
    println!(
        "ok: {} {} ({} bytes) fits surfaces:bot@{} and starts",
        guest.info().name,
        guest.info().version,
        wasm.len(),
        component.contract().version()
    );
    Ok(())
}

fn run_bot(config_path: Option<&Path>, terminal: bool) -> Result<()> {
    surfaces_host::heap::one_arena();
    let config = Config::load(config_path)?;
    if !terminal && config.matrix.homeserver.is_none() {
        bail!(
            "no homeserver to connect to: set matrix.homeserver and matrix.user in the config \
             (or MATRIX_HOMESERVER, MATRIX_USER and MATRIX_PASSWORD); scripts/quickstart runs a \
             local one; `surfaces run --terminal` talks to the bot here instead"
        );
    }
    init_logs(&config.log)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    let db = config.data_dir.join("surfaces.db");
    let store = SqliteStore::open(&db).with_context(|| format!("cannot open {}", db.display()))?;
    let instance = store
        .instance_id()
        .with_context(|| format!("cannot read {}", db.display()))?;
    let kv: BoxedKv = Box::new(store);
    // One worker: the event loop has this thread to itself (guest calls
    // run here), the worker carries the sync and the connections. A
    // second worker mostly woke to steal the first one's tasks: about
    // 0.01 s of CPU per reply (scripts/bench-matrix).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let front = if terminal {
        Front::Terminal
    } else {
        Front::Matrix { instance, db }
    };
    let result = runtime.block_on(serve(config, kv, front));
    // The stdin reader sits in a blocking read nobody can cancel: do not
    // wait for it (a signal stopped the bot while the terminal was open).
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// `surfaces recovery new`.
fn new_recovery_key(config_path: Option<&Path>) -> Result<()> {
    let config = Config::load(config_path)?;
    if config.matrix.homeserver.is_none() {
        bail!(
            "no homeserver: set matrix.homeserver and matrix.user (or MATRIX_HOMESERVER, MATRIX_USER)"
        );
    }
    init_logs(&LogConfig {
        filter: "warn".into(),
        ..config.log.clone()
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let dir = config.data_dir.join("matrix");
    let key = runtime.block_on(async {
        let (client, _lock) = session::connect(&config.matrix, &dir).await?;
        anyhow::Ok(matrix::recovery::new_key(&client).await?)
    })?;
    let user = config.matrix.user.as_deref().unwrap_or("the bot");
    println!(
        "A new recovery key for {user} (shown once; any earlier key opens nothing now):\n\n    \
         {key}\n\nKeep it outside {} (a password manager, your secret store) and give it to \
         the bot as matrix.recovery_key or MATRIX_RECOVERY_KEY. If the bot's store is lost, it \
         logs in again, takes back its identity with this key (whoever verified it still sees \
         it verified) and restores its room keys from the server-side backup.",
        config.data_dir.display()
    );
    Ok(())
}

enum Front {
    Terminal,
    /// `instance`: the database's id, the prefix of transaction ids; `db`
    /// its path (the sync position is kept there too).
    Matrix {
        instance: String,
        db: PathBuf,
    },
}

async fn serve(config: Config, kv: BoxedKv, front: Front) -> Result<()> {
    let metrics = Metrics::new();
    if let Some(addr) = config.metrics.listen {
        let listener = metrics::bind(addr).await.map_err(anyhow::Error::msg)?;
        let addr = listener.local_addr().unwrap_or(addr);
        tracing::info!("metrics on http://{addr}/metrics, health on http://{addr}/healthz");
        tokio::spawn(metrics::serve(listener, metrics.clone()));
    }
    let channels = channels::channels();
    let handle = channels.handle.clone();
    let backend = match config.agent.backend {
        AgentBackend::Mock => Backend::Echo(ServerConfig {
            chunk_delay: Duration::from_millis(config.agent.mock_chunk_delay_ms),
            ..ServerConfig::default()
        }),
        AgentBackend::Real => Backend::Url {
            url: config.agent.url.clone().unwrap_or_default(),
            token: config.agent.token.clone(),
        },
    };
    let secure = config.agent.backend == AgentBackend::Real
        && config
            .agent
            .url
            .as_deref()
            .is_some_and(|u| u.starts_with("wss://"));
    let tls = if secure {
        Some(tls::client_config(config.agent.ca_file.as_deref()).map_err(anyhow::Error::msg)?)
    } else {
        None
    };
    let mut bot_user_id = config.bot.user_id.clone();
    // Files: the agent's kept in the database (in memory for the
    // terminal); users' fetched through the Matrix client.
    let mut files = Files {
        fetch: None,
        kept: Arc::new(
            match &front {
                Front::Terminal => Kept::in_memory(),
                Front::Matrix { db, .. } => Kept::open(db),
            }
            .context("cannot open the store of the agent's files")?,
        ),
        max_bytes: config.agent.max_attachment_bytes,
    };
    // Held to the end: the session's lock, and the client, to let room
    // keys reach the backup at the stop.
    let mut dir_lock = None;
    let mut matrix_client = None;
    let port: Box<dyn FrontEnd> = match &front {
        Front::Terminal => Box::new(Terminal::new(handle.events.clone(), std::io::stdout())),
        Front::Matrix { instance, db } => {
            let position =
                HostMeta::open(db).with_context(|| format!("cannot open {}", db.display()))?;
            let dir = config.data_dir.join("matrix");
            let (client, lock) = session::connect(&config.matrix, &dir).await?;
            dir_lock = Some(lock);
            matrix::recovery::on_start(&client, config.matrix.recovery_key.as_ref()).await?;
            matrix::verification::register(&client, config.matrix.admins.clone());
            matrix_client = Some(client.clone());
            let user = client
                .user_id()
                .map(|u| u.to_owned())
                .context("the Matrix session has no user id")?;
            bot_user_id = user.to_string();
            set_display_name(&client, &config.bot.display_name).await;
            files.fetch = Some(Arc::new(SdkFetch {
                client: client.clone(),
            }));
            let access = Access::new(
                &config.matrix.allow,
                &config.matrix.admins,
                user.server_name().as_str(),
            );
            Box::new(matrix::start(
                client,
                FrontEndConfig {
                    access,
                    bot_display_name: config.bot.display_name.clone(),
                    txn_prefix: format!("surfaces.{instance}"),
                    sync_timeout: config.matrix.sync_timeout,
                    sync_stale_after: config.matrix.sync_stale_after,
                    timeline_limit: config.matrix.timeline_limit,
                    metrics: metrics.clone(),
                    position,
                    kept: files.kept.clone(),
                },
                &handle,
            ))
        }
    };
    let client = ClientConfig {
        tls,
        connect_timeout: config.agent.connect_timeout,
        idle_timeout: config.agent.idle_timeout,
        ping_interval: config.agent.ping_interval,
        reply_timeout: config.agent.reply_timeout,
        max_reply_bytes: config.agent.max_reply_bytes,
        files: Some(files),
        ..ClientConfig::new(backend)
    };
    let agents = AgentPool::new(
        client,
        config.agent.max_connections,
        config.agent.idle_close,
        handle.events.clone(),
        handle.inbound.clone(),
    );
    let source = match &config.guest.path {
        Some(path) => GuestSource::File(path.clone()),
        None => GuestSource::Builtin(surfaces_artifacts::GUEST_WASM),
    };
    let runtime_config = RuntimeConfig {
        source: source.clone(),
        cache_dir: config
            .guest
            .cache_dir
            .clone()
            .unwrap_or_else(|| config.data_dir.join("guest-cache")),
        sandbox: Sandbox {
            budget: Budget::epoch_ms(config.guest.call_budget_ms),
            memory_bytes: config.guest.memory_mib << 20,
            entropy: Entropy::Os,
        },
        host_info: HostInfo {
            bot_user_id: bot_user_id.clone(),
            bot_display_name: config.bot.display_name.clone(),
            host_version: format!("surfaces {}", env!("CARGO_PKG_VERSION")),
            settings: config.guest_settings(),
            max_event_bytes: match front {
                Front::Terminal => 65_536,
                Front::Matrix { .. } => matrix::MAX_CONTENT_BYTES,
            },
            resumed: false,
            guest_hash: String::new(),
            max_attachment_bytes: config.agent.max_attachment_bytes,
        },
        shutdown_grace: config.bot.shutdown_grace,
        swap_check: config.guest.swap_check(),
        kept_dir: config.data_dir.join("guests"),
    };
    let runtime = Runtime::start(runtime_config, channels, kv, agents, port, metrics)?;
    match front {
        Front::Terminal => {
            tracing::info!(guest = %runtime.guest_version(), agent = ?config.agent.backend, "surfaces is running; type a message (end of input stops the bot)")
        }
        Front::Matrix { .. } => {
            tracing::info!(guest = %runtime.guest_version(), agent = ?config.agent.backend, user = %bot_user_id, "surfaces is running on Matrix")
        }
    }
    watch::signals(handle.control.clone()).context("cannot install signal handlers")?;
    let _watcher = match (&source, config.guest.watch) {
        (GuestSource::File(path), true) => Some(
            watch::guest_file(path, handle.control.clone())
                .with_context(|| format!("cannot watch {}", path.display()))?,
        ),
        _ => None,
    };
    if let Front::Terminal = front {
        let control = handle.control.clone();
        let events = handle.events.clone();
        tokio::spawn(async move {
            terminal::read_stdin(events).await;
            let _ = control.send(Control::Shutdown);
        });
    }
    drop(handle);
    let result = runtime.run().await.map_err(anyhow::Error::msg);
    if let Some(client) = matrix_client {
        matrix::recovery::settle(&client, Duration::from_secs(10)).await;
    }
    drop(dir_lock);
    result
}

/// Show the configured name on the bot's profile; best effort.
async fn set_display_name(client: &matrix_sdk::Client, name: &str) {
    if name.is_empty() {
        return;
    }
    let account = client.account();
    match account.get_display_name().await {
        Ok(current) if current.as_deref() == Some(name) => {}
        _ => {
            if let Err(e) = account.set_display_name(Some(name)).await {
                tracing::warn!("cannot set the bot's display name: {e}");
            }
        }
    }
}

fn init_logs(log: &LogConfig) -> Result<()> {
    use tracing_subscriber::EnvFilter;
    // tungstenite traces the upgrade request, bearer token included: its
    // logs are capped whatever the filter asks for.
    // matrix-sdk reports routine things loudly (a 404 for absent account
    // data as an error, a missing key backup on every sync): unless the
    // operator asks for it, keep it to warnings and our own reports.
    let quiet_sdk = if log.filter.contains("matrix_sdk") {
        ""
    } else {
        ",matrix_sdk=warn,matrix_sdk_base=warn,matrix_sdk_crypto=warn,\
         matrix_sdk::http_client=off,matrix_sdk_crypto::backups=error,\
         matrix_sdk_crypto::identities::manager=error"
    };
    let filter = EnvFilter::try_new(format!(
        "{}{quiet_sdk},tungstenite=info,tokio_tungstenite=info",
        log.filter
    ))
    .with_context(|| format!("bad log filter {:?}", log.filter))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}
