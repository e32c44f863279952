//! The event loop: one task that owns the guest and the database and
//! delivers events one at a time; everything else (the Matrix front end,
//! agent connections, timers, the file watcher, signals) talks to it
//! through two channels.
//!
//! - Events (messages, Matrix results, agent frames) go to the guest in
//!   the order they arrive. Each call is transactional (see `embed`): the
//!   effects it returns are then handed to the front end, the agent pool or
//!   the timers, none of which blocks.
//! - Control messages start a swap, finish one, fire a timer, or shut down.
//!   A swap compiles the new guest on a blocking thread while the old one
//!   keeps serving; the switch itself (instantiate, `init`, replace) runs
//!   on the loop between two events, so events that arrive meanwhile wait
//!   in the channel and reach the new guest in order: none is lost or
//!   handled twice.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use surfaces_contract::HOST_RELOAD;
use surfaces_embed::{
    AgentEffect, BoxedKv, Effect, Embedding, Event, Guest, GuestComponent, GuestError, HostEffect,
    HostInfo, LogLevel, LogLine, NO_EARLIER_GUEST, Output, ReloadOutcome, ReloadResult, Sandbox,
    TimerEffect,
};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::agent::pool::{AgentPool, SHARED};
use crate::backlog;
use crate::channels::{Channels, Control, Handle};
use crate::front::FrontEnd;
use crate::history::History;
use crate::kept::{Kept, Serving};
use crate::metrics::{Health, Kind, Metrics};
use crate::probation::{Probation, Verdict};
use crate::swapcheck::{self, SwapCheck};
use crate::time::{now_ms, sleep_until_opt};

