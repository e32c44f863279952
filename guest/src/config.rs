//! Guest settings, parsed from the operator's key/value strings.

use crate::quota::Quotas;

/// Which conversations share one agent context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// One context for every room and user (the prototype's behaviour).
    Shared,
    /// One context per room.
    Room,
    /// One context per thread (a message outside a thread starts its own).
    Thread,
}

/// What happens to a message that comes while the agent is busy in its
/// context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueMode {
    /// It waits its turn (its position is shown).
    Queue,
    /// It waits its turn too, but a new message from someone whose answer
    /// is being written stops that answer first.
    Interrupt,
    /// Messages that come while the agent is busy go to it as one, from
    /// the same room and thread, when it is free.
    Collect,
}

impl QueueMode {
    fn parse(key: &str, v: &str) -> Result<QueueMode, String> {
        match v.trim() {
            "queue" => Ok(QueueMode::Queue),
            "interrupt" => Ok(QueueMode::Interrupt),
            "collect" => Ok(QueueMode::Collect),
            other => Err(format!(
                "{key}: {other:?} is not one of queue, interrupt, collect"
            )),
        }
    }
}

/// What an edit of a question already answered (or being answered) does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnEdit {
    /// Ask the agent again; the new answer replies to the edited question.
    Reask,
    /// Nothing (an edit of a question still queued still replaces it).
    Ignore,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub command_prefix: String,
    /// Minimum time between two updates (send or edit) of one message.
    pub edit_interval_ms: u64,
    /// Most edits of one message (the last kept for its final text).
    pub max_edits_per_message: u32,
    pub scope: Scope,
    /// Messages that may wait per context before new ones are refused.
    pub queue_limit: usize,
    pub admins: Vec<String>,
    /// Skills a user can switch on and off.
    pub skills: Vec<String>,
    pub auto_join: bool,
    /// How often a message refused with `busy` is retried before the user
    /// is told to try again later.
    pub busy_retries: u32,
    /// Days without activity after which a thread context is forgotten
    /// (0: never).
    pub thread_expiry_days: u64,
    /// The reaction that stops a reply (or withdraws a queued question),
    /// without U+FE0F.
    pub stop_reaction: String,
    /// The reaction that withdraws a queued question (or stops its reply).
    pub withdraw_reaction: String,
    pub on_edit: OnEdit,
    /// The queue mode of every room but those in `room_queue_modes`.
    pub queue_mode: QueueMode,
    /// Rooms with a queue mode of their own.
    pub room_queue_modes: Vec<(String, QueueMode)>,
    /// Token quotas per user (admins are exempt).
    pub quotas: Quotas,
    /// How long files sent without text wait for their sender's next text
    /// (clients send a file and its question as two messages).
    pub attachment_wait_ms: u64,
    /// The homeserver's rate limit for the bot, as first guessed (see
    /// [`crate::rate`]): events per 1,000 seconds (0: not limited), and
    /// the burst.
    pub rate_per_kilosecond: u64,
    pub rate_burst: u32,
    /// The operator set the limit (else it is Synapse's defaults as a
    /// guess, which holds back only intermediate edits until a 429).
    pub rate_told: bool,
    /// Settings this guest does not know: logged, not refused, so a guest
    /// older than the operator's configuration still starts (a rollback
    /// must not fail on a setting added since).
    pub unknown: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            command_prefix: "!".into(),
            edit_interval_ms: 1000,
            max_edits_per_message: 60,
            scope: Scope::Shared,
            queue_limit: 10,
            admins: Vec::new(),
            skills: vec!["browser".into(), "code".into(), "memory".into()],
            auto_join: true,
            busy_retries: 5,
            thread_expiry_days: 7,
            stop_reaction: "🛑".into(),
            withdraw_reaction: "❌".into(),
            on_edit: OnEdit::Reask,
            queue_mode: QueueMode::Queue,
            room_queue_modes: Vec::new(),
            quotas: Quotas::default(),
            attachment_wait_ms: 20_000,
            rate_per_kilosecond: (crate::rate::SYNAPSE_PER_SECOND * 1000.0) as u64,
            rate_burst: crate::rate::SYNAPSE_BURST,
            rate_told: false,
            unknown: Vec::new(),
        }
    }
}

