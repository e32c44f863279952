//! The simulated world: a virtual clock, a seeded RNG, the fake homeserver,
//! fake agent servers, and the simulator's host (the I/O behind the guest's
//! imports). Everything happens in one thread, in the order of a priority
//! queue keyed by (virtual time, sequence number), so a seed replays exactly.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::time::Duration;

use surfaces_embed::{
    Action, AgentMessage, AgentSession, BoxedKv, EditTarget, Effect, Event, Guest, GuestComponent,
    HostInfo, Invite, Link, LogLevel, MatrixError, MatrixErrorKind, MatrixResult, MembersChanged,
    MemoryKv, MessageContent, ReloadResult, RoomMessage,
};
use surfaces_protocol::{self as proto, ClientFrame, ServerFrame};

use crate::homeserver::Homeserver;
use crate::scenario::{self, Scenario, Step};

/// The guest's commands (and aliases). In a group room an unmentioned
/// `!word` is only the bot's business if `word` is one of these.
const KNOWN_COMMANDS: &[&str] = &[
    "help", "h", "?", "new", "reset", "context", "usage", "stop", "cancel", "status", "skills",
    "skill", "reload",
];

/// The `reload-result` request id of a swap the host started itself (the
/// native host's file watcher or SIGHUP).
const HOST_RELOAD: u64 = 0;

/// Virtual time starts here (2026-01-01T00:00:00Z), in ms.
pub const EPOCH_MS: u64 = 1_767_225_600_000;
/// A run that has not settled after this much virtual time is a failure.
const MAX_VIRTUAL_MS: u64 = 6 * 3600 * 1000;
const MAX_STEPS: u64 = 500_000;
/// How long a restarted host takes to come up.
const RESTART_MS: u64 = 1_500;

/// What the checks need to know about a run, besides the homeserver.
#[derive(Debug, Default)]
pub struct Facts {
    pub user_messages: Vec<UserMessage>,
    pub submits: Vec<Submit>,
    /// Chunks the guest received, per agent request.
    pub chunks: BTreeMap<u64, Vec<String>>,
    /// How each agent request ended for the guest.
    pub outcomes: BTreeMap<u64, Outcome>,
    /// When the guest issued each send/edit of a message, by original
    /// event id.
    pub updates: BTreeMap<String, Vec<u64>>,
    /// Send request -> original event id, and send request -> issue time.
    pub sends: BTreeMap<u64, u64>,
    pub guest_failures: Vec<String>,
    pub edit_interval_ms: u64,
}

#[derive(Clone, Debug)]
pub struct UserMessage {
    pub event_id: String,
    pub room_id: String,
    pub body: String,
    /// The bot is expected to answer it (DM, mention or command).
    pub addressed: bool,
}

#[derive(Clone, Debug)]
pub struct Submit {
    pub request: u64,
    pub context_id: String,
    pub text: String,
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
    pub bot_user_id: String,
    pub prefix: String,
    /// The guest's store at the end of the run.
    pub store_keys: Vec<String>,
}

#[derive(Debug)]
enum Pending {
    Step(usize),
    Deliver(Event),
    HsArrive(Effect),
    AgentStep {
        ctx: String,
        epoch: u64,
    },
    AgentFrame {
        ctx: String,
        epoch: u64,
        frame: String,
    },
    Reconnect {
        ctx: String,
        epoch: u64,
    },
    Timer {
        id: u64,
        token: u64,
    },
    /// The restarted host comes up.
    HostStart,
}

/// One agent connection: the host's client session (the very rules the
/// native client runs) and the fake server behind it.
struct Conn {
    epoch: u64,
    session: AgentSession,
    /// Server: the reply being streamed.
    stream: Option<Stream>,
}

struct Stream {
    pieces: VecDeque<String>,
    sent: usize,
    total: usize,
    tokens: u64,
    then: String,
    delay: [u64; 2],
    cancelled: bool,
}

struct World<'a> {
    scenario: &'a Scenario,
    rng: ChaCha8Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    /// Pending things, with the host run (epoch) that scheduled them.
    slab: Vec<Option<(Pending, u64)>>,
    hs: Homeserver,
    component: &'a GuestComponent,
    guest: Option<Guest>,
    info: HostInfo,
    kv: BoxedKv,
    conns: BTreeMap<String, Conn>,
    replies: VecDeque<scenario::Reply>,
    timers: BTreeMap<u64, u64>,
    timer_token: u64,
    req_events: BTreeMap<u64, String>,
    labels: BTreeMap<String, String>,
    /// Room messages the guest has been handed, for a sync replay.
    delivered_messages: Vec<RoomMessage>,
    /// Bumped when the host restarts: what the old run had in flight is
    /// lost with it.
    host_epoch: u64,
    shared_scope: bool,
    transcript: Vec<String>,
    facts: Facts,
    prefix: String,
}

