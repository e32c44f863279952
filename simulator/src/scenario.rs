//! Scenario files: a human-readable TOML description of a simulated world
//! (rooms, people and what they say, the agent's replies, faults).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub const BOT_USER: &str = "@surfaces:sim.test";

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// One line saying what the scenario shows.
    pub description: String,
    /// The seed its snapshot is taken with (1 when absent): one whose
    /// faults show what the scenario is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default)]
    pub bot: Bot,
    /// Settings handed to the guest's `init`, as the operator's config would.
    #[serde(default)]
    pub guest: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub homeserver: Homeserver,
    #[serde(default)]
    pub agent: Agent,
    #[serde(default)]
    pub faults: Faults,
    #[serde(default)]
    pub rooms: Vec<Room>,
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// Faults drawn at random while the world runs, besides the homeserver's
/// and the agent's own (`unavailable`, `lost_response`, replies' `then`).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// From this time on every random fault heals: the homeserver's
    /// outages and lost responses, the agent's failing replies and
    /// stalls, the sync's faults, guest traps. The world must then settle
    /// with every message answered (liveness).
    pub heal_at_ms: Option<u64>,
    /// Probability that a sync returns events it returned before (its
    /// window starts a little before the position asked for).
    pub duplicate_sync: f64,
    /// Probability that a sync request fails with 503.
    pub sync_unavailable: f64,
    /// Probability that a guest call traps part-way (it is starved of
    /// fuel), so its writes are dropped and it is delivered again.
    pub guest_trap: f64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bot {
    pub user_id: String,
    pub display_name: String,
    pub max_event_bytes: u32,
    /// The largest file the host passes to the agent
    /// (`agent.max_attachment_bytes`).
    pub max_attachment_bytes: u64,
    /// Who may talk to the bot and invite it (`access.allow` patterns);
    /// empty: everyone on the bot's own server.
    pub allow: Vec<String>,
}

