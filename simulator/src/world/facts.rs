//! What a run leaves behind for the checks: the facts the simulator saw
//! besides the homeserver's own state.

use std::collections::{BTreeMap, BTreeSet};

use crate::homeserver::Homeserver;

/// What the checks need to know about a run, besides the homeserver.
#[derive(Debug, Default)]
pub struct Facts {
    pub user_messages: Vec<UserMessage>,
    /// What each event the guest handled cost it (fuel, memory).
    pub costs: Vec<surfaces_embed::Cost>,
    pub submits: Vec<Submit>,
    /// Feedback the guest passed to the agent: (context, key).
    pub feedback: Vec<(String, String)>,
    /// Chunks the guest received, per agent request.
    pub chunks: BTreeMap<u64, Vec<String>>,
    /// How each agent request ended for the guest.
    pub outcomes: BTreeMap<u64, Outcome>,
    /// Tokens the agent reported at the end of each request.
    pub ended_tokens: BTreeMap<u64, u64>,
    /// When the guest issued each send/edit of a message, by original
    /// event id, and whether it was still live (not the final text).
    pub updates: BTreeMap<String, Vec<(u64, bool)>>,
    /// Send request -> when the guest first issued it, and whether live.
    pub sends: BTreeMap<u64, (u64, bool)>,
    pub guest_failures: Vec<String>,
    pub edit_interval_ms: u64,
    /// The guest's `max_edits_per_message`.
    pub max_edits: u32,
    /// The guest's settings, as the operator gave them.
    pub settings: Vec<(String, String)>,
    /// The scenario moves the wall clock (a day or a month may pass).
    pub clock_jumps: bool,
    /// The guest's `context_scope`: shared, room or thread.
    pub scope: String,
    /// The guest's `on_edit` is `reask` (the default).
    pub reask: bool,
    /// Queue notices whose position was not the message's place in its
    /// queue, read from the store when the notice was sent.
    pub false_positions: Vec<String>,
    /// Each send and edit as it reached the homeserver, in order.
    pub arrivals: Vec<Arrival>,
    /// Rooms the bot has asked to leave (and not asked to join since).
    pub leaving: BTreeSet<String>,
    /// What the guest issued into a room (sends, edits, reactions, typing,
    /// receipts) after it asked to leave it (one issued before may still
    /// arrive after the leave).
    pub sent_after_leaving: Vec<String>,
    /// Messages no answer is owed to: the guest's store held them (queued
    /// or being answered) when it learnt it was alone in their room, and it
    /// then left.
    pub excused: BTreeSet<String>,
    /// Files people sent.
    pub files_sent: Vec<FileSent>,
    /// Files the fake agent got with a message: (name, bytes).
    pub files_to_agent: Vec<(String, Vec<u8>)>,
    /// Files the fake agent sent, kept by the host for the guest.
    pub agent_files: Vec<AgentFile>,
    /// When the guest first heard each agent request's end (or error).
    pub ends: BTreeMap<u64, u64>,
    /// Each agent request's reply: its sends and edits as issued.
    pub reply_updates: BTreeMap<u64, Vec<ReplyUpdate>>,
    /// When each Matrix request's answers reached the guest.
    pub answered: BTreeMap<u64, Vec<u64>>,
    /// When something outside the bot's control struck: a fault, a
    /// restart, a swap.
    pub disruptions: Vec<u64>,
    /// The guest's rate-limit settings are the homeserver's limit.
    pub limit_known: bool,
    /// The homeserver's limit: events a second, burst.
    pub limit: (f64, f64),
}

/// A send or edit of a reply's message, as the guest issued it.
#[derive(Clone, Debug)]
pub struct ReplyUpdate {
    pub request: u64,
    pub at: u64,
    /// Still streaming (not the message's final text).
    pub live: bool,
    /// A new message (a part's send, or its retry), not an edit.
    pub send: bool,
    /// The length of the text it shows.
    pub len: usize,
}

/// A file a person sent.
#[derive(Clone, Debug)]
pub struct FileSent {
    pub event_id: String,
    pub room_id: String,
    pub sender: String,
    pub name: String,
    pub bytes: Vec<u8>,
    /// Sent in a direct chat with the bot, or mentioning it, by someone
    /// allowed: it must reach the agent or be refused in words.
    pub for_bot: bool,
    /// The bot could see it: sent by someone allowed, into a room the bot
    /// was in or invited to by someone allowed (else it is history).
    pub seen: bool,
    pub at: u64,
    /// The redaction that deleted it, if its sender deleted it.
    pub redacted_by: Option<String>,
}

/// A file the agent sent with a reply.
#[derive(Clone, Debug)]
pub struct AgentFile {
    pub request: u64,
    /// The room of the reply it came with, as the guest's store holds it.
    pub room_id: Option<String>,
    pub name: String,
    pub bytes: Vec<u8>,
}

/// A send or an edit as it reached the homeserver.
#[derive(Clone, Debug)]
pub struct Arrival {
    pub request: u64,
    /// What the request updates: an edit's original event, or a new
    /// message's transaction (a send tried again keeps it).
    pub flow: String,
    /// Virtual time, ms.
    pub at: u64,
    /// The `retry_after_ms` of the 429 it got, if it got one.
    pub retry_after_ms: Option<u64>,
    /// Its answer reached the guest (not lost with a host that was
    /// killed); for a 429, the guest must honour it.
    pub received: bool,
    /// The homeserver stored it as an event.
    pub landed: bool,
    /// Stored, but the answer was lost on the way back (the guest saw an
    /// error).
    pub lost: bool,
    /// Refused (429, 413, 503, ...).
    pub refused: bool,
    /// An intermediate update of a streaming message.
    pub live: bool,
}

#[derive(Clone, Debug)]
pub struct UserMessage {
    pub event_id: String,
    pub room_id: String,
    pub sender: String,
    pub body: String,
    /// The thread it was sent in.
    pub thread: Option<String>,
    /// The bot is expected to answer it (DM, mention or command).
    pub addressed: bool,
    /// A command (answered at once, outside the queue).
    pub command: bool,
    /// Its edits' texts, in the order sent.
    pub edits: Vec<String>,
    /// Redacted by its sender: it need not be answered.
    pub redacted: bool,
}

#[derive(Clone, Debug)]
pub struct Submit {
    pub request: u64,
    pub context_id: String,
    /// Whose message it carries.
    pub sender: String,
    pub text: String,
    /// When the guest asked for it.
    pub at_ms: u64,
    /// The `surfaces-media:` ids of the files the guest sent with it.
    pub files: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ended,
    Failed(String),
}

/// The result of a run.
pub struct Run {
    pub seed: u64,
    pub transcript: Vec<String>,
    pub homeserver: Homeserver,
    pub facts: Facts,
    /// False when the run was cut off before the world went quiet.
    pub settled: bool,
    /// The virtual time the run covered, ms.
    pub virtual_ms: u64,
    pub bot_user_id: String,
    pub prefix: String,
    /// The guest's store at the end of the run.
    pub store: BTreeMap<String, Vec<u8>>,
}