/// Run a scenario with a seed on a compiled guest.
pub fn run(scenario: &Scenario, seed: u64, component: &GuestComponent) -> Run {
    let settings = scenario.settings();
    let prefix = settings
        .iter()
        .find(|(k, _)| k == "command_prefix")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| "!".into());
    let edit_interval_ms = settings
        .iter()
        .find(|(k, _)| k == "edit_interval_ms")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(1000);
    let hs_cfg = &scenario.homeserver;
    let mut hs = Homeserver::new(
        hs_cfg.rate_per_second,
        hs_cfg.burst,
        scenario.bot.max_event_bytes as usize,
    );
    for room in &scenario.rooms {
        let mut r = crate::homeserver::HsRoom {
            direct: room.direct,
            ..Default::default()
        };
        r.members.extend(room.members.iter().cloned());
        if room.joined {
            r.members.insert(scenario.bot.user_id.clone());
        }
        hs.rooms.insert(room.id.clone(), r);
    }
    let info = HostInfo {
        bot_user_id: scenario.bot.user_id.clone(),
        bot_display_name: scenario.bot.display_name.clone(),
        host_version: format!("surfaces-sim {}", env!("CARGO_PKG_VERSION")),
        settings,
        max_event_bytes: scenario.bot.max_event_bytes,
        resumed: false,
    };
    let mut w = World {
        scenario,
        rng: ChaCha8Rng::seed_from_u64(seed),
        now: EPOCH_MS,
        seq: 0,
        queue: BinaryHeap::new(),
        slab: Vec::new(),
        hs,
        component,
        guest: None,
        info,
        kv: Box::new(MemoryKv::default()),
        conns: BTreeMap::new(),
        replies: scenario.agent.replies.iter().cloned().collect(),
        timers: BTreeMap::new(),
        timer_token: 0,
        req_events: BTreeMap::new(),
        labels: BTreeMap::new(),
        delivered_messages: Vec::new(),
        host_epoch: 0,
        shared_scope: true,
        transcript: Vec::new(),
        facts: Facts {
            edit_interval_ms,
            ..Facts::default()
        },
        prefix: prefix.clone(),
    };
    w.shared_scope = scenario
        .guest
        .get("context_scope")
        .and_then(|v| v.as_str())
        .is_none_or(|s| s == "shared");
    w.start_host();
    for (i, step) in scenario.steps.iter().enumerate() {
        w.at(EPOCH_MS + step.at_ms, Pending::Step(i));
    }
    let settled = w.run_loop();
    let store_keys = w.kv.keys("").unwrap_or_default();
    Run {
        store_keys,
        seed,
        transcript: w.transcript,
        homeserver: w.hs,
        facts: w.facts,
        settled,
        bot_user_id: scenario.bot.user_id.clone(),
        prefix,
    }
}