/// Where the guest comes from.
#[derive(Clone, Debug)]
pub enum GuestSource {
    /// A file, read again at every swap.
    File(PathBuf),
    /// Bytes built into the binary: nothing to swap to.
    Builtin(&'static [u8]),
}

/// What the loop needs besides its channels and front end.
pub struct RuntimeConfig {
    pub source: GuestSource,
    /// Where compiled guests are cached.
    pub cache_dir: PathBuf,
    pub sandbox: Sandbox,
    pub host_info: HostInfo,
    pub shutdown_grace: Duration,
    /// What a candidate must pass before it is swapped in.
    pub swap_check: SwapCheck,
    /// Where the guests that served are kept, with which one serves
    /// (`kept.rs`): the data directory's `guests/`.
    pub kept_dir: PathBuf,
}

/// Why the bot could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot read the guest {path}: {source}")]
    ReadGuest {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Embed(#[from] surfaces_embed::EmbedError),
    #[error("the guest does not start: {0}")]
    Guest(#[from] GuestError),
}

pub struct Runtime {
    embedding: Embedding,
    config: RuntimeConfig,
    guest: Guest,
    kv: BoxedKv,
    agents: AgentPool,
    matrix: Box<dyn FrontEnd>,
    handle: Handle,
    events: mpsc::UnboundedReceiver<Event>,
    /// Agent connections and the sync task: bounded, they wait for the loop.
    inbound: mpsc::Receiver<Event>,
    control: mpsc::UnboundedReceiver<Control>,
    /// Each armed timer: its token, when it is due, and its task.
    timers: HashMap<u64, (u64, Instant, AbortHandle)>,
    timer_token: u64,
    /// Swap requests waiting for the compile in progress (`None`: host);
    /// not empty exactly while a compile runs.
    swap_requests: Vec<Option<u64>>,
    /// Triggers that arrived during the compile: the file may have changed
    /// again, so they share the next compile.
    next_swap_requests: Vec<Option<u64>>,
    metrics: Arc<Metrics>,
    /// The guest swapped in last, while it may still be sent back.
    probation: Option<Probation<GuestComponent>>,
    /// The file (SHA-256) of a guest sent back: refused until it changes.
    rolled_back: Option<String>,
    /// The file of the guest an admin's `rollback` left (a restart does not
    /// serve it again; a `reload` does).
    stepped_back: Option<String>,
    /// Guests of other files that ran before, for `rollback`.
    history: History,
    kept: Kept,
}

impl Runtime {
    /// Compile and start the guest (a host start: `resumed = false`) and
    /// open the shared agent connection.
    pub fn start(
        config: RuntimeConfig,
        channels: Channels,
        mut kv: BoxedKv,
        agents: AgentPool,
        matrix: Box<dyn FrontEnd>,
        metrics: Arc<Metrics>,
    ) -> Result<Runtime, StartError> {
        let embedding = Embedding::new(config.sandbox)?;
        let kept = Kept::new(&config.kept_dir);
        let load_error = |e: LoadError| match e {
            LoadError::Read { path, source } => StartError::ReadGuest { path, source },
            LoadError::Embed(e) => StartError::Embed(e),
        };
        let mut first = first_guest(&embedding, &config, &kept).map_err(load_error)?;
        let mut info = config.host_info.clone();
        info.resumed = false;
        let started =
            guest_call(|| Guest::start(&first.component, info.clone(), &mut kv, now_ms()));
        let (guest, out) = match (started, first.file.take()) {
            (Ok(started), _) => started,
            // The guest the last run went back to does not start on this
            // host (another setting, another host version): the file does.
            (Err(e), Some(file)) => {
                tracing::warn!(
                    "the guest the last run went back to does not start ({e}): serving the guest file"
                );
                let (component, _) = embedding
                    .compile_cached(&file, &config.cache_dir)
                    .map_err(|e| load_error(e.into()))?;
                first.history.serving(&component);
                first.last.stepped_back = None;
                guest_call(|| Guest::start(&component, info, &mut kv, now_ms()))?
            }
            (Err(e), None) => return Err(e.into()),
        };
        tracing::info!(
            guest = %guest.info().name,
            version = %guest.info().version,
            "guest started"
        );
        // A compile (the first start, or a new guest) leaves its working
        // memory with the allocator.
        crate::heap::release_free_memory();
        let mut runtime = Runtime {
            embedding,
            config,
            guest,
            kv,
            agents,
            matrix,
            handle: channels.handle,
            events: channels.events,
            inbound: channels.inbound,
            control: channels.control,
            timers: HashMap::new(),
            timer_token: 0,
            swap_requests: Vec::new(),
            next_swap_requests: Vec::new(),
            metrics,
            probation: None,
            rolled_back: first.last.refused,
            stepped_back: first.last.stepped_back,
            history: first.history,
            kept,
        };
        runtime.record_serving();
        if scope_is_shared(&runtime.config.host_info) {
            runtime.agents.open(SHARED);
        }
        runtime.apply(out);
        // Serving from here: events sent from now on wait in the channel
        // for `run`, none is refused.
        runtime.metrics.set_health(Health::Serving);
        Ok(runtime)
    }

    /// The running guest's name and version.
    /// Name, version and the first 12 hex digits of the file's SHA-256.
    pub fn guest_version(&self) -> String {
        let hash = self.guest.component().hash();
        let short = hash.get(..12).unwrap_or(hash);
        let info = self.guest.info();
        format!("{} {} ({short})", info.name, info.version)
    }

    /// Serve until shut down; then finish (or cut) replies in flight, close
    /// the agent connections and flush the database. An error says why the
    /// bot had to stop ([`Control::Fail`]).
    pub async fn run(mut self) -> Result<(), String> {
        let mut sweep = tokio::time::interval(Duration::from_secs(15));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutdown: Option<Shutdown> = None;
        let mut failure: Option<String> = None;
        loop {
            if let Some(s) = &shutdown
                && self.drained(s.deadline)
            {
                tracing::info!(cut = s.cut, "stopped: every reply finished");
                break;
            }
            let deadline = shutdown.as_ref().map(|s| s.deadline);
            tokio::select! {
                biased;
                control = self.control.recv() => match control {
                    Some(Control::Fail(why)) => {
                        tracing::error!("stopping: {why}");
                        failure.get_or_insert(why);
                        self.begin_shutdown(&mut shutdown);
                    }
                    Some(Control::Shutdown) | None => self.begin_shutdown(&mut shutdown),
                    Some(Control::Reload { request }) => self.begin_swap(request),
                    Some(Control::Compiled(result)) => self.finish_swap(result),
                    Some(Control::Flush(done)) => {
                        // The sender sent its events before this message,
                        // so they are all in the channel by now: handle
                        // those, not what keeps arriving after them.
                        for _ in 0..self.inbound.len() {
                            let Ok(event) = self.inbound.try_recv() else { break };
                            self.deliver(event);
                        }
                        for _ in 0..self.events.len() {
                            let Ok(event) = self.events.try_recv() else { break };
                            self.deliver(event);
                        }
                        let _ = done.send(());
                    }
                    Some(Control::Timer { id, token }) => {
                        if self.timers.get(&id).is_some_and(|t| t.0 == token) {
                            self.timers.remove(&id);
                            self.deliver(Event::Timer(id));
                        }
                    }
                },
                // Never `None`: the loop holds a sender of each itself. A
                // front end's task that dies is noticed by its supervisor.
                Some(event) = self.events.recv() => self.deliver(event),
                Some(event) = self.inbound.recv() => {
                    // Chunks that piled up while the loop was busy go as one.
                    let (event, after) = backlog::coalesce(event, || self.inbound.try_recv().ok());
                    self.deliver(event);
                    if let Some(after) = after {
                        self.deliver(after);
                    }
                }
                _ = sweep.tick() => self.agents.sweep(),
                _ = sleep_until_opt(deadline) => {
                    let Some(s) = shutdown.as_mut() else { continue };
                    if s.cut {
                        tracing::warn!("stopped with replies still unfinished");
                        break;
                    }
                    // Out of grace: cut the replies in flight. The guest
                    // hears `disconnected` and marks them incomplete.
                    tracing::warn!(
                        in_flight = self.agents.in_flight(),
                        "grace period over: cutting replies in flight"
                    );
                    self.agents.close_all();
                    s.cut = true;
                    s.deadline = Instant::now() + Duration::from_secs(5);
                }
            }
            self.metrics.agent_connections.set(self.agents.len() as i64);
            self.metrics
                .agent_in_flight
                .set(self.agents.in_flight() as i64);
        }
        self.agents.close_all();
        for (_, (_, _, abort)) in self.timers.drain() {
            abort.abort();
        }
        // Dropping the store closes SQLite, which checkpoints its WAL.
        failure.map_or(Ok(()), Err)
    }

    /// Stop taking in new conversations and finish what is going on.
    fn begin_shutdown(&mut self, shutdown: &mut Option<Shutdown>) {
        if shutdown.is_some() {
            return;
        }
        tracing::info!("shutting down: finishing replies in flight");
        self.metrics.set_health(Health::ShuttingDown);
        // No new conversations: what is already queued is still handled.
        self.matrix.stop_receiving();
        *shutdown = Some(Shutdown {
            deadline: Instant::now() + self.config.shutdown_grace,
            cut: false,
        });
    }

    /// Shutdown may end: no reply in flight, no guest timer due within the
    /// grace period (a throttled final edit waits on one; a file waiting
    /// for its text, minutes away, is the next run's), nothing unanswered
    /// or unread.
    fn drained(&self, deadline: Instant) -> bool {
        self.agents.in_flight() == 0
            && self.timers.values().all(|t| t.1 > deadline)
            && self.matrix.pending() == 0
            && self.events.is_empty()
            && self.inbound.is_empty()
    }

    fn deliver(&mut self, event: Event) {
        self.metrics.event_handled(now_ms());
        self.agents.observe(&event);
        let kind = event_kind(&event);
        self.metrics.events.get_or_create(&Kind { kind }).inc();
        let started = std::time::Instant::now();
        let delivery = guest_call(|| self.guest.handle_retrying(&event, &mut self.kv, now_ms()));
        self.metrics
            .guest_call_seconds
            .observe(started.elapsed().as_secs_f64());
        let attempts = delivery.failures.len();
        // For a new guest's probation: an event it lost (failed on both
        // attempts), not one a second attempt saved (a timeout on a loaded
        // machine) nor one the host's own store failed.
        let failed = match (&delivery.output, delivery.failures.last()) {
            (None, Some(f)) if !matches!(f.error, GuestError::Store(_)) => {
                Some(f.error.to_string())
            }
            _ => None,
        };
        for (i, failure) in delivery.failures.into_iter().enumerate() {
            // What the guest logged before it failed (a panic's message).
            log_guest_lines(failure.logs);
            self.count_failure(&failure.error);
            let e = failure.error;
            if delivery.output.is_some() || i + 1 < attempts {
                tracing::warn!(
                    event = kind,
                    "the guest failed on an event: {e}; delivered again to a fresh instance"
                );
            } else {
                tracing::error!(
                    event = kind,
                    "the guest failed on an event, which is dropped: {e}; the next event runs on a fresh instance"
                );
            }
        }
        if let Some(out) = delivery.output {
            self.apply(out);
        }
        self.watch_probation(failed.as_deref());
    }

    /// Feed a new guest's probation one event's outcome.
    fn watch_probation(&mut self, failure: Option<&str>) {
        let Some(probation) = self.probation.as_mut() else {
            return;
        };
        match probation.observe(failure, std::time::Instant::now()) {
            Verdict::Watching => {}
            Verdict::Passed => {
                tracing::info!(guest = %self.guest_version(), "swap: the new guest passed its probation");
                self.probation = None;
            }
            Verdict::RollBack(why) => {
                if let Some(probation) = self.probation.take() {
                    self.roll_back(probation, why);
                }
            }
        }
    }

    /// Put records set aside (`bad/KEY`) back under their keys.
    fn restore(&mut self, set_aside: &[String]) {
        let mut writes = Vec::new();
        for bad in set_aside {
            let Some(key) = bad.strip_prefix("bad/") else {
                continue;
            };
            if let Ok(Some(value)) = self.kv.get(bad) {
                writes.push((key.to_string(), Some(value)));
                writes.push((bad.clone(), None));
            }
        }
        if let Err(e) = self.kv.commit(writes) {
            tracing::error!("cannot put back the records the new guest set aside: {e}");
        }
    }

    /// Swap back to the guest a failing one replaced, and refuse the
    /// failing file until it changes.
    fn roll_back(&mut self, probation: Probation<GuestComponent>, why: String) {
        let failing = self.guest_version();
        let back = guest_call(|| self.guest.swap(&probation.previous, &mut self.kv, now_ms()));
        match back {
            Ok(out) => {
                self.apply(out);
                self.history.serving(&probation.previous);
                self.metrics
                    .swaps
                    .get_or_create(&Kind {
                        kind: "rolled_back",
                    })
                    .inc();
                let hash = &probation.hash;
                let message = format!(
                    "{failing} {why}: rolled back to {}; that file (sha256 {}) is refused until it changes",
                    self.guest_version(),
                    hash.get(..12).unwrap_or(hash)
                );
                tracing::error!("swap: {message}");
                self.rolled_back = Some(probation.hash);
                self.record_serving();
                self.answer_reload(None, ReloadOutcome::RolledBack(message));
            }
            Err(e) => {
                tracing::error!(
                    "swap: {failing} {why}, but the guest before it does not start again ({e}): it keeps serving"
                );
            }
        }
    }

    fn count_failure(&self, e: &GuestError) {
        self.metrics
            .guest_failures
            .get_or_create(&Kind {
                kind: failure_kind(e),
            })
            .inc();
    }

    fn apply(&mut self, out: Output) {
        log_guest_lines(out.logs);
        for effect in out.effects {
            self.metrics
                .effects
                .get_or_create(&Kind {
                    kind: effect.kind(),
                })
                .inc();
            match effect {
                Effect::Matrix(m) => self.matrix.execute(m),
                Effect::Agent(AgentEffect::Submit {
                    request,
                    context_id,
                    message,
                }) => self.agents.submit(&context_id, request, message),
                Effect::Agent(AgentEffect::Cancel { context_id }) => {
                    self.agents.cancel(&context_id)
                }
                Effect::Agent(AgentEffect::Reset { context_id }) => self.agents.reset(&context_id),
                Effect::Agent(AgentEffect::Feedback {
                    context_id,
                    feedback,
                }) => self.agents.feedback(&context_id, feedback),
                Effect::Timer(TimerEffect::Set { id, delay_ms }) => self.set_timer(id, delay_ms),
                Effect::Timer(TimerEffect::Cancel { id }) => {
                    if let Some((_, _, abort)) = self.timers.remove(&id) {
                        abort.abort();
                    }
                }
                Effect::Host(HostEffect::Reload { request }) => self.begin_swap(Some(request)),
                Effect::Host(HostEffect::Rollback { request }) => self.roll_back_asked(request),
            }
        }
    }

    fn set_timer(&mut self, id: u64, delay_ms: u64) {
        self.timer_token += 1;
        let token = self.timer_token;
        let control = self.handle.control.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            let _ = control.send(Control::Timer { id, token });
        });
        let due = Instant::now() + Duration::from_millis(delay_ms);
        if let Some((_, _, old)) = self.timers.insert(id, (token, due, task.abort_handle())) {
            old.abort();
        }
    }

    fn begin_swap(&mut self, request: Option<u64>) {
        if matches!(self.config.source, GuestSource::Builtin(_)) {
            self.answer_reload(
                request,
                ReloadOutcome::Refused(
                    "this bot runs its built-in guest: set guest.path to swap it".into(),
                ),
            );
            return;
        }
        if !self.swap_requests.is_empty() {
            // A compile is running; it may have read the file before
            // this trigger, which is answered by the next one.
            add_request(&mut self.next_swap_requests, request);
            return;
        }
        add_request(&mut self.swap_requests, request);
        self.start_compile();
    }

    /// Compile for the requests in `swap_requests` (never empty while a
    /// compile runs: that is how one is known to be running).
    fn start_compile(&mut self) {
        if let GuestSource::File(path) = &self.config.source {
            tracing::info!(path = %path.display(), "swap: compiling the new guest");
        }
        let embedding = self.embedding.clone();
        let source = self.config.source.clone();
        let cache_dir = self.config.cache_dir.clone();
        let control = self.handle.control.clone();
        // On the loop only what is cheap: how to read the store's copy.
        let check = match self.config.swap_check {
            SwapCheck::Contract => Ok(None),
            SwapCheck::Behaviour { seeds } => self
                .kv
                .snapshotter()
                .map(|s| {
                    let running = self.guest.component().clone();
                    Some((s, seeds, self.config.host_info.clone(), running))
                })
                .map_err(|e| format!("cannot read the store to check the new guest: {e}")),
        };
        let rolled_back = self.rolled_back.clone();
        // A file an admin stepped back from comes back by an admin's
        // reload only, not by a touch of the file or a SIGHUP.
        let stepped_back = self
            .stepped_back
            .clone()
            .filter(|_| self.swap_requests.iter().all(Option::is_none));
        let kept = self.kept.clone();
        tokio::task::spawn_blocking(move || {
            let result = check.and_then(|check| {
                let wasm = read_source(&source).map_err(|e| e.to_string())?;
                let hash = surfaces_embed::content_hash(&wasm);
                if rolled_back.as_deref() == Some(hash.as_str()) {
                    return Err(refused_file(&hash));
                }
                if stepped_back.as_deref() == Some(hash.as_str()) {
                    return Err(format!(
                        "an admin stepped back from this file (sha256 {}): an admin's reload takes it again",
                        short(&hash)
                    ));
                }
                let (component, cache) = embedding
                    .compile_cached(&wasm, &cache_dir)
                    .map_err(|e| e.to_string())?;
                tracing::debug!(?cache, "guest compiled");
                // Kept before it may serve, so a restart can serve it again.
                if let Err(e) = kept.keep(&wasm) {
                    tracing::warn!("cannot keep the new guest's file: {e}");
                }
                let mut no_way_back = None;
                if let (Some((snapshot, seeds, info, running)), GuestSource::File(path)) =
                    (check, &source)
                {
                    let shadow = snapshot().map_err(|e| {
                        format!("cannot read the store to check the new guest: {e}")
                    })?;
                    let passed = swapcheck::check(
                        &wasm,
                        path,
                        shadow,
                        &info,
                        seeds,
                        &cache_dir,
                        Some(&running),
                    )
                    .map_err(|why| format!("the new guest failed its behaviour check: {why}"))?;
                    tracing::info!(
                        runs = passed.runs,
                        records = passed.records,
                        took_ms = passed.took.as_millis() as u64,
                        "swap: the new guest passed its behaviour check"
                    );
                    // Not a refusal: a format old guests cannot read is the
                    // new guest's to choose, but no rollback would start.
                    no_way_back = passed.no_way_back;
                }
                Ok(Compiled {
                    component,
                    wasm: wasm.into_owned(),
                    no_way_back,
                })
            });
            // The compile and the behaviour check are over: what they
            // freed goes back to the system.
            crate::heap::release_free_memory();
            let _ = control.send(Control::Compiled(result));
        });
    }

    fn finish_swap(&mut self, result: Result<Compiled, String>) {
        let requests = std::mem::take(&mut self.swap_requests);
        let switch = std::time::Instant::now();
        // The guest to go back to: the last one past its probation.
        let previous = match &self.probation {
            Some(p) => p.previous.clone(),
            None => self.guest.component().clone(),
        };
        let replaced = self.guest.component().clone();
        // Only a guest past its probation is one to go back to: one still
        // on it would take a rollback forth, to a guest not yet proven.
        let replaced_proven = self.probation.is_none();
        let running = replaced.hash().to_string();
        let rolled_back = self.rolled_back.clone();
        let bad_before = self.kv.keys("bad/").unwrap_or_default();
        let outcome = result
            .and_then(|c| match rolled_back {
                // Compiled before the rollback, from the same file.
                Some(h) if h == c.component.hash() => Err(refused_file(&h)),
                _ => Ok(c),
            })
            .and_then(|c| {
                guest_call(|| self.guest.swap(&c.component, &mut self.kv, now_ms()))
                    .map(|out| (out, c))
                    .map_err(|e| e.to_string())
            });
        // The one part of a swap the loop waits for: the new instance's init.
        let stall_us = switch.elapsed().as_micros() as u64;
        let outcome = match outcome {
            Ok((out, compiled)) => {
                let version = self.guest_version();
                tracing::info!(guest = %version, stall_us, "swap: the new guest is serving");
                self.metrics.swaps.get_or_create(&Kind { kind: "ok" }).inc();
                self.apply(out);
                let hash = compiled.component.hash().to_string();
                if hash != running && replaced_proven {
                    self.history.left(replaced);
                }
                self.history.serving(&compiled.component);
                self.stepped_back = None;
                // Kept again: a record written while it was being checked
                // may have dropped its file.
                if let Err(e) = self.kept.keep_as(&hash, &compiled.wasm) {
                    tracing::warn!("cannot keep the new guest's file: {e}");
                }
                self.record_serving();
                let now = std::time::Instant::now();
                let set_aside: Vec<String> = self
                    .kv
                    .keys("bad/")
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|k| !bad_before.contains(k))
                    .collect();
                if let Some(record) = set_aside.first() {
                    // Written after the check's copy was read: the live
                    // store has a record the new guest cannot read. Put
                    // them back where they were for the guest going back.
                    self.restore(&set_aside);
                    self.probation = None;
                    let why = format!(
                        "could not read the record {} on the live store",
                        record.strip_prefix("bad/").unwrap_or(record)
                    );
                    self.roll_back(Probation::new(previous, hash, now), why.clone());
                    Err(format!("{version} {why}: rolled back"))
                } else if let Some(why) = compiled.no_way_back {
                    // Nothing to roll back to: no probation.
                    self.probation = None;
                    tracing::warn!("swap: no way back to the guest before: {why}");
                    Ok(format!(
                        "{version}; there is no way back to the guest before it ({why})"
                    ))
                } else if hash == running {
                    // The same file again: nothing new to watch.
                    Ok(version)
                } else {
                    self.probation = Some(Probation::new(previous, hash, now));
                    Ok(version)
                }
            }
            Err(why) => {
                tracing::error!("swap refused, the previous guest keeps serving: {why}");
                self.metrics
                    .swaps
                    .get_or_create(&Kind { kind: "refused" })
                    .inc();
                Err(why)
            }
        };
        let outcome = match outcome {
            Ok(version) => ReloadOutcome::Swapped(version),
            Err(why) => ReloadOutcome::Refused(why),
        };
        for request in requests {
            self.answer_reload(request, outcome.clone());
        }
        // Everything that arrived meanwhile shares one more compile.
        if !self.next_swap_requests.is_empty() {
            self.swap_requests = std::mem::take(&mut self.next_swap_requests);
            self.start_compile();
        }
    }

