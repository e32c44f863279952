//! The simulated world: a virtual clock, a seeded RNG, the fake homeserver,
//! fake agent servers, and the simulator's host (the I/O behind the guest's
//! imports). Everything happens in one thread, in the order of a priority
//! queue keyed by (virtual time, sequence number), so a seed replays exactly.
//!
//! - this file: the world, its event queue and the run loop;
//! - [`guest`]: the host starting, restarting and feeding the guest, and
//!   carrying out its effects;
//! - [`matrix`]: the guest's Matrix effects at the fake homeserver;
//! - [`people`]: the scenario's steps (people writing, operators, faults);
//! - [`sync`]: the host's sync loop, driving the shared inbox over the
//!   fake homeserver's batches;
//! - [`agents`]: the host's agent client sessions and the fake agents;
//! - [`media`]: files between people, the host and the agent;
//! - [`facts`]: what a run leaves for the checks;
//! - [`transcript`]: how things are written in the transcript.

mod agents;
mod facts;
mod guest;
mod matrix;
mod media;
mod people;
mod sync;
mod transcript;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use surfaces_embed::access::Access;
use surfaces_embed::inbox::Inbox;
use surfaces_embed::{BoxedKv, Event, Guest, GuestComponent, HostInfo, MatrixEffect, MemoryKv};

use agents::Conn;

use crate::homeserver::sync::Batch;
use crate::homeserver::{Homeserver, HsEvent};
use crate::scenario::{self, Scenario};

pub use facts::{AgentFile, Arrival, Facts, FileSent, Outcome, Run, Submit, UserMessage};
pub use transcript::quote;

/// Virtual time starts here (2026-01-01T00:00:00Z), in ms.
pub const EPOCH_MS: u64 = 1_767_225_600_000;
/// A run that has not settled after this much virtual time is a failure.
const MAX_VIRTUAL_MS: u64 = 6 * 3600 * 1000;
const MAX_STEPS: u64 = 500_000;
/// How long a restarted host takes to come up.
const RESTART_MS: u64 = 1_500;

#[derive(Debug)]
enum Pending {
    Step(usize),
    Deliver(Event),
    HsArrive(MatrixEffect),
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
    /// The host's sync request reaches the homeserver.
    SyncArrive,
    /// A sync response reaches the host.
    SyncReturn(Box<Batch>),
    /// A parked long-poll times out.
    SyncTimeout {
        poll: u64,
    },
}

/// The world of one run.
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
    /// The host's sync loop and the shared inbox it drives.
    inbox: Inbox<HsEvent>,
    sync: sync::SyncState,
    /// Bumped when the host restarts: what the old run had in flight is
    /// lost with it.
    host_epoch: u64,
    /// Joins failed so far (`homeserver.failed_joins`).
    joins_failed: u32,
    /// How far the system's wall clock is ahead of virtual time (clock
    /// jumps), and how far it was when the host last started: the host's
    /// clock (`wall_ms`) follows the monotonic clock from there.
    clock_offset: i64,
    host_clock_offset: i64,
    /// Per room, the messages the guest's store held when the bot was told
    /// it was alone there: excused if it then leaves (`Facts::excused`).
    held_when_alone: BTreeMap<String, Vec<String>>,
    /// The inbox's planted bug is on.
    join_cutoff: bool,
    shared_scope: bool,
    transcript: Vec<String>,
    facts: Facts,
    prefix: String,
    /// Files the agent sent, kept by the host until sent: number -> (name,
    /// mime, bytes).
    kept: BTreeMap<u64, (String, String, Vec<u8>)>,
    next_kept: u64,
}

/// Run a scenario with a seed on a compiled guest.
pub fn run(scenario: &Scenario, seed: u64, component: &GuestComponent) -> Run {
    run_planted(scenario, seed, component, false)
}

