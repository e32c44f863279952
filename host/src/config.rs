//! The operator's configuration: one TOML file, then environment overrides.
//!
//! Every field has a default, so an empty file (or none) runs the bot on the
//! embedded defaults: the built-in guest, the in-process echo agent, SQLite
//! in `./data`. The prototype's variables keep working:
//! `MATRIX_PLATFORM_BACKEND=mock|real` and `AGENT_WS_URL`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {name}={value:?}: {message}")]
    Env {
        name: &'static str,
        value: String,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// A value that must never reach a log line.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_string())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the database, the compiled-guest cache and (later) the Matrix
    /// session live.
    pub data_dir: PathBuf,
    pub bot: BotConfig,
    pub guest: GuestConfig,
    pub agent: AgentConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub matrix: MatrixConfig,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BotConfig {
    /// The bot's user id with `--terminal`; on Matrix the login decides.
    pub user_id: String,
    pub display_name: String,
    /// On shutdown, how long replies in flight may take to finish before
    /// they are cut and marked incomplete.
    #[serde(with = "secs")]
    pub shutdown_grace: Duration,
}

impl Default for BotConfig {
    fn default() -> Self {
        BotConfig {
            user_id: "@surfaces:localhost".into(),
            display_name: "surfaces".into(),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GuestConfig {
    /// The guest component; unset means the one built into this binary.
    /// A change of this file swaps the guest (when `watch` is on).
    pub path: Option<PathBuf>,
    pub watch: bool,
    /// Where compiled guests are cached; unset: `guest-cache` in the data
    /// directory.
    pub cache_dir: Option<PathBuf>,
    /// Time budget of one guest call, in milliseconds.
    pub call_budget_ms: u64,
    /// Cap on the guest's memory, in MiB.
    pub memory_mib: usize,
    /// Settings handed to the guest's `init` (see the guest's config).
    pub settings: BTreeMap<String, toml::Value>,
    /// What a new guest must pass before it is swapped in.
    pub swap_check: SwapCheckKind,
    /// Swarm worlds a behaviour check plays (besides the scenario corpus).
    pub swap_check_seeds: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SwapCheckKind {
    /// It compiles, fits the contract and starts.
    Contract,
    /// That, and it reads the live store and keeps every simulator rule.
    #[default]
    Behaviour,
}

impl Default for GuestConfig {
    fn default() -> Self {
        GuestConfig {
            path: None,
            watch: true,
            cache_dir: None,
            call_budget_ms: 200,
            memory_mib: 64,
            settings: BTreeMap::new(),
            swap_check: SwapCheckKind::Behaviour,
            swap_check_seeds: 20,
        }
    }
}

impl GuestConfig {
    /// How the runtime checks a swap.
    pub fn swap_check(&self) -> crate::swapcheck::SwapCheck {
        match self.swap_check {
            SwapCheckKind::Contract => crate::swapcheck::SwapCheck::Contract,
            SwapCheckKind::Behaviour => crate::swapcheck::SwapCheck::Behaviour {
                seeds: self.swap_check_seeds,
            },
        }
    }

    /// The settings as the guest receives them: strings, lists joined by
    /// commas.
    pub fn settings_pairs(&self) -> Vec<(String, String)> {
        self.settings
            .iter()
            .map(|(k, v)| (k.clone(), setting_string(v)))
            .collect()
    }
}

fn setting_string(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(items) => items
            .iter()
            .map(setting_string)
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AgentBackend {
    /// The in-process echo agent (streams the echo in chunks).
    #[default]
    Mock,
    /// The agent service at `agent.url`.
    Real,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    pub backend: AgentBackend,
    /// `ws://` or `wss://`, used exactly as given.
    pub url: Option<String>,
    /// Sent as `Authorization: Bearer ...`.
    pub token: Option<Secret>,
    /// Extra CA certificates (PEM) to trust for `wss://`.
    pub ca_file: Option<PathBuf>,
    /// Most agent connections open at once (room/thread scopes).
    pub max_connections: usize,
    /// A per-room/thread connection idle this long is closed.
    #[serde(with = "secs")]
    pub idle_close: Duration,
    #[serde(with = "secs")]
    pub connect_timeout: Duration,
    #[serde(with = "secs")]
    pub idle_timeout: Duration,
    #[serde(with = "secs")]
    pub ping_interval: Duration,
    /// A reply the agent stops sending for this long fails and is cancelled.
    #[serde(with = "secs")]
    pub reply_timeout: Duration,
    /// A reply longer than this (bytes) is cut: the agent is asked to
    /// cancel it, and it ends with a note.
    pub max_reply_bytes: usize,
    /// The largest file passed to the agent, or taken from it (bytes); a
    /// user's larger file is refused in words, the agent's breaks its
    /// reply.
    pub max_attachment_bytes: u64,
    /// Pause between echo chunks of the mock backend, in milliseconds.
    pub mock_chunk_delay_ms: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            backend: AgentBackend::Mock,
            url: None,
            token: None,
            ca_file: None,
            max_connections: 64,
            idle_close: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            ping_interval: Duration::from_secs(20),
            reply_timeout: Duration::from_secs(120),
            max_reply_bytes: surfaces_embed::agent::MAX_REPLY_BYTES,
            max_attachment_bytes: surfaces_embed::MAX_ATTACHMENT_BYTES,
            mock_chunk_delay_ms: 150,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `surfaces_host=debug,info`.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` (Prometheus) and `/healthz` here; unset: off.
    pub listen: Option<SocketAddr>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatrixConfig {
    /// The homeserver's URL, e.g. `https://matrix.example.org`.
    pub homeserver: Option<String>,
    /// The bot's account, e.g. `@surfaces:example.org` (or its localpart).
    pub user: Option<String>,
    /// Log in with this password (the first start only: the session is
    /// kept in the data directory and restored afterwards) ...
    pub password: Option<Secret>,
    /// ... or use this access token (with its device) instead.
    pub access_token: Option<Secret>,
    /// The name of the bot's device, as other users' clients show it.
    pub device_name: String,
    /// Encrypts the matrix-sdk store (keys, room state) at rest.
    pub store_passphrase: Option<Secret>,
    /// The recovery key `surfaces recovery new` printed: with it, a bot
    /// whose store was lost signs its new device with its own identity and
    /// restores its room keys from the server-side backup. Keep it outside
    /// the data directory (here, or `MATRIX_RECOVERY_KEY`).
    pub recovery_key: Option<Secret>,
    /// Who may talk to the bot and invite it: user ids, `*` as wildcard
    /// (`*:example.org`). Empty: everyone on the bot's own homeserver.
    pub allow: Vec<String>,
    /// Users allowed the admin commands (`reload`); always allowed in.
    pub admins: Vec<String>,
    /// Long-poll timeout of one sync request.
    #[serde(with = "secs")]
    pub sync_timeout: Duration,
    /// `/healthz` says unhealthy once no sync has succeeded for this long
    /// (the homeserver unreachable, or the sync stuck).
    #[serde(with = "secs")]
    pub sync_stale_after: Duration,
    /// Events per room one sync returns; beyond it the gap is read back
    /// page by page (nothing is lost, it only costs requests).
    pub timeline_limit: u32,
}

impl Default for MatrixConfig {
    fn default() -> Self {
        MatrixConfig {
            homeserver: None,
            user: None,
            password: None,
            access_token: None,
            device_name: "surfaces".into(),
            store_passphrase: None,
            recovery_key: None,
            allow: Vec::new(),
            admins: Vec::new(),
            sync_timeout: Duration::from_secs(30),
            sync_stale_after: Duration::from_secs(180),
            timeline_limit: 50,
        }
    }
}

impl Config {
    /// The guest's settings: the operator's, plus the admins from
    /// `matrix.admins` (one list, two readers: the host's access check
    /// and the guest's admin commands).
    pub fn guest_settings(&self) -> Vec<(String, String)> {
        let mut pairs = self.guest.settings_pairs();
        if !self.matrix.admins.is_empty() {
            pairs.retain(|(k, _)| k != "admins");
            pairs.push(("admins".into(), self.matrix.admins.join(",")));
        }
        pairs
    }

    /// Read `path` (if given), then apply the environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Config::parse(&text).map_err(|message| ConfigError::Parse {
                    path: path.to_owned(),
                    message,
                })?
            }
            None => Config::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        config.validate()?;
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        let mut config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        if config.data_dir.as_os_str().is_empty() {
            config.data_dir = PathBuf::from("data");
        }
        Ok(config)
    }

    /// Environment overrides; `var` reads one variable.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = var("MATRIX_PLATFORM_BACKEND") {
            self.agent.backend = env_choice("MATRIX_PLATFORM_BACKEND", v)?;
        }
        if let Some(v) = var("AGENT_WS_URL") {
            self.agent.url = Some(v);
        }
        if let Some(v) = var("AGENT_TOKEN") {
            self.agent.token = Some(Secret::new(v));
        }
        if let Some(v) = var("SURFACES_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = var("SURFACES_GUEST") {
            self.guest.path = Some(PathBuf::from(v));
        }
        if let Some(v) = var("SURFACES_GUEST_CACHE") {
            self.guest.cache_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = var("SURFACES_LOG_FORMAT") {
            self.log.format = env_choice("SURFACES_LOG_FORMAT", v)?;
        }
        if let Some(v) = var("SURFACES_LOG") {
            self.log.filter = v;
        }
        if let Some(v) = var("MATRIX_HOMESERVER") {
            self.matrix.homeserver = Some(v);
        }
        if let Some(v) = var("MATRIX_USER") {
            self.matrix.user = Some(v);
        }
        if let Some(v) = var("MATRIX_PASSWORD") {
            self.matrix.password = Some(Secret::new(v));
        }
        if let Some(v) = var("MATRIX_ACCESS_TOKEN") {
            self.matrix.access_token = Some(Secret::new(v));
        }
        if let Some(v) = var("MATRIX_RECOVERY_KEY") {
            self.matrix.recovery_key = Some(Secret::new(v));
        }
        if let Some(v) = var("SURFACES_METRICS_LISTEN") {
            let addr = v.parse().map_err(|e| ConfigError::Env {
                name: "SURFACES_METRICS_LISTEN",
                value: v.clone(),
                message: format!("{e}"),
            })?;
            self.metrics.listen = Some(addr);
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.agent.backend == AgentBackend::Real {
            let Some(url) = &self.agent.url else {
                return Err(ConfigError::Invalid(
                    "agent.backend is real but no agent URL is set (agent.url or AGENT_WS_URL)"
                        .into(),
                ));
            };
            if !(url.starts_with("ws://") || url.starts_with("wss://")) {
                return Err(ConfigError::Invalid(format!(
                    "agent URL {url:?} must start with ws:// or wss://"
                )));
            }
        }
        self.validate_matrix()?;
        if self.agent.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "agent.max_connections must be at least 1".into(),
            ));
        }
        if self.guest.call_budget_ms == 0 || self.guest.memory_mib == 0 {
            return Err(ConfigError::Invalid(
                "guest.call_budget_ms and guest.memory_mib must be positive".into(),
            ));
        }
        if self.guest.memory_mib > 4096 {
            return Err(ConfigError::Invalid(
                "guest.memory_mib is at most 4096 (a wasm32 guest cannot address more)".into(),
            ));
        }
        for (name, value) in [
            ("agent.connect_timeout", self.agent.connect_timeout),
            ("agent.idle_timeout", self.agent.idle_timeout),
            ("agent.ping_interval", self.agent.ping_interval),
            ("agent.reply_timeout", self.agent.reply_timeout),
        ] {
            if value < Duration::from_millis(100) {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be at least 0.1 seconds"
                )));
            }
        }
        if self.agent.max_reply_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "agent.max_reply_bytes is at least 1024".into(),
            ));
        }
        // A file goes inline in one frame, a third larger as base64.
        if !(1024..=surfaces_embed::media::MAX_MESSAGE_FILE_BYTES)
            .contains(&self.agent.max_attachment_bytes)
        {
            return Err(ConfigError::Invalid(format!(
                "agent.max_attachment_bytes is between 1024 and {} (40 MiB, what one \
                     message's files take together)",
                surfaces_embed::media::MAX_MESSAGE_FILE_BYTES
            )));
        }
        if self.agent.ping_interval >= self.agent.idle_timeout {
            return Err(ConfigError::Invalid(
                "agent.ping_interval must be shorter than agent.idle_timeout, or a quiet \
                 agent would be taken for a lost one"
                    .into(),
            ));
        }
        Ok(())
    }
}