    /// An admin's `rollback`: back to the latest guest of another file
    /// that ran before this one, if it starts on the store as it is now.
    /// Not while a swap is being checked (it would land right after).
    fn roll_back_asked(&mut self, request: u64) {
        let outcome = if !self.swap_requests.is_empty() {
            ReloadOutcome::Refused(
                "a new guest is being checked for a swap: ask again once it is done".into(),
            )
        } else if let Some(target) = self.history.take_latest() {
            let leaving = self.guest_version();
            let leaving_hash = self.guest.component().hash().to_string();
            match guest_call(|| self.guest.swap(&target, &mut self.kv, now_ms())) {
                Ok(out) => {
                    self.apply(out);
                    self.probation = None;
                    self.metrics
                        .swaps
                        .get_or_create(&Kind {
                            kind: "rolled_back",
                        })
                        .inc();
                    let message = format!(
                        "{leaving} was asked to step back: {} serves again",
                        self.guest_version()
                    );
                    tracing::warn!("swap: {message}");
                    // The guest the file holds, left first; a second step
                    // back leaves an earlier guest, not the file's.
                    self.stepped_back.get_or_insert(leaving_hash);
                    self.record_serving();
                    ReloadOutcome::RolledBack(message)
                }
                Err(e) => {
                    let hash = target.hash();
                    let why = format!(
                        "the guest before (sha256 {}) does not start on the store as it is now: {e}",
                        hash.get(..12).unwrap_or(hash)
                    );
                    tracing::warn!("rollback refused: {why}");
                    self.history.left(target);
                    ReloadOutcome::Refused(why)
                }
            }
        } else {
            ReloadOutcome::Refused(NO_EARLIER_GUEST.into())
        };
        self.answer_reload(Some(request), outcome);
    }