/// [`run`], with the inbox's planted bug ([`crate::JOIN_CUTOFF`]) on or
/// off (the guest's are switched by its settings).
pub fn run_planted(
    scenario: &Scenario,
    seed: u64,
    component: &GuestComponent,
    join_cutoff: bool,
) -> Run {
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
    let max_edits = settings
        .iter()
        .find(|(k, _)| k == "max_edits_per_message")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(60);
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
        hs.initial.insert(room.id.clone(), r.members.clone());
        hs.rooms.insert(room.id.clone(), r);
        // What was said before the bot's first start.
        if let Some(first) = room.members.first() {
            for body in &room.history {
                let content = serde_json::json!({ "msgtype": "m.text", "body": body });
                hs.post_user_message(&room.id, first, EPOCH_MS, content, None);
            }
        }
    }
    let info = HostInfo {
        bot_user_id: scenario.bot.user_id.clone(),
        bot_display_name: scenario.bot.display_name.clone(),
        host_version: format!("surfaces-sim {}", env!("CARGO_PKG_VERSION")),
        settings,
        max_event_bytes: scenario.bot.max_event_bytes,
        resumed: false,
        // Set by the embedding from the component.
        guest_hash: String::new(),
        max_attachment_bytes: scenario.bot.max_attachment_bytes,
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
        inbox: Inbox::new("", Access::new(&[], &[], ""), 0, None),
        sync: sync::SyncState::default(),
        host_epoch: 0,
        joins_failed: 0,
        clock_offset: 0,
        host_clock_offset: 0,
        held_when_alone: BTreeMap::new(),
        join_cutoff,
        shared_scope: true,
        transcript: Vec::new(),
        facts: Facts {
            edit_interval_ms,
            max_edits,
            settings: scenario.settings(),
            clock_jumps: scenario.steps.iter().any(|s| s.clock_jump_ms.is_some()),
            ..Facts::default()
        },
        prefix: prefix.clone(),
        kept: BTreeMap::new(),
        next_kept: 0,
    };
    let scope = scenario
        .guest
        .get("context_scope")
        .and_then(|v| v.as_str())
        .unwrap_or("shared");
    w.shared_scope = scope == "shared";
    w.facts.scope = scope.to_string();
    w.facts.reask = scenario.guest.get("on_edit").and_then(|v| v.as_str()) != Some("ignore");
    // The operator told the bot the homeserver's rate limit exactly (the
    // guest's defaults are Synapse's): it has nothing to learn.
    let told = |key: &str| {
        scenario
            .settings()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    };
    let per_second = told("rate_limit_per_second").unwrap_or_else(|| "0.2".into());
    let burst = told("rate_limit_burst").unwrap_or_else(|| "10".into());
    w.facts.limit_known = per_second.parse::<f64>().ok()
        == Some(scenario.homeserver.rate_per_second)
        && burst.parse::<u32>().ok() == Some(scenario.homeserver.burst);
    w.facts.limit = (
        scenario.homeserver.rate_per_second,
        f64::from(scenario.homeserver.burst),
    );
    w.start_host();
    for (i, step) in scenario.steps.iter().enumerate() {
        w.at(EPOCH_MS + step.at_ms, Pending::Step(i));
    }
    let settled = w.run_loop();
    let store =
        w.kv.keys("")
            .unwrap_or_default()
            .into_iter()
            .filter_map(|k| Some((k.clone(), w.kv.get(&k).ok()??)))
            .collect();
    Run {
        store,
        seed,
        transcript: w.transcript,
        homeserver: w.hs,
        facts: w.facts,
        settled,
        virtual_ms: w.now.saturating_sub(EPOCH_MS),
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

    /// `delay` may come from the guest (a timer): far beyond any run's end
    /// is "never", not an overflow.
    fn after(&mut self, delay: u64, p: Pending) {
        self.at(self.now.saturating_add(delay), p);
    }

    /// Schedule an event for the guest from the current host run.
    fn deliver_after(&mut self, delay: u64, ev: Event) {
        self.after(delay, Pending::Deliver(ev));
    }

    /// Every random fault has healed (`faults.heal_at_ms`).
    fn healed(&self) -> bool {
        self.scenario
            .faults
            .heal_at_ms
            .is_some_and(|h| self.now >= EPOCH_MS + h)
    }

    /// Whether a fault of probability `p` strikes now (never once healed).
    fn fault(&mut self, p: f64) -> bool {
        p > 0.0 && !self.healed() && self.rng.random_bool(p.min(1.0))
    }

    /// The host's clock, as the guest reads it.
    fn wall_ms(&self) -> u64 {
        self.now.saturating_add_signed(self.host_clock_offset)
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
        if line.starts_with("fault:") || line.starts_with("host:") {
            self.facts.disruptions.push(self.now);
        }
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
                self.wake_sync();
            }
        }
        true
    }

    fn process(&mut self, p: Pending, epoch: u64) {
        match p {
            Pending::Step(i) => self.step(i),
            // What a host run scheduled dies with it.
            Pending::Deliver(ev) => {
                if epoch == self.host_epoch {
                    self.deliver(ev);
                } else {
                    self.undelivered(&ev);
                }
            }
            Pending::HostStart => {
                if self.guest.is_none() {
                    self.log("host: started again".into());
                    self.start_host();
                }
            }
            Pending::HsArrive(effect) => self.hs_arrive(effect, epoch),
            Pending::SyncArrive => self.sync_arrive(epoch),
            Pending::SyncReturn(batch) => self.sync_return(*batch, epoch),
            Pending::SyncTimeout { poll } => self.sync_timeout(poll),
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
}