impl World<'_> {
    fn at(&mut self, time: u64, p: Pending) {
        let epoch = self.host_epoch;
        self.at_epoch(time, p, epoch);
    }

    fn at_epoch(&mut self, time: u64, p: Pending, epoch: u64) {
        let slot = self.slab.len();
        self.slab.push(Some((p, epoch)));
        self.queue.push(Reverse((time, self.seq, slot)));
        self.seq += 1;
    }

    fn after(&mut self, delay: u64, p: Pending) {
        self.at(self.now + delay, p);
    }

    /// Schedule an event for the guest from the current host run.
    fn deliver_after(&mut self, delay: u64, ev: Event) {
        self.after(delay, Pending::Deliver(ev));
    }

    /// What the host does when it starts: the guest, then the agent.
    fn start_host(&mut self) {
        self.start_guest(None);
        // (The guest may have connected it already, by submitting at init.)
        if self.shared_scope && !self.conns.contains_key("shared") {
            self.connect("shared");
        }
    }

    /// The host is killed and started again. Its agent connections, timers
    /// and pending responses die with it; the store, the homeserver and the
    /// room messages not yet handled (sync resumes) survive.
    fn restart_host(&mut self) {
        self.log("fault: the host is killed and restarted".into());
        self.host_epoch += 1;
        self.timers.clear();
        for mut c in std::mem::take(&mut self.conns).into_values() {
            // The guest never hears of these: the process is gone.
            let mut out = Vec::new();
            c.session.lost("host restarted", None, &mut out);
            for action in out {
                if let Action::Deliver(Event::AgentError(e)) = action {
                    self.facts
                        .outcomes
                        .insert(e.request, Outcome::Failed("host restarted".into()));
                }
            }
        }
        self.guest = None;
        // A new process takes a while to start: what the old one had sent
        // lands meanwhile, and sync delivers what came in after.
        self.after(RESTART_MS, Pending::HostStart);
    }

    fn latency(&mut self) -> u64 {
        let [lo, hi] = self.scenario.homeserver.latency_ms;
        self.range(lo, hi)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            self.rng.random_range(lo..=hi)
        }
    }

    fn log(&mut self, line: String) {
        let t = self.now - EPOCH_MS;
        self.transcript
            .push(format!("{:>4}.{:03} {line}", t / 1000, t % 1000));
    }

    fn run_loop(&mut self) -> bool {
        let mut steps = 0u64;
        while let Some(Reverse((time, _, slot))) = self.queue.pop() {
            if time > EPOCH_MS + MAX_VIRTUAL_MS || steps > MAX_STEPS {
                self.log("simulation cut off: the world did not settle".into());
                return false;
            }
            steps += 1;
            self.now = time;
            if let Some((p, epoch)) = self.slab[slot].take() {
                self.process(p, epoch);
            }
        }
        true
    }

    fn process(&mut self, p: Pending, epoch: u64) {
        match p {
            Pending::Step(i) => self.step(i),
            Pending::Deliver(ev) => {
                // Room events come from sync, which a restarted host resumes
                // from its saved position: they are never lost.
                let from_sync = matches!(
                    ev,
                    Event::Message(_) | Event::Invite(_) | Event::MembersChanged(_)
                );
                if from_sync && self.guest.is_none() {
                    // The host is down: sync hands it over once it is up.
                    self.after(RESTART_MS, Pending::Deliver(ev));
                } else if from_sync || epoch == self.host_epoch {
                    self.deliver(ev);
                }
            }
            Pending::HostStart => {
                if self.guest.is_none() {
                    self.log("host: started again".into());
                    self.start_host();
                }
            }
            Pending::HsArrive(effect) => self.hs_arrive(effect, epoch),
            Pending::AgentStep { ctx, epoch } => self.agent_step(&ctx, epoch),
            Pending::AgentFrame { ctx, epoch, frame } => self.agent_frame(&ctx, epoch, &frame),
            Pending::Reconnect { ctx, epoch } => self.reconnect(&ctx, epoch),
            Pending::Timer { id, token } => {
                if self.timers.get(&id) == Some(&token) {
                    self.timers.remove(&id);
                    self.deliver(Event::Timer(id));
                }
            }
        }
    }

    // ---- the guest -----------------------------------------------------------

    fn start_guest(&mut self, reload_request: Option<u64>) {
        // A swap carries on the same host run (the embedding's `swap`); a
        // (re)start does not.
        let result = match self.guest.as_mut() {
            Some(guest) => guest
                .swap(self.component, &mut self.kv, self.now)
                .map(|out| (None, out)),
            None => Guest::start(self.component, self.info.clone(), &mut self.kv, self.now)
                .map(|(guest, out)| (Some(guest), out)),
        };
        let outcome = match result {
            Ok((started, out)) => {
                if let Some(guest) = started {
                    self.guest = Some(guest);
                }
                let (name, version) = self
                    .guest
                    .as_ref()
                    .map(|g| (g.info().name.clone(), g.info().version.clone()))
                    .unwrap_or_default();
                self.log(format!("guest started: {name} {version}"));
                self.apply(out);
                Ok(version)
            }
            Err(e) => {
                self.log(format!("guest refused to start: {e}"));
                self.facts.guest_failures.push(e.to_string());
                Err(e.to_string())
            }
        };
        if let Some(request) = reload_request {
            self.deliver_after(1, Event::ReloadResult(ReloadResult { request, outcome }));
        }
    }

    fn deliver(&mut self, ev: Event) {
        if let Event::Message(m) = &ev
            && !self
                .delivered_messages
                .iter()
                .any(|d| d.event_id == m.event_id)
        {
            self.delivered_messages.push(m.clone());
        }
        match &ev {
            Event::AgentChunk(c) => self
                .facts
                .chunks
                .entry(c.request)
                .or_default()
                .push(c.text.clone()),
            Event::AgentEnd(e) => {
                self.facts.outcomes.insert(e.request, Outcome::Ended);
            }
            Event::AgentError(e) => {
                self.facts
                    .outcomes
                    .insert(e.request, Outcome::Failed(format!("{:?}", e.kind)));
            }
            _ => {}
        }
        let Some(guest) = self.guest.as_mut() else {
            self.log("event dropped: no guest is running".into());
            return;
        };
        let (result, retried) = guest.handle_retrying(&ev, &mut self.kv, self.now);
        let what = event_name(&ev);
        if let Some(e) = retried {
            self.log(format!("guest failed on {what}: {e}; delivered again"));
            self.facts.guest_failures.push(format!("{what}: {e}"));
        }
        match result {
            Ok(out) => self.apply(out),
            Err(e) => {
                self.log(format!("guest failed on {what}: {e}"));
                self.facts.guest_failures.push(format!("{what}: {e}"));
            }
        }
    }

    fn apply(&mut self, out: surfaces_embed::Output) {
        for line in out.logs {
            if line.level != LogLevel::Debug && line.level != LogLevel::Trace {
                self.log(format!(
                    "guest {}: {}",
                    level_name(line.level),
                    line.message
                ));
            }
        }
        for effect in out.effects {
            self.effect(effect);
        }
    }

    fn effect(&mut self, effect: Effect) {
        match effect {
            Effect::Send {
                request,
                ref room_id,
                ref content,
            } => {
                self.log(format!("bot send #{request} {room_id}: {}", show(content)));
                self.facts.sends.entry(request).or_insert(self.now);
                let d = self.latency();
                self.after(d, Pending::HsArrive(effect));
            }
            Effect::Edit {
                request,
                ref room_id,
                ref target,
                ref content,
            } => {
                let t = match target {
                    EditTarget::Event(e) => e.clone(),
                    EditTarget::Request(r) => format!("request #{r}"),
                };
                self.log(format!(
                    "bot edit #{request} {room_id} {t}: {}",
                    show(content)
                ));
                if let EditTarget::Event(e) = target {
                    self.facts
                        .updates
                        .entry(e.clone())
                        .or_default()
                        .push(self.now);
                }
                let d = self.latency();
                self.after(d, Pending::HsArrive(effect));
            }
            Effect::React {
                request,
                room_id,
                event_id,
                key,
            } => {
                self.log(format!("bot react #{request} {room_id} {event_id} {key}"));
                self.after(
                    1,
                    Pending::Deliver(Event::MatrixResult(MatrixResult {
                        request,
                        outcome: Ok(String::new()),
                    })),
                );
            }
            Effect::SetTyping {
                room_id, typing, ..
            } => {
                self.log(format!(
                    "bot typing {} {room_id}",
                    if typing { "on" } else { "off" }
                ));
            }
            Effect::ReadReceipt { room_id, event_id } => {
                self.log(format!("bot read {room_id} {event_id}"));
            }
            Effect::Join { .. } | Effect::Leave { .. } => {
                let d = self.latency();
                self.after(d, Pending::HsArrive(effect));
            }
            Effect::AgentSubmit {
                request,
                context_id,
                message,
            } => {
                self.log(format!(
                    "agent <- #{request} [{context_id}] {} from {}{}",
                    quote(&message.text),
                    message.sender.id,
                    if message.skills.is_empty() {
                        String::new()
                    } else {
                        format!(" skills={}", message.skills.join(","))
                    }
                ));
                self.facts.submits.push(crate::world::Submit {
                    request,
                    context_id: context_id.clone(),
                    text: message.text.clone(),
                });
                self.submit(&context_id, request, message);
            }
            Effect::AgentCancel { context_id } => {
                self.log(format!("agent <- cancel [{context_id}]"));
                self.client(&context_id, |session, out| session.cancel(out));
            }
            Effect::AgentReset { context_id } => {
                self.log(format!("agent <- reset [{context_id}]"));
                self.client(&context_id, |session, out| session.reset(out));
            }
            Effect::SetTimer { id, delay_ms } => {
                self.timer_token += 1;
                let token = self.timer_token;
                self.timers.insert(id, token);
                self.after(delay_ms, Pending::Timer { id, token });
            }
            Effect::CancelTimer { id } => {
                self.timers.remove(&id);
            }
            Effect::Reload { request } => {
                self.log(format!("host: reload requested (#{request})"));
                self.start_guest(Some(request));
            }
        }
    }

    // ---- the homeserver ------------------------------------------------------

    fn hs_arrive(&mut self, effect: Effect, epoch: u64) {
        let bot = self.scenario.bot.user_id.clone();
        let unavailable = self.scenario.homeserver.unavailable;
        let (request, result) = match effect {
            Effect::Send {
                request,
                room_id,
                content,
            } => {
                let r = if unavailable > 0.0 && self.rng.random_bool(unavailable.min(1.0)) {
                    Err(unavailable_error())
                } else {
                    self.hs.send(
                        &bot,
                        &format!("s{request}"),
                        &room_id,
                        &content,
                        None,
                        self.now,
                    )
                };
                (request, r)
            }
            Effect::Edit {
                request,
                room_id,
                target,
                content,
            } => {
                let target = match target {
                    EditTarget::Event(e) => Some(e),
                    EditTarget::Request(r) => self.req_events.get(&r).cloned(),
                };
                let r = if unavailable > 0.0 && self.rng.random_bool(unavailable.min(1.0)) {
                    Err(unavailable_error())
                } else if let Some(target) = target {
                    self.hs.send(
                        &bot,
                        &format!("s{request}"),
                        &room_id,
                        &content,
                        Some(&target),
                        self.now,
                    )
                } else {
                    Err(MatrixError {
                        kind: MatrixErrorKind::NotFound,
                        message: "edit names a request that sent nothing".into(),
                        retry_after_ms: None,
                    })
                };
                (request, r)
            }
            Effect::Join { request, room_id } => {
                let r = self.hs.join(&bot, &room_id).map(|_| room_id.clone());
                if r.is_ok() {
                    self.log(format!("bot joined {room_id}"));
                }
                (request, r)
            }
            Effect::Leave { request, room_id } => {
                let r = self.hs.leave(&bot, &room_id).map(|_| String::new());
                if r.is_ok() {
                    self.log(format!("bot left {room_id}"));
                }
                (request, r)
            }
            _ => return,
        };
        match &result {
            Ok(id) => {
                if id.starts_with('$') {
                    self.req_events.insert(request, id.clone());
                    // The first send of a message counts as its first update;
                    // a retry that the transaction id folds into it does not.
                    if let Some(t) = self.facts.sends.get(&request).copied()
                        && !self.facts.updates.contains_key(id)
                    {
                        self.facts.updates.insert(id.clone(), vec![t]);
                    }
                }
                self.log(format!("hs #{request} ok {id}"));
            }
            Err(e) => self.log(format!(
                "hs #{request} {:?}{}",
                e.kind,
                e.retry_after_ms
                    .map(|ms| format!(" retry after {ms}ms"))
                    .unwrap_or_default()
            )),
        }
        // The homeserver may store the event and the response still get
        // lost on the way back.
        let lost = self.scenario.homeserver.lost_response;
        let result = match result {
            Ok(id) if lost > 0.0 && id.starts_with('$') && self.rng.random_bool(lost.min(1.0)) => {
                self.log(format!("fault: the response to #{request} is lost"));
                Err(unavailable_error())
            }
            other => other,
        };
        let d = self.latency();
        // The response goes to the host run that sent the request.
        self.at_epoch(
            self.now + d,
            Pending::Deliver(Event::MatrixResult(MatrixResult {
                request,
                outcome: result,
            })),
            epoch,
        );
    }

    // ---- people ----------------------------------------------------------------

    fn step(&mut self, i: usize) {
        let step: Step = self.scenario.steps[i].clone();
        let bot = self.scenario.bot.user_id.clone();
        if step.disconnect_agent {
            self.log("fault: agent connection drops".into());
            let ctxs: Vec<String> = self.conns.keys().cloned().collect();
            for ctx in ctxs {
                self.disconnect(&ctx);
            }
            return;
        }
        if (step.reload || step.restart) && self.guest.is_none() {
            self.log("host: down, nothing to swap or restart".into());
            return;
        }
        if step.reload {
            self.log("host: guest swap (operator)".into());
            self.start_guest(Some(HOST_RELOAD));
            return;
        }
        if step.restart {
            self.restart_host();
            if step.replay {
                let again = self.delivered_messages.clone();
                self.log(format!(
                    "fault: the restarted host's sync replays {} message(s)",
                    again.len()
                ));
                for m in again {
                    self.after(RESTART_MS, Pending::Deliver(Event::Message(m)));
                }
            }
            return;
        }
        let (Some(from), Some(room)) = (step.from.clone(), step.room.clone()) else {
            return;
        };
        let direct = self.hs.rooms.get(&room).is_some_and(|r| r.direct);
        if step.invite {
            self.log(format!("{from} invites the bot to {room}"));
            self.after(
                10,
                Pending::Deliver(Event::Invite(Invite {
                    room_id: room,
                    inviter: from,
                    is_direct: direct,
                })),
            );
            return;
        }
        if step.leave {
            if let Ok(joined) = self.hs.leave(&from, &room) {
                self.log(format!("{from} leaves {room}"));
                self.after(
                    10,
                    Pending::Deliver(Event::MembersChanged(MembersChanged {
                        room_id: room,
                        joined,
                    })),
                );
            }
            return;
        }
        let Some(body) = step.say.clone() else { return };
        let thread = step
            .thread
            .as_ref()
            .and_then(|l| self.labels.get(l).cloned());
        let reply_to = step
            .reply_to
            .as_ref()
            .and_then(|l| self.labels.get(l).cloned());
        let display = self.scenario.bot.display_name.to_lowercase();
        let mentions_bot = step.mention
            || body.contains(&bot)
            || (!display.is_empty() && body.to_lowercase().contains(&display));
        let mut content = json!({
            "msgtype": if step.notice { "m.notice" } else { "m.text" },
            "body": body,
            "m.mentions": { "user_ids": if step.mention { vec![bot.clone()] } else { vec![] } },
        });
        if let Some(root) = &thread {
            content["m.relates_to"] = json!({ "rel_type": "m.thread", "event_id": root });
        } else if let Some(r) = &reply_to {
            content["m.relates_to"] = json!({ "m.in_reply_to": { "event_id": r } });
        }
        let event_id = self.hs.post_user_message(&room, &from, self.now, content);
        if let Some(label) = &step.label {
            self.labels.insert(label.clone(), event_id.clone());
        }
        self.log(format!("{from} in {room} {event_id}: {}", quote(&body)));
        let command_word = strip_address(&body, &bot, &display)
            .strip_prefix(self.prefix.as_str())
            .map(|rest| rest.split_whitespace().next().unwrap_or("").to_lowercase());
        let known_command = command_word.is_some_and(|w| KNOWN_COMMANDS.contains(&w.as_str()));
        let addressed = !step.notice && (direct || mentions_bot || known_command);
        self.facts.user_messages.push(UserMessage {
            event_id: event_id.clone(),
            room_id: room.clone(),
            body: body.clone(),
            addressed,
        });
        let d = self.range(5, 30);
        self.after(
            d,
            Pending::Deliver(Event::Message(RoomMessage {
                room_id: room,
                event_id,
                sender: from,
                sender_display_name: step.display_name.clone(),
                body,
                thread_root: thread,
                reply_to,
                is_direct: direct,
                mentions_bot,
                is_notice: step.notice,
                origin_server_ts: self.now,
            })),
        );
    }

    // ---- agents ----------------------------------------------------------------

    fn connect(&mut self, ctx: &str) {
        let c = self.conns.entry(ctx.to_string()).or_insert_with(|| Conn {
            epoch: 0,
            session: AgentSession::new(ctx),
            stream: None,
        });
        c.epoch += 1;
        c.stream = None;
        let epoch = c.epoch;
        let mut out = Vec::new();
        c.session.connecting(&mut out);
        self.log(format!("agent [{ctx}] connecting"));
        self.client_actions(ctx, out, false);
        let frame = proto::encode_server(&ServerFrame::Status {
            state: proto::AgentState::Ready,
            agent_id: Some("sim-agent".into()),
            context_tokens: None,
        });
        let d = self.scenario.agent.connect_ms;
        self.after(
            d,
            Pending::AgentFrame {
                ctx: ctx.to_string(),
                epoch,
                frame,
            },
        );
    }

    fn disconnect(&mut self, ctx: &str) {
        let base = self.scenario.agent.reconnect_ms;
        let delay = base + self.range(0, base / 2);
        let Some(c) = self.conns.get_mut(ctx) else {
            return;
        };
        if c.session.link() == Link::Down {
            return;
        }
        c.epoch += 1;
        c.stream = None;
        let epoch = c.epoch;
        let mut out = Vec::new();
        c.session.lost(
            "connection to the agent lost",
            Some(Duration::from_millis(delay)),
            &mut out,
        );
        self.log(format!(
            "agent [{ctx}] disconnected; reconnecting in {delay}ms"
        ));
        self.client_actions(ctx, out, false);
        self.after(
            delay,
            Pending::Reconnect {
                ctx: ctx.to_string(),
                epoch,
            },
        );
    }

    fn reconnect(&mut self, ctx: &str, epoch: u64) {
        if self
            .conns
            .get(ctx)
            .is_some_and(|c| c.epoch == epoch && c.session.link() == Link::Down)
        {
            self.connect(ctx);
        }
    }

    /// The host's agent client gets a submit from the guest.
    fn submit(&mut self, ctx: &str, request: u64, message: AgentMessage) {
        if !self.conns.contains_key(ctx) {
            self.connect(ctx);
        }
        let mut out = Vec::new();
        if let Some(c) = self.conns.get_mut(ctx) {
            c.session.submit(request, message, &mut out);
        }
        self.client_actions(ctx, out, false);
    }

    /// Run one client-session call for `ctx` and carry out its actions.
    fn client(&mut self, ctx: &str, call: impl FnOnce(&mut AgentSession, &mut Vec<Action>)) {
        let mut out = Vec::new();
        if let Some(c) = self.conns.get_mut(ctx) {
            call(&mut c.session, &mut out);
        }
        self.client_actions(ctx, out, true);
    }

    /// Carry out what the client session asked, in order: events to the
    /// guest (now, or each a millisecond after the last), frames to the
    /// fake server.
    fn client_actions(&mut self, ctx: &str, actions: Vec<Action>, now: bool) {
        for (i, action) in actions.into_iter().enumerate() {
            match action {
                Action::Deliver(ev) if now => self.deliver(ev),
                Action::Deliver(ev) => self.deliver_after(1 + i as u64, ev),
                Action::Send(frame) => self.server_receives(ctx, frame),
            }
        }
    }

    /// The fake agent server reads a frame from the client.
    fn server_receives(&mut self, ctx: &str, frame: ClientFrame) {
        match frame {
            ClientFrame::UserMessage { text, .. } => self.serve(ctx, &text),
            ClientFrame::Cancel => {
                if let Some(s) = self.conns.get_mut(ctx).and_then(|c| c.stream.as_mut()) {
                    s.cancelled = true;
                }
            }
            ClientFrame::Reset => {
                let Some(c) = self.conns.get_mut(ctx) else {
                    return;
                };
                if let Some(s) = c.stream.as_mut() {
                    s.cancelled = true;
                }
                let epoch = c.epoch;
                let frame = proto::encode_server(&ServerFrame::Status {
                    state: proto::AgentState::Ready,
                    agent_id: Some("sim-agent".into()),
                    context_tokens: Some(0),
                });
                self.after(
                    5,
                    Pending::AgentFrame {
                        ctx: ctx.to_string(),
                        epoch,
                        frame,
                    },
                );
            }
        }
    }

    /// The fake agent server starts answering a request.
    fn serve(&mut self, ctx: &str, text: &str) {
        let spec = self.replies.pop_front().unwrap_or_else(|| scenario::Reply {
            text: Some(format!("echo: {text}")),
            chunks: Some(3),
            ..Default::default()
        });
        let pieces: VecDeque<String> = spec.pieces().into();
        let total = pieces.len();
        let tokens = spec.tokens.unwrap_or((text.len() / 4 + total) as u64);
        let Some(c) = self.conns.get_mut(ctx) else {
            return;
        };
        c.stream = Some(Stream {
            pieces,
            sent: 0,
            total,
            tokens,
            then: spec.then.clone().unwrap_or_else(|| "end".into()),
            delay: spec.chunk_delay_ms.unwrap_or([80, 250]),
            cancelled: false,
        });
        let epoch = c.epoch;
        let [lo, hi] = spec.chunk_delay_ms.unwrap_or([80, 250]);
        let d = self.range(lo, hi);
        self.after(
            d,
            Pending::AgentStep {
                ctx: ctx.to_string(),
                epoch,
            },
        );
    }

    /// The fake server sends its next frame for the current stream.
    fn agent_step(&mut self, ctx: &str, epoch: u64) {
        let Some(c) = self.conns.get_mut(ctx) else {
            return;
        };
        if c.epoch != epoch {
            return;
        }
        let Some(s) = c.stream.as_mut() else { return };
        let mut frames = Vec::new();
        let mut next = None;
        let mut drop_conn = false;
        if s.cancelled {
            let partial = if s.total == 0 {
                0
            } else {
                s.tokens * s.sent as u64 / s.total as u64
            };
            frames.push(proto::encode_server(&ServerFrame::AgentEventEnd {
                tokens_used: partial,
            }));
            c.stream = None;
        } else if let Some(piece) = s.pieces.pop_front() {
            s.sent += 1;
            frames.push(proto::encode_server(&ServerFrame::AgentEventTextChunk {
                text: piece,
            }));
            next = Some(s.delay);
        } else {
            match s.then.as_str() {
                "disconnect" => drop_conn = true,
                "malformed" => {
                    frames.push("{\"type\": \"agent_event_text_chunk\", \"text\": ".to_string());
                    frames.push(proto::encode_server(&ServerFrame::AgentEventEnd {
                        tokens_used: s.tokens,
                    }));
                }
                then => match then.strip_prefix("error:") {
                    Some(code) => {
                        let code = match code {
                            "busy" => proto::ErrorCode::Busy,
                            "bad_request" => proto::ErrorCode::BadRequest,
                            "context_overflow" => proto::ErrorCode::ContextOverflow,
                            _ => proto::ErrorCode::Internal,
                        };
                        frames.push(proto::encode_server(&ServerFrame::Error {
                            code,
                            message: format!("simulated {code:?}").to_lowercase(),
                        }));
                    }
                    None => frames.push(proto::encode_server(&ServerFrame::AgentEventEnd {
                        tokens_used: s.tokens,
                    })),
                },
            }
            c.stream = None;
        }
        if drop_conn {
            self.log(format!(
                "fault: agent [{ctx}] drops the connection mid-reply"
            ));
            self.disconnect(ctx);
            return;
        }
        for (i, frame) in frames.into_iter().enumerate() {
            let d = 2 + i as u64;
            self.after(
                d,
                Pending::AgentFrame {
                    ctx: ctx.to_string(),
                    epoch,
                    frame,
                },
            );
        }
        if let Some([lo, hi]) = next {
            let d = self.range(lo, hi);
            self.after(
                d,
                Pending::AgentStep {
                    ctx: ctx.to_string(),
                    epoch,
                },
            );
        }
    }

    /// The host's agent client receives a frame and turns it into events.
    fn agent_frame(&mut self, ctx: &str, epoch: u64, frame: &str) {
        let Some(c) = self.conns.get_mut(ctx) else {
            return;
        };
        if c.epoch != epoch {
            return;
        }
        let mut out = Vec::new();
        let result = c.session.on_text(frame, &mut out);
        self.log(format!("agent -> [{ctx}] {}", quote_frame(frame)));
        self.client_actions(ctx, out, true);
        if let Err(broken) = result {
            self.log(format!("agent [{ctx}]: {broken}"));
            self.disconnect(ctx);
        }
    }
}