impl Config {
    pub fn parse(settings: &[(String, String)]) -> Result<Config, String> {
        let mut c = Config::default();
        for (key, value) in settings {
            let v = value.trim();
            match key.as_str() {
                "command_prefix" => {
                    if v.is_empty() || v.chars().any(char::is_whitespace) {
                        return Err(format!(
                            "command_prefix: {value:?} must be non-empty, without spaces"
                        ));
                    }
                    c.command_prefix = v.to_string();
                }
                "edit_interval_ms" => c.edit_interval_ms = number(key, v, 0, 600_000)?,
                "max_edits_per_message" => {
                    c.max_edits_per_message = number(key, v, 1, 10_000)? as u32;
                }
                "context_scope" => {
                    c.scope = match v {
                        "shared" => Scope::Shared,
                        "room" => Scope::Room,
                        "thread" => Scope::Thread,
                        _ => {
                            return Err(format!(
                                "context_scope: {value:?} is not one of shared, room, thread"
                            ));
                        }
                    }
                }
                "queue_limit" => c.queue_limit = number(key, v, 0, 10_000)? as usize,
                "admins" => c.admins = list(v),
                "skills" => c.skills = list(v),
                "auto_join" => c.auto_join = boolean(key, v)?,
                "busy_retries" => c.busy_retries = number(key, v, 0, 100)? as u32,
                "thread_expiry_days" => c.thread_expiry_days = number(key, v, 0, 3650)?,
                "queue_mode" => c.queue_mode = QueueMode::parse(key, v)?,
                "room_queue_modes" => {
                    c.room_queue_modes = list(v)
                        .iter()
                        .map(|item| {
                            let (room, mode) = item
                                .rsplit_once('=')
                                .ok_or_else(|| format!("{key}: {item:?} is not ROOM_ID=MODE"))?;
                            Ok((room.trim().to_string(), QueueMode::parse(key, mode)?))
                        })
                        .collect::<Result<_, String>>()?;
                }
                "quota_tokens_per_day" => c.quotas.defaults.day = limit(key, v)?,
                "quota_tokens_per_month" => c.quotas.defaults.month = limit(key, v)?,
                "quota_overrides" => c.quotas.overrides = Quotas::parse_overrides(key, v)?,
                "attachment_wait_ms" => c.attachment_wait_ms = number(key, v, 0, 3_600_000)?,
                "rate_limit_per_second" => {
                    c.rate_per_kilosecond = per_kilosecond(key, v)?;
                    c.rate_told = true;
                }
                "rate_limit_burst" => {
                    c.rate_burst = number(key, v, 1, 100_000)? as u32;
                    c.rate_told = true;
                }
                "stop_reaction" => c.stop_reaction = reaction(key, v)?,
                "withdraw_reaction" => c.withdraw_reaction = reaction(key, v)?,
                "on_edit" => {
                    c.on_edit = match v {
                        "reask" => OnEdit::Reask,
                        "ignore" => OnEdit::Ignore,
                        _ => return Err(format!("on_edit: {value:?} is not one of reask, ignore")),
                    }
                }
                _ => c.unknown.push(key.clone()),
            }
        }
        Ok(c)
    }

    /// The settings this guest knows, for the log line about unknown ones.
    pub const KNOWN: &'static str = "command_prefix, edit_interval_ms, max_edits_per_message, \
        context_scope, queue_limit, admins, skills, auto_join, busy_retries, thread_expiry_days, \
        stop_reaction, withdraw_reaction, on_edit, queue_mode, room_queue_modes, \
        quota_tokens_per_day, quota_tokens_per_month, quota_overrides, attachment_wait_ms, rate_limit_per_second, \
        rate_limit_burst";

    /// The queue mode of a room.
    pub fn queue_mode(&self, room_id: &str) -> QueueMode {
        self.room_queue_modes
            .iter()
            .find(|(r, _)| r == room_id)
            .map_or(self.queue_mode, |(_, m)| *m)
    }
}

fn number(key: &str, v: &str, min: u64, max: u64) -> Result<u64, String> {
    let n: u64 = v
        .parse()
        .map_err(|_| format!("{key}: {v:?} is not a whole number"))?;
    if n < min || n > max {
        return Err(format!("{key}: {n} is outside {min}..={max}"));
    }
    Ok(n)
}

/// Events a second (a decimal, as Synapse's `per_second`), or `none`:
/// per 1,000 seconds.
fn per_kilosecond(key: &str, v: &str) -> Result<u64, String> {
    if v == "none" {
        return Ok(0);
    }
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() && (0.0..=1000.0).contains(&x) => Ok((x * 1000.0).round() as u64),
        _ => Err(format!(
            "{key}: {v:?} is not a number of events a second (0 to 1000) or none"
        )),
    }
}

/// A token limit: a number, or `none`.
fn limit(key: &str, v: &str) -> Result<Option<u64>, String> {
    match v {
        "none" | "" => Ok(None),
        _ => v
            .parse()
            .map(Some)
            .map_err(|_| format!("{key}: {v:?} is not a number of tokens or none")),
    }
}

/// A reaction key as compared: without the emoji variation selector
/// U+FE0F, which some clients send and others do not.
pub fn reaction_key(key: &str) -> String {
    key.chars().filter(|c| *c != '\u{fe0f}').collect()
}

fn reaction(key: &str, v: &str) -> Result<String, String> {
    let k = reaction_key(v);
    if k.is_empty() || k.chars().count() > 16 || k.chars().any(char::is_whitespace) {
        return Err(format!(
            "{key}: {v:?} must be one emoji or short word, without spaces"
        ));
    }
    Ok(k)
}

fn boolean(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("{key}: {v:?} is not true or false")),
    }
}

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}