    /// Write down which guest serves, for the next start (`kept.rs`).
    fn record_serving(&self) {
        let serving = Serving {
            serving: self.guest.component().hash().to_string(),
            refused: self.rolled_back.clone(),
            stepped_back: self.stepped_back.clone(),
            earlier: self.history.hashes(),
        };
        if let Err(e) = self.kept.record(&serving) {
            tracing::warn!("cannot record which guest serves: {e}");
        }
    }

    /// Tell the guest how a swap went (to the new guest if it succeeded).
    /// Through the channel, never nested in the delivery of another event:
    /// the rest of that event's effects come first.
    fn answer_reload(&mut self, request: Option<u64>, outcome: ReloadOutcome) {
        let _ = self.handle.events.send(Event::ReloadResult(ReloadResult {
            request: request.unwrap_or(HOST_RELOAD),
            outcome,
        }));
    }
}

/// A candidate compiled (and checked) off the loop.
#[derive(Debug)]
pub struct Compiled {
    pub component: GuestComponent,
    /// Its file's bytes, kept again at the switch (`kept.rs`).
    pub wasm: Vec<u8>,
    /// Why the running guest could not take over again after it.
    pub no_way_back: Option<String>,
}

fn refused_file(hash: &str) -> String {
    format!(
        "this file (sha256 {}) was rolled back after it failed; change it to swap again",
        hash.get(..12).unwrap_or(hash)
    )
}