fn unavailable_error() -> MatrixError {
    MatrixError {
        kind: MatrixErrorKind::Unavailable,
        message: "503: homeserver unavailable".into(),
        retry_after_ms: None,
    }
}

fn strip_address<'a>(body: &'a str, bot: &str, display: &str) -> &'a str {
    let b = body.trim_start();
    for name in [bot, display] {
        if !name.is_empty() && b.len() >= name.len() && b[..name.len()].eq_ignore_ascii_case(name) {
            return b[name.len()..].trim_start_matches([':', ',']).trim_start();
        }
    }
    b
}

fn event_name(ev: &Event) -> String {
    match ev {
        Event::Message(m) => format!("message {}", m.event_id),
        Event::Invite(i) => format!("invite to {}", i.room_id),
        Event::MembersChanged(m) => format!("members of {}", m.room_id),
        Event::MatrixResult(r) => format!("matrix result #{}", r.request),
        Event::AgentChunk(c) => format!("agent chunk #{}", c.request),
        Event::AgentEnd(e) => format!("agent end #{}", e.request),
        Event::AgentError(e) => format!("agent error #{}", e.request),
        Event::AgentStatus(s) => format!("agent status [{}]", s.context_id),
        Event::Timer(id) => format!("timer {id}"),
        Event::ReloadResult(r) => format!("reload result #{}", r.request),
    }
}

