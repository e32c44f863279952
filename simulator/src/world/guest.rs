//! The simulated host and the guest: starting it, restarting the whole
//! host (what it had in flight dies with it), feeding it events, and
//! carrying out the effects it returns.

use surfaces_embed::{
    Effect, Event, Guest, HostEffect, LogLevel, ReloadOutcome, ReloadResult, TimerEffect,
};

use super::transcript::{event_name, level_name};
use super::{Outcome, Pending, RESTART_MS, World};

impl World<'_> {
    /// What the host does when it starts: the guest, the agent, then the
    /// sync loop.
    pub(super) fn start_host(&mut self) {
        self.start_guest(None);
        // (The guest may have connected it already, by submitting at init.)
        if self.shared_scope && !self.conns.contains_key("shared") {
            self.connect("shared");
        }
        self.start_sync();
    }

    /// The host is killed and started again. Its agent connections, timers,
    /// sync request and pending responses die with it; the store, the
    /// saved sync position and the homeserver survive.
    pub(super) fn restart_host(&mut self) {
        self.log("fault: the host is killed and restarted".into());
        self.host_epoch += 1;
        self.sync.parked = None;
        self.timers.clear();
        self.drop_agent_connections();
        self.guest = None;
        // A new process takes a while to start: what the old one had sent
        // lands meanwhile, and sync delivers what came in after.
        self.after(RESTART_MS, Pending::HostStart);
    }

    pub(super) fn start_guest(&mut self, reload_request: Option<u64>) {
        // A swap carries on the same host run (the embedding's `swap`); a
        // (re)start does not, and reads the system clock afresh.
        if self.guest.is_none() {
            self.host_clock_offset = self.clock_offset;
        }
        let now = self.wall_ms();
        let result = match self.guest.as_mut() {
            Some(guest) => guest
                .swap(self.component, &mut self.kv, now)
                .map(|out| (None, out)),
            None => Guest::start(self.component, self.info.clone(), &mut self.kv, now)
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
                ReloadOutcome::Swapped(version)
            }
            Err(e) => {
                self.log(format!("guest refused to start: {e}"));
                self.facts.guest_failures.push(e.to_string());
                ReloadOutcome::Refused(e.to_string())
            }
        };
        if let Some(request) = reload_request {
            self.deliver_after(1, Event::ReloadResult(ReloadResult { request, outcome }));
        }
    }

    pub(super) fn deliver(&mut self, ev: Event) {
        match &ev {
            Event::AgentChunk(c) => self
                .facts
                .chunks
                .entry(c.request)
                .or_default()
                .push(c.text.clone()),
            Event::AgentEnd(e) => {
                self.facts.ends.entry(e.request).or_insert(self.now);
                self.facts.outcomes.insert(e.request, Outcome::Ended);
                self.facts
                    .ended_tokens
                    .entry(e.request)
                    .or_insert(e.tokens_used);
            }
            Event::AgentError(e) => {
                self.facts.ends.entry(e.request).or_insert(self.now);
                self.facts
                    .outcomes
                    .insert(e.request, Outcome::Failed(format!("{:?}", e.kind)));
            }
            Event::MatrixResult(r) => self
                .facts
                .answered
                .entry(r.request)
                .or_default()
                .push(self.now),
            // Nothing for the facts in these.
            Event::Message(_)
            | Event::Invite(_)
            | Event::MembersChanged(_)
            | Event::AgentStatus(_)
            | Event::Timer(_)
            | Event::ReloadResult(_)
            | Event::Undecryptable(_)
            | Event::Reaction(_)
            | Event::MessageEdited(_)
            | Event::Redacted(_)
            | Event::AgentAttachment(_) => {}
        }
        if self.guest.is_none() {
            self.log("event dropped: no guest is running".into());
            return;
        }
        // The bot is about to learn it is alone: what its store holds from
        // the room now is what it may drop when it leaves.
        if let Event::MembersChanged(m) = &ev
            && m.joined <= 1
        {
            let held = self.pending_in(&m.room_id);
            self.held_when_alone.insert(m.room_id.clone(), held);
        }
        // An injected trap: the first attempt runs out of fuel part-way.
        let trap = self.scenario.faults.guest_trap;
        let starved = self.fault(trap).then(|| self.range(1_000, 400_000));
        let now = self.wall_ms();
        let Some(guest) = self.guest.as_mut() else {
            return;
        };
        if let Some(units) = starved {
            guest.starve_next_call(units);
        }
        let delivery = guest.handle_retrying(&ev, &mut self.kv, now);
        let what = event_name(&ev);
        let attempts = delivery.failures.len();
        for (i, failure) in delivery.failures.into_iter().enumerate() {
            self.log_guest_lines(failure.logs);
            let e = failure.error;
            let injected = i == 0 && starved.is_some();
            if injected {
                self.log(format!(
                    "fault: guest trapped on {what} ({e}); delivered again"
                ));
                if delivery.output.is_some() {
                    continue;
                }
            } else if delivery.output.is_some() || i + 1 < attempts {
                self.log(format!("guest failed on {what}: {e}; delivered again"));
            } else {
                self.log(format!("guest failed on {what}: {e}; dropped"));
            }
            self.facts.guest_failures.push(format!("{what}: {e}"));
        }
        if let Some(out) = delivery.output {
            self.facts.costs.push(out.cost);
            // The guest has seen this answer (a 429 it must now honour).
            if let Event::MatrixResult(r) = &ev
                && let Some(a) = self
                    .facts
                    .arrivals
                    .iter_mut()
                    .rev()
                    .find(|a| a.request == r.request)
            {
                a.received = true;
            }
            self.apply(out);
        }
    }

    pub(super) fn apply(&mut self, out: surfaces_embed::Output) {
        self.log_guest_lines(out.logs);
        for effect in out.effects {
            self.effect(effect);
        }
    }

    fn log_guest_lines(&mut self, lines: Vec<surfaces_embed::LogLine>) {
        for line in lines {
            if line.level != LogLevel::Debug && line.level != LogLevel::Trace {
                self.log(format!(
                    "guest {}: {}",
                    level_name(line.level),
                    line.message
                ));
            }
        }
    }

    /// The host carries out one effect: each kind goes to its part.
    pub(super) fn effect(&mut self, effect: Effect) {
        match effect {
            Effect::Matrix(m) => self.matrix_effect(m),
            Effect::Agent(a) => self.agent_effect(a),
            Effect::Timer(TimerEffect::Set { id, delay_ms }) => {
                self.timer_token += 1;
                let token = self.timer_token;
                self.timers.insert(id, token);
                self.after(delay_ms, Pending::Timer { id, token });
            }
            Effect::Timer(TimerEffect::Cancel { id }) => {
                self.timers.remove(&id);
            }
            Effect::Host(HostEffect::Reload { request }) => {
                self.log(format!("host: reload requested (#{request})"));
                self.start_guest(Some(request));
            }
            Effect::Host(HostEffect::Rollback { request }) => {
                // The host goes back only to a guest of another file that
                // ran in this host run; the simulated host has one file.
                self.log(format!("host: rollback requested (#{request})"));
                let outcome = ReloadOutcome::Refused(surfaces_embed::NO_EARLIER_GUEST.into());
                self.deliver_after(1, Event::ReloadResult(ReloadResult { request, outcome }));
            }
        }
    }
}