impl Default for Bot {
    fn default() -> Self {
        Bot {
            user_id: BOT_USER.into(),
            display_name: "surfaces".into(),
            max_event_bytes: 65_536,
            max_attachment_bytes: 8 << 20,
            allow: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Homeserver {
    /// Leaky-bucket message rate limit, as Synapse's `rc_message`.
    pub rate_per_second: f64,
    pub burst: u32,
    /// Request latency range, each way, in ms.
    pub latency_ms: [u64; 2],
    /// Probability that a send or edit fails with 503.
    pub unavailable: f64,
    /// Probability that a send or edit lands but its response is lost
    /// (the host sees a failure; a retry with the same transaction id
    /// returns the event that landed).
    pub lost_response: f64,
    /// The bot's first this many joins fail with 503 (an outage while it
    /// is invited).
    pub failed_joins: u32,
    /// Events per room a sync returns before it calls the timeline limited
    /// (`matrix.timeline_limit`).
    pub timeline_limit: usize,
    /// The largest file the bot may upload (Synapse's `max_upload_size`):
    /// a larger one is refused with 413.
    pub max_upload_bytes: u64,
}

impl Default for Homeserver {
    fn default() -> Self {
        Homeserver {
            rate_per_second: 10.0,
            burst: 50,
            latency_ms: [10, 60],
            unavailable: 0.0,
            lost_response: 0.0,
            failed_joins: 0,
            timeline_limit: 50,
            max_upload_bytes: 50 << 20,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Agent {
    /// Time from connecting to the agent's first `status` frame.
    pub connect_ms: u64,
    /// Time before reconnecting after the connection is lost.
    pub reconnect_ms: u64,
    /// Replies, used in order by successive requests; then the agent echoes.
    pub replies: Vec<Reply>,
    /// The host cuts replies longer than this (`agent.max_reply_bytes`).
    pub max_reply_bytes: usize,
}

impl Default for Agent {
    fn default() -> Self {
        Agent {
            connect_ms: 50,
            reconnect_ms: 1_000,
            replies: Vec::new(),
            max_reply_bytes: surfaces_embed::agent::MAX_REPLY_BYTES,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Reply {
    /// The reply text, cut into `chunks` pieces...
    pub text: Option<String>,
    pub chunks: Option<usize>,
    /// ...or the pieces themselves.
    pub pieces: Option<Vec<String>>,
    /// Delay before each piece, in ms: fixed `[d, d]` or a range.
    pub chunk_delay_ms: Option<[u64; 2]>,
    pub tokens: Option<u64>,
    /// What happens instead of a clean end, after the pieces:
    /// `disconnect`, `malformed`, or `error:CODE` (busy, bad_request,
    /// context_overflow, internal). With no pieces, `error:busy` is a
    /// refusal.
    pub then: Option<String>,
    /// The agent's context size it reports in `status` after this reply.
    pub context_tokens: Option<u64>,
    /// Files the agent sends after the text (names; a few hundred bytes
    /// each).
    pub files: Option<Vec<String>>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Room {
    pub id: String,
    #[serde(default)]
    pub direct: bool,
    /// Members besides the bot.
    #[serde(default)]
    pub members: Vec<String>,
    /// Whether the bot is already in the room (else it waits for an invite).
    #[serde(default = "yes")]
    pub joined: bool,
    /// Messages already in the room (from its first member) before the bot
    /// first starts: history, never answered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<String>,
}

fn yes() -> bool {
    true
}

/// One thing that happens at a given time.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Step {
    pub at_ms: u64,
    /// Who acts (for `say`, `invite`, `leave`).
    pub from: Option<String>,
    pub room: Option<String>,
    /// Send this message.
    pub say: Option<String>,
    /// Send a file of this name (with `say`: its caption).
    pub file: Option<String>,
    /// The file's size in bytes (default 1,000).
    pub file_bytes: Option<u64>,
    /// The client does not declare the file's size (`info.size`): only
    /// the host, fetching it, learns it.
    pub file_size_unknown: bool,
    /// Name the message so later steps can use it as `thread`/`reply_to`.
    pub label: Option<String>,
    pub thread: Option<String>,
    pub reply_to: Option<String>,
    /// The message mentions the bot (`m.mentions`).
    pub mention: bool,
    /// Sent as `m.notice` (another bot).
    pub notice: bool,
    /// Sent encrypted; its key reaches the bot this long after.
    pub key_after_ms: Option<u64>,
    /// Sent encrypted; its key never reaches the bot.
    pub key_never: bool,
    pub display_name: Option<String>,
    /// `from` reacts to the event `on` names with this key.
    pub react: Option<String>,
    /// `from` edits the message `on` names into this text.
    pub edit: Option<String>,
    /// `from` redacts the event `on` names.
    pub redact: bool,
    /// The event a `react`, `edit` or `redact` acts on: a label, or
    /// `answer:LABEL` for the bot's first answer (not a notice) to it.
    pub on: Option<String>,
    /// `from` invites the bot to `room`.
    pub invite: bool,
    /// `from` leaves `room`.
    pub leave: bool,
    /// The agent connection drops.
    pub disconnect_agent: bool,
    /// The operator swaps the guest in again (as on SIGHUP).
    pub reload: bool,
    /// The host is killed and started again: agent streams, timers and
    /// responses in flight are lost; the store, the homeserver and
    /// undelivered room messages (sync) are not.
    pub restart: bool,
    /// With `restart`: the restarted host's first sync hands over every
    /// message delivered before again, as after a crash before the sync
    /// position was saved. None may be answered twice.
    pub replay: bool,
    /// The system's wall clock is set this far ahead (negative: back).
    /// The host reads the wall clock only when it starts and then counts
    /// on the monotonic clock, as the native host does, so the guest sees
    /// the jump only after the next restart.
    pub clock_jump_ms: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Scenario::parse(&text).map_err(|message| ScenarioError::Parse {
            path: path.display().to_string(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Scenario, String> {
        let s: Scenario = toml::from_str(text).map_err(|e| e.to_string())?;
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> Result<(), String> {
        let mut labels = Vec::new();
        for (i, step) in self.steps.iter().enumerate() {
            let n = i + 1;
            let kinds = [
                step.say.is_some() || step.file.is_some(),
                step.react.is_some(),
                step.edit.is_some(),
                step.redact,
                step.invite,
                step.leave,
                step.disconnect_agent,
                step.reload,
                step.restart,
                step.clock_jump_ms.is_some(),
            ]
            .iter()
            .filter(|k| **k)
            .count();
            if kinds != 1 {
                return Err(format!(
                    "step {n}: needs exactly one of say, react, edit, redact, invite, leave, disconnect_agent, reload, restart, clock_jump_ms"
                ));
            }
            if (step.say.is_some() || step.file.is_some() || step.invite || step.leave)
                && (step.from.is_none() || step.room.is_none())
            {
                return Err(format!("step {n}: say/invite/leave need `from` and `room`"));
            }
            if let Some(room) = &step.room
                && !self.rooms.iter().any(|r| &r.id == room)
            {
                return Err(format!("step {n}: unknown room {room:?}"));
            }
            let acts_on = step.react.is_some() || step.edit.is_some() || step.redact;
            if acts_on && (step.on.is_none() || step.from.is_none() || step.room.is_none()) {
                return Err(format!(
                    "step {n}: react/edit/redact need `on`, `from` and `room`"
                ));
            }
            let on = step
                .on
                .as_ref()
                .map(|l| l.strip_prefix("answer:").unwrap_or(l).to_string());
            for l in [&step.thread, &step.reply_to, &on].into_iter().flatten() {
                if !labels.contains(l) {
                    return Err(format!("step {n}: no earlier step is labelled {l:?}"));
                }
            }
            if let Some(l) = &step.label {
                labels.push(l.clone());
            }
        }
        for (i, r) in self.agent.replies.iter().enumerate() {
            if r.text.is_some() == r.pieces.is_some() && !(r.text.is_none() && r.then.is_some()) {
                return Err(format!("agent reply {}: give either text or pieces", i + 1));
            }
            if let Some(then) = &r.then {
                let ok = matches!(then.as_str(), "end" | "disconnect" | "malformed")
                    || then.strip_prefix("error:").is_some_and(|c| {
                        matches!(c, "busy" | "bad_request" | "context_overflow" | "internal")
                    });
                if !ok {
                    return Err(format!("agent reply {}: unknown `then` {then:?}", i + 1));
                }
            }
        }
        Ok(())
    }

    /// The guest settings as strings.
    /// The scenario as a TOML file (to save a generated one for replay).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot write scenario: {e}"))
    }

    pub fn settings(&self) -> Vec<(String, String)> {
        self.guest
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Array(items) => items
                        .iter()
                        .map(|i| {
                            i.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| i.to_string())
                        })
                        .collect::<Vec<_>>()
                        .join(","),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect()
    }
}

impl Reply {
    /// The pieces this reply streams.
    pub fn pieces(&self) -> Vec<String> {
        if let Some(p) = &self.pieces {
            return p.clone();
        }
        let text = self.text.clone().unwrap_or_default();
        split_even(&text, self.chunks.unwrap_or(4))
    }
}

/// Cut `text` into `n` pieces of about equal length (at char boundaries).
pub fn split_even(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return Vec::new();
    }
    let n = n.clamp(1, chars.len());
    let size = chars.len().div_ceil(n);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}