/// Note a swap request; the host's own triggers (`None`) count once.
fn add_request(requests: &mut Vec<Option<u64>>, request: Option<u64>) {
    if request.is_some() || !requests.contains(&None) {
        requests.push(request);
    }
}

/// Run a guest call off the async context. The guest is synchronous (and
/// bounded by its epoch budget), and WASI's synchronous bindings enter
/// tokio themselves (`block_on`), which panics on a worker thread that is
/// driving tasks. `block_in_place` hands this worker's tasks to another
/// thread for the call's duration; it needs the multi-threaded runtime.
fn guest_call<R>(call: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(call)
        }
        _ => call(),
    }
}

struct Shutdown {
    deadline: Instant,
    /// The grace period is over and the connections were closed.
    cut: bool,
}

#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error("cannot read the guest {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Embed(#[from] surfaces_embed::EmbedError),
}

/// Read and compile the guest (through the cache).
fn read_source(source: &GuestSource) -> Result<std::borrow::Cow<'static, [u8]>, LoadError> {
    Ok(match source {
        GuestSource::File(path) => std::fs::read(path)
            .map_err(|source| LoadError::Read {
                path: path.clone(),
                source,
            })?
            .into(),
        GuestSource::Builtin(bytes) => (*bytes).into(),
    })
}