impl Config {
    fn validate_matrix(&self) -> Result<(), ConfigError> {
        let m = &self.matrix;
        for pattern in m.allow.iter().chain(&m.admins) {
            crate::access::Access::check_pattern(pattern)
                .map_err(|e| ConfigError::Invalid(format!("matrix: {e}")))?;
        }
        if m.admins.iter().any(|a| a.contains(['*', '?'])) {
            return Err(ConfigError::Invalid(
                "matrix.admins are user ids, not patterns".into(),
            ));
        }
        if !m.admins.is_empty() && self.guest.settings.contains_key("admins") {
            return Err(ConfigError::Invalid(
                "admins are set twice (matrix.admins and guest.settings.admins): keep \
                 matrix.admins"
                    .into(),
            ));
        }
        let Some(homeserver) = &m.homeserver else {
            return Ok(());
        };
        if !(homeserver.starts_with("http://") || homeserver.starts_with("https://")) {
            return Err(ConfigError::Invalid(format!(
                "matrix.homeserver {homeserver:?} must start with http:// or https://"
            )));
        }
        if m.user.as_deref().is_none_or(str::is_empty) {
            return Err(ConfigError::Invalid(
                "matrix.user (or MATRIX_USER) is needed with a homeserver".into(),
            ));
        }
        if !(1..=1000).contains(&m.timeline_limit) {
            return Err(ConfigError::Invalid(
                "matrix.timeline_limit is between 1 and 1000".into(),
            ));
        }
        if m.sync_timeout > Duration::from_secs(300) {
            return Err(ConfigError::Invalid(
                "matrix.sync_timeout is at most 300 seconds".into(),
            ));
        }
        if m.sync_stale_after <= m.sync_timeout {
            return Err(ConfigError::Invalid(
                "matrix.sync_stale_after must be longer than matrix.sync_timeout".into(),
            ));
        }
        Ok(())
    }
}

/// One of an enum's lowercase names, read as the config file reads it.
fn env_choice<T: serde::de::DeserializeOwned>(
    name: &'static str,
    value: String,
) -> Result<T, ConfigError> {
    use serde::de::IntoDeserializer;
    let word = value.trim().to_ascii_lowercase();
    T::deserialize(word.as_str().into_deserializer()).map_err(|e: serde::de::value::Error| {
        ConfigError::Env {
            name,
            value,
            message: e.to_string(),
        }
    })
}

/// Durations in the file are whole or fractional seconds.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}