/// A short, one-line rendering of a text for the transcript.
pub fn quote(text: &str) -> String {
    const MAX: usize = 72;
    let escaped: String = text.escape_debug().collect();
    if escaped.chars().count() <= MAX {
        return format!("\"{escaped}\"");
    }
    let head: String = escaped.chars().take(MAX).collect();
    format!("\"{head}…\" ({} bytes)", text.len())
}

fn quote_frame(frame: &str) -> String {
    match proto::decode_server(frame) {
        Ok(ServerFrame::AgentEventTextChunk { text }) => format!("chunk {}", quote(&text)),
        Ok(ServerFrame::AgentEventEnd { tokens_used }) => format!("end tokens={tokens_used}"),
        Ok(ServerFrame::Error { code, .. }) => format!("error {code:?}").to_lowercase(),
        Ok(ServerFrame::Status {
            state,
            context_tokens,
            ..
        }) => format!(
            "status {state:?}{}",
            context_tokens
                .map(|t| format!(" context_tokens={t}"))
                .unwrap_or_default()
        )
        .to_lowercase(),
        Ok(ServerFrame::Unknown) => "unknown frame (ignored)".into(),
        Err(_) => format!("malformed frame {}", quote(frame)),
    }
}

fn show(c: &MessageContent) -> String {
    let mut flags = Vec::new();
    if c.notice {
        flags.push("notice".to_string());
    }
    if c.live {
        flags.push("live".to_string());
    }
    if c.formatted_body.is_some() {
        flags.push("html".to_string());
    }
    if let Some(t) = &c.thread_root {
        flags.push(format!("thread {t}"));
    }
    if let Some(r) = &c.reply_to {
        flags.push(format!("reply-to {r}"));
    }
    if !c.mentions.is_empty() {
        flags.push(format!("mentions {}", c.mentions.join(",")));
    }
    format!("[{}] {}", flags.join(", "), quote(&c.body))
}

fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Trace => "trace",
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    }
}