/// The guest a start serves, and what the last run recorded.
struct FirstGuest {
    component: GuestComponent,
    /// The guest file's bytes, when `component` is a kept guest instead:
    /// what serves if that one does not start.
    file: Option<std::borrow::Cow<'static, [u8]>>,
    history: History,
    last: Serving,
}

/// The guest file, unless the last run rolled back from the file as it is
/// (then the guest it went back to, kept by hash); and the earlier guests
/// for `rollback`, the one the last run served among them if it is not
/// this one (the file was changed while the bot was down).
fn first_guest(
    embedding: &Embedding,
    config: &RuntimeConfig,
    kept: &Kept,
) -> Result<FirstGuest, LoadError> {
    let file = read_source(&config.source)?;
    let file_hash = surfaces_embed::content_hash(&file);
    let mut last = kept.serving().unwrap_or_default();
    let mut chosen = None;
    if last.left(&file_hash) && last.serving != file_hash {
        let back = kept
            .read(&last.serving)
            .ok_or_else(|| "it is no longer kept".to_string())
            .and_then(|bytes| {
                let compiled = embedding.compile_cached(&bytes, &config.cache_dir);
                compiled.map_err(|e| e.to_string()).map(|(c, _)| c)
            });
        match back {
            Ok(component) => {
                tracing::warn!(
                    "the guest file (sha256 {}) was rolled back from: serving the guest the last run went back to (sha256 {}) until the file changes or an admin reloads",
                    short(&file_hash),
                    short(&last.serving)
                );
                chosen = Some(component);
            }
            Err(e) => tracing::warn!(
                "the guest the last run went back to (sha256 {}) cannot serve ({e}): serving the guest file",
                short(&last.serving)
            ),
        }
    }
    let (component, file) = match chosen {
        Some(component) => (component, Some(file)),
        None => {
            // The file serves: what an admin stepped back from no longer
            // holds it back.
            last.stepped_back = None;
            let (component, cache) = embedding.compile_cached(&file, &config.cache_dir)?;
            tracing::debug!(?cache, "guest compiled");
            if let Err(e) = kept.keep_as(component.hash(), &file) {
                tracing::warn!("cannot keep the guest's file: {e}");
            }
            (component, None)
        }
    };
    let mut history = History::default();
    let before = last.earlier.iter().chain(
        (!last.serving.is_empty() && last.serving != component.hash()).then_some(&last.serving),
    );
    for hash in before {
        let earlier = kept
            .read(hash)
            .map(|bytes| embedding.compile_cached(&bytes, &config.cache_dir));
        match earlier {
            Some(Ok((earlier, _))) => history.left(earlier),
            Some(Err(e)) => tracing::warn!(
                "an earlier guest (sha256 {}) no longer compiles: {e}",
                short(hash)
            ),
            None => tracing::debug!(
                "an earlier guest (sha256 {}) is no longer kept",
                short(hash)
            ),
        }
    }
    history.serving(&component);
    Ok(FirstGuest {
        component,
        file,
        history,
        last,
    })
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

fn scope_is_shared(info: &HostInfo) -> bool {
    info.settings
        .iter()
        .find(|(k, _)| k == "context_scope")
        .is_none_or(|(_, v)| v == SHARED)
}

fn event_kind(event: &Event) -> &'static str {
    match event {
        Event::Message(_) => "message",
        Event::Invite(_) => "invite",
        Event::MembersChanged(_) => "members_changed",
        Event::MatrixResult(_) => "matrix_result",
        Event::AgentChunk(_) => "agent_chunk",
        Event::AgentEnd(_) => "agent_end",
        Event::AgentError(_) => "agent_error",
        Event::AgentStatus(_) => "agent_status",
        Event::Timer(_) => "timer",
        Event::ReloadResult(_) => "reload_result",
        Event::Undecryptable(_) => "undecryptable",
        Event::Reaction(_) => "reaction",
        Event::MessageEdited(_) => "message_edited",
        Event::Redacted(_) => "redacted",
        Event::AgentAttachment(_) => "agent_attachment",
    }
}

/// The guest's log lines, under the `guest` target.
fn log_guest_lines(lines: Vec<LogLine>) {
    for line in lines {
        let message = line.message;
        match line.level {
            LogLevel::Trace => tracing::trace!(target: "guest", "{message}"),
            LogLevel::Debug => tracing::debug!(target: "guest", "{message}"),
            LogLevel::Info => tracing::info!(target: "guest", "{message}"),
            LogLevel::Warn => tracing::warn!(target: "guest", "{message}"),
            LogLevel::Error => tracing::error!(target: "guest", "{message}"),
        }
    }
}

fn failure_kind(e: &GuestError) -> &'static str {
    match e {
        GuestError::Trap(_) => "trap",
        GuestError::Timeout => "timeout",
        GuestError::OutOfMemory => "out_of_memory",
        GuestError::Instantiate(_) => "instantiate",
        GuestError::Rejected(_) => "rejected",
        GuestError::Failed(_) => "error",
        GuestError::OverCap(_) => "over_cap",
        GuestError::Store(_) => "store",
    }
}
