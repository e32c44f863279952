//! The one embedding of the surfaces guest, shared by the native host and the
//! simulator (they differ only in the I/O behind the imports).
//!
//! - [`Embedding`]: the wasmtime engine and a linker holding every import.
//! - [`GuestComponent`]: a compiled, type-checked guest, ready to instantiate.
//! - [`Guest`]: a running generation; it delivers events one at a time under
//!   a time budget and a memory cap, and contains traps.
//! - [`AgentSession`]: the host's half of the agent protocol, without I/O,
//!   so both hosts follow the same client rules.
//!
//! An event is handled transactionally: imports only record [`Effect`]s and
//! store writes; both are handed to the host when the call returns `Ok`,
//! and dropped when it returns an error, traps or runs out of budget. A trapped wasmtime store can
//! never be entered again, so the next event runs on a fresh instance.

pub mod access;
pub mod agent;
mod bindings;
mod content;
mod ctx;
mod effect;
pub mod inbox;
mod kv;
pub mod media;
mod ticker;
pub mod version;

use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store, Trap};

pub use agent::{Action, AgentSession, Link, MAX_ATTACHMENT_BYTES, ended_request};
pub use bindings::surfaces::bot::types::{
    AgentAttachment, AgentChunk, AgentEnd, AgentError, AgentErrorKind, AgentFeedback, AgentMessage,
    AgentStatus, Attachment, AttachmentContent, ConnectionState, EditTarget, Event, GuestInfo,
    HostInfo, Invite, LogLevel, MatrixError, MatrixErrorKind, MatrixResult, Media, MediaKind,
    MembersChanged, MessageContent, MessageEdited, Reaction, Redacted, ReloadOutcome, ReloadResult,
    RoomMessage, Sender, Undecryptable,
};
pub use content::matrix_content;
pub use ctx::LogLine;
pub use effect::{AgentEffect, Effect, HostEffect, MatrixEffect, TimerEffect};
pub use kv::{BoxedKv, KvError, KvStore, MemoryKv, Snapshotter, Write};
pub use ticker::EPOCH_TICK;

use ctx::Ctx;
use ticker::{Running, Ticker};
pub use version::Contract;
use version::{Instance, Pre};

/// How a guest call is bounded in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    /// Wall-clock budget: a call may run for this many [`EPOCH_TICK`]s (the
    /// embedding's own thread ticks while a call runs; see `ticker`).
    Epoch { ticks: u64 },
    /// Deterministic budget in wasmtime fuel (about one unit per wasm
    /// instruction); the simulator uses this so a looping guest stops at the
    /// same point on every run.
    Fuel { units: u64 },
}

impl Budget {
    /// A wall-clock budget of `ms` milliseconds, rounded up to whole ticks.
    pub fn epoch_ms(ms: u64) -> Budget {
        Budget::Epoch {
            ticks: ticker::ticks_for_ms(ms),
        }
    }
}

/// Sandbox limits for every guest instance.
#[derive(Clone, Copy, Debug)]
pub struct Sandbox {
    pub budget: Budget,
    /// Cap on the guest's linear memory, in bytes.
    pub memory_bytes: usize,
    /// Where WASI's random streams come from.
    pub entropy: Entropy,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox {
            budget: Budget::Epoch { ticks: 20 },
            memory_bytes: 64 << 20,
            entropy: Entropy::Os,
        }
    }
}

/// The source of WASI's random streams (`wasi:random`, secure and
/// insecure), which a guest reaches through std (a `HashMap`'s keys, say).
/// WASI's clocks need no such choice: they always read the call's time
/// (see `ctx`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entropy {
    /// The operating system's entropy: the native host.
    Os,
    /// Streams seeded from this value and the instance's number: the
    /// simulator, whose runs must replay byte for byte.
    Seeded(u64),
}

/// Why the embedding could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("cannot set up the wasm engine: {0}")]
    Engine(String),
    #[error("not a valid surfaces guest: {0}")]
    Invalid(String),
}

/// What went wrong while the guest handled one call. The guest instance is
/// gone after every variant but [`GuestError::Rejected`]; the next call runs
/// on a fresh instance.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("guest trapped: {0}")]
    Trap(String),
    #[error("guest exceeded its time budget")]
    Timeout,
    #[error("guest exceeded its memory cap")]
    OutOfMemory,
    #[error("guest could not be instantiated: {0}")]
    Instantiate(String),
    /// `init` returned an error: the guest refuses this configuration.
    #[error("guest refused to start: {0}")]
    Rejected(String),
    /// `handle` returned an error. Its writes and effects are dropped, as
    /// after a trap, and so is the instance: its memory may have moved past
    /// what the store holds.
    #[error("guest returned an error: {0}")]
    Failed(String),
    /// The call handed the host more than one call may (effects, log
    /// bytes, store writes): it fails like a trap.
    #[error("guest went past the per-call cap on {0}")]
    OverCap(&'static str),
    /// The host's store failed to commit the event's writes. The instance
    /// is dropped too: its memory has moved past what the store holds.
    #[error("store: {0}")]
    Store(#[from] KvError),
}

impl GuestError {
    /// Whether the instance died (trap, timeout) as opposed to the call
    /// failing cleanly.
    pub fn killed_instance(&self) -> bool {
        !matches!(self, GuestError::Rejected(_))
    }
}

/// The engine and linker. Cheap to clone; one per process is enough.
#[derive(Clone)]
pub struct Embedding {
    inner: Arc<EmbeddingInner>,
}

struct EmbeddingInner {
    engine: Engine,
    linker: Linker<Ctx>,
    sandbox: Sandbox,
    /// Advances the epoch while a call runs (`Budget::Epoch` only).
    ticker: Option<Ticker>,
}

impl fmt::Debug for Embedding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Embedding")
            .field("sandbox", &self.inner.sandbox)
            .finish_non_exhaustive()
    }
}

impl Embedding {
    pub fn new(sandbox: Sandbox) -> Result<Self, EmbedError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        match sandbox.budget {
            Budget::Epoch { .. } => {
                config.epoch_interruption(true);
            }
            Budget::Fuel { .. } => {
                config.consume_fuel(true);
            }
        }
        let engine = Engine::new(&config).map_err(|e| EmbedError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        // A wasm32-wasip2 guest imports WASI through std (stdio, clocks,
        // random, environment). It gets a context with nothing in it.
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| EmbedError::Engine(e.to_string()))?;
        version::add_to_linker(&mut linker).map_err(|e| EmbedError::Engine(e.to_string()))?;
        let ticker =
            match sandbox.budget {
                Budget::Epoch { .. } => Some(Ticker::start(engine.clone()).map_err(|e| {
                    EmbedError::Engine(format!("cannot start the epoch ticker: {e}"))
                })?),
                Budget::Fuel { .. } => None,
            };
        Ok(Embedding {
            inner: Arc::new(EmbeddingInner {
                engine,
                linker,
                sandbox,
                ticker,
            }),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub fn sandbox(&self) -> Sandbox {
        self.inner.sandbox
    }

    /// Keep the epoch advancing until the guard drops (a wall-clock
    /// budget only): held across every guest call.
    fn running(&self) -> Option<Running> {
        self.inner.ticker.as_ref().map(Ticker::running)
    }

    /// Compile a guest from its `.wasm` bytes and check that it fits the
    /// contract (imports satisfied, exports present).
    pub fn compile(&self, wasm: &[u8]) -> Result<GuestComponent, EmbedError> {
        let component = Component::new(&self.inner.engine, wasm)
            .map_err(|e| EmbedError::Invalid(format!("{e:#}")))?;
        self.prepare(component, content_hash(wasm))
    }

    /// Like [`Embedding::compile`], through a cache of precompiled
    /// artifacts in `dir`, keyed by the wasm's SHA-256 and the engine's
    /// compatibility hash (a different wasmtime or engine setting misses).
    /// A cache that cannot be read or written only costs a compile.
    pub fn compile_cached(
        &self,
        wasm: &[u8],
        dir: &Path,
    ) -> Result<(GuestComponent, CacheUse), EmbedError> {
        let path = dir.join(self.cache_key(wasm));
        // Read into memory rather than mmap the file: a file changed under
        // a mapping would crash the host (SIGBUS), a copy cannot.
        if let Ok(bytes) = std::fs::read(&path) {
            // SAFETY: wasmtime requires that deserialized bytes come from
            // `Component::serialize` of a compatible engine. The file is
            // named by the engine's compatibility hash and is only written
            // by `store_artifact` (atomically, by rename) in a directory the
            // host owns; wasmtime also checks the engine's settings.
            let loaded = unsafe { Component::deserialize(&self.inner.engine, &bytes) };
            match loaded {
                Ok(component) => {
                    return Ok((self.prepare(component, content_hash(wasm))?, CacheUse::Hit));
                }
                Err(e) => {
                    tracing::warn!("ignoring unreadable cached guest {}: {e:#}", path.display())
                }
            }
        }
        let component = Component::new(&self.inner.engine, wasm)
            .map_err(|e| EmbedError::Invalid(format!("{e:#}")))?;
        let guest = self.prepare(component.clone(), content_hash(wasm))?;
        let stored = store_artifact(&component, dir, &path);
        if let Err(e) = &stored {
            tracing::warn!("cannot cache the compiled guest in {}: {e}", dir.display());
        }
        Ok((
            guest,
            if stored.is_ok() {
                CacheUse::Stored
            } else {
                CacheUse::Uncached
            },
        ))
    }

    fn cache_key(&self, wasm: &[u8]) -> String {
        let mut engine = std::hash::DefaultHasher::new();
        self.inner
            .engine
            .precompile_compatibility_hash()
            .hash(&mut engine);
        format!("{}-{:016x}.cwasm", content_hash(wasm), engine.finish())
    }

    fn prepare(&self, component: Component, hash: String) -> Result<GuestComponent, EmbedError> {
        let contract = version::check(&version::imported(&component, &self.inner.engine))
            .map_err(EmbedError::Invalid)?;
        let pre = Pre::new(&self.inner.linker, &component, contract)
            .map_err(|e| EmbedError::Invalid(format!("{e:#}")))?;
        Ok(GuestComponent {
            embedding: self.clone(),
            pre,
            contract,
            hash,
        })
    }
}

/// A `rollback`'s refusal when no guest of another file ran before this
/// one in this run of the host (both hosts say it in the same words).
pub const NO_EARLIER_GUEST: &str = "no guest of another file served before this one (the host keeps the last three): nothing to go back to";

/// A guest file's identity: the SHA-256 of its bytes, in hex.
pub fn content_hash(wasm: &[u8]) -> String {
    Sha256::digest(wasm)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where a compiled guest came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheUse {
    /// Loaded from the cache: no compile.
    Hit,
    /// Compiled, and stored for next time.
    Stored,
    /// Compiled; the cache could not be written.
    Uncached,
}

fn store_artifact(component: &Component, dir: &Path, path: &Path) -> std::io::Result<()> {
    let bytes = component
        .serialize()
        .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
    std::fs::create_dir_all(dir)?;
    // Write then rename: a reader never sees half a file.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// A compiled guest that satisfies the contract. Cheap to clone.
#[derive(Clone)]
pub struct GuestComponent {
    embedding: Embedding,
    pre: Pre,
    /// The contract version it was built for.
    contract: Contract,
    /// [`content_hash`] of the wasm it was compiled from.
    hash: String,
}

impl GuestComponent {
    /// The contract version it was built for.
    pub fn contract(&self) -> Contract {
        self.contract
    }

    /// The SHA-256 of the wasm it was compiled from, in hex.
    pub fn hash(&self) -> &str {
        &self.hash
    }
}

impl fmt::Debug for GuestComponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestComponent").finish_non_exhaustive()
    }
}

/// What one call produced, to be carried out by the host.
#[derive(Debug, Default)]
pub struct Output {
    pub effects: Vec<Effect>,
    pub logs: Vec<LogLine>,
    pub cost: Cost,
}

/// What a call cost the guest's instance: for `surfaces guest test`'s
/// report, and a candidate's check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// Fuel the call burnt (about one unit per wasm instruction); `None`
    /// under a wall-clock budget.
    pub fuel: Option<u64>,
    /// The instance's linear memory once the call returned, in bytes.
    pub memory_bytes: u64,
}

/// One event's delivery by [`Guest::handle_retrying`].
#[derive(Debug)]
pub struct Delivery {
    /// What the successful attempt produced; `None` when the event was
    /// dropped (it failed on every attempt).
    pub output: Option<Output>,
    /// The failed attempts, in order.
    pub failures: Vec<Attempt>,
}

/// A failed attempt at an event: why, and the log lines the guest wrote
/// before it failed (a panic's message among them).
#[derive(Debug)]
pub struct Attempt {
    pub error: GuestError,
    pub logs: Vec<LogLine>,
}

/// A guest generation: one component, one host configuration, and the
/// instance currently serving it (recreated after a trap).
pub struct Guest {
    component: GuestComponent,
    info: HostInfo,
    live: Option<Live>,
    guest_info: GuestInfo,
    /// Instances started so far; more than one means traps or timeouts.
    instances: u64,
    /// Fuel for the next call only (a simulator's injected trap).
    starve: Option<u64>,
}

struct Live {
    store: Store<Ctx>,
    bot: Instance,
}

impl fmt::Debug for Guest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guest")
            .field("guest_info", &self.guest_info)
            .field("instances", &self.instances)
            .finish_non_exhaustive()
    }
}

impl Guest {
    /// Instantiate the component and run its `init`. Nothing is written to
    /// `kv` unless `init` succeeds.
    pub fn start(
        component: &GuestComponent,
        info: HostInfo,
        kv: &mut BoxedKv,
        now_ms: u64,
    ) -> Result<(Guest, Output), GuestError> {
        let mut guest = Guest {
            component: component.clone(),
            info,
            live: None,
            guest_info: GuestInfo {
                name: String::new(),
                version: String::new(),
            },
            instances: 0,
            starve: None,
        };
        let out = guest.ensure_live(kv, now_ms)?;
        Ok((guest, out))
    }

    /// Replace this generation with `component`, carrying on the same host
    /// run (its `init` sees `resumed = true`). The new generation is
    /// started (instantiated, `init` run) before anything changes: if that
    /// fails, this generation keeps serving and nothing was written.
    pub fn swap(
        &mut self,
        component: &GuestComponent,
        kv: &mut BoxedKv,
        now_ms: u64,
    ) -> Result<Output, GuestError> {
        let mut info = self.info.clone();
        info.resumed = true;
        let (next, out) = Guest::start(component, info, kv, now_ms)?;
        *self = next;
        Ok(out)
    }

    /// The component this generation runs.
    pub fn component(&self) -> &GuestComponent {
        &self.component
    }

    /// Name and version the guest reported from `init`.
    pub fn info(&self) -> &GuestInfo {
        &self.guest_info
    }

    /// How many instances this generation has started (1 + recoveries).
    pub fn instances(&self) -> u64 {
        self.instances
    }

    /// Deliver one event. On success the store writes are committed to `kv`
    /// and the effects returned; on failure nothing is written or returned
    /// but the guest's own log lines.
    ///
    /// An error returned by the guest counts as a failure too: a handler
    /// that fails half-way must not leave half its writes behind.
    pub fn handle(
        &mut self,
        event: &Event,
        kv: &mut BoxedKv,
        now_ms: u64,
    ) -> Result<Output, GuestError> {
        self.handle_logged(event, kv, now_ms).map_err(|(e, _)| e)
    }

    /// [`Guest::handle`], keeping the log lines of a failed call.
    fn handle_logged(
        &mut self,
        event: &Event,
        kv: &mut BoxedKv,
        now_ms: u64,
    ) -> Result<Output, CallFailure> {
        let mut out = self.ensure_live(kv, now_ms).map_err(|e| (e, Vec::new()))?;
        let Some(live) = self.live.as_mut() else {
            let e = GuestError::Instantiate("instance missing after a successful start".into());
            return Err((e, Vec::new()));
        };
        let mut sandbox = self.component.embedding.sandbox();
        let _running = self.component.embedding.running();
        if let (Some(units), Budget::Fuel { .. }) = (self.starve.take(), sandbox.budget) {
            sandbox.budget = Budget::Fuel { units };
        }
        let result = run_call(
            &mut live.store,
            kv,
            now_ms,
            sandbox,
            // An event the guest's contract has no shape for is not its
            // business: it handled it by doing nothing.
            |store, bot| bot.call_handle(store, event).unwrap_or(Ok(Ok(()))),
            &live.bot,
            GuestError::Failed,
        );
        match result {
            Ok(((), call_out)) => {
                out.effects.extend(call_out.effects);
                out.logs.extend(call_out.logs);
                out.cost = call_out.cost;
                Ok(out)
            }
            Err((err, logs)) => {
                if err.killed_instance() {
                    self.live = None;
                }
                out.logs.extend(logs);
                Err((err, out.logs))
            }
        }
    }

    /// Give the next event's first attempt only `units` of fuel: a fault a
    /// simulator injects, so the call traps part-way as a real trap would
    /// (its writes dropped, the instance replaced, the event delivered
    /// again). No effect under a wall-clock budget.
    pub fn starve_next_call(&mut self, units: u64) {
        self.starve = Some(units);
    }

    /// [`Guest::handle`], and if the call failed (a trap, a timeout,
    /// running out of memory, an error returned), once more on a fresh
    /// instance: the failed call changed nothing, and a transient failure
    /// (a timeout on a loaded machine) must not lose the event; an event
    /// that fails on every instance fails twice and is dropped.
    pub fn handle_retrying(&mut self, event: &Event, kv: &mut BoxedKv, now_ms: u64) -> Delivery {
        let mut failures = Vec::new();
        for _ in 0..2 {
            match self.handle_logged(event, kv, now_ms) {
                Ok(out) => {
                    return Delivery {
                        output: Some(out),
                        failures,
                    };
                }
                Err((error, logs)) => {
                    let again = error.killed_instance();
                    failures.push(Attempt { error, logs });
                    if !again {
                        break;
                    }
                }
            }
        }
        Delivery {
            output: None,
            failures,
        }
    }

    fn ensure_live(&mut self, kv: &mut BoxedKv, now_ms: u64) -> Result<Output, GuestError> {
        if self.live.is_some() {
            return Ok(Output::default());
        }
        let embedding = &self.component.embedding;
        let sandbox = embedding.sandbox();
        let _running = embedding.running();
        let ctx = Ctx::new(
            sandbox.memory_bytes,
            sandbox.entropy,
            self.instances,
            now_ms,
        );
        let mut store = Store::new(embedding.engine(), ctx);
        store.limiter(|c| &mut c.limits);
        arm_budget(&mut store, sandbox)?;
        let bot = self
            .component
            .pre
            .instantiate(&mut store)
            .map_err(|e| classify(e, &mut store))?;
        let mut info = self.info.clone();
        info.resumed = info.resumed || self.instances > 0;
        info.guest_hash = self.component.hash.clone();
        self.instances += 1;
        let result = run_call(
            &mut store,
            kv,
            now_ms,
            sandbox,
            |store, bot| bot.call_init(store, &info),
            &bot,
            GuestError::Rejected,
        );
        match result {
            Ok((guest_info, out)) => {
                self.guest_info = guest_info;
                self.live = Some(Live { store, bot });
                Ok(out)
            }
            Err((err, _)) => Err(err),
        }
    }
}

fn arm_budget(store: &mut Store<Ctx>, sandbox: Sandbox) -> Result<(), GuestError> {
    match sandbox.budget {
        Budget::Epoch { ticks } => {
            store.set_epoch_deadline(ticks);
            store.epoch_deadline_trap();
        }
        Budget::Fuel { units } => store
            .set_fuel(units)
            .map_err(|e| GuestError::Instantiate(e.to_string()))?,
    }
    Ok(())
}

type CallFailure = (GuestError, Vec<LogLine>);

/// Run one export call with a fresh budget; commit its writes only when it
/// returns `Ok` (an error it returns is a failure named by `refused`).
fn run_call<R>(
    store: &mut Store<Ctx>,
    kv: &mut BoxedKv,
    now_ms: u64,
    sandbox: Sandbox,
    call: impl FnOnce(&mut Store<Ctx>, &Instance) -> wasmtime::Result<Result<R, String>>,
    bot: &Instance,
    refused: fn(String) -> GuestError,
) -> Result<(R, Output), CallFailure> {
    if let Err(e) = arm_budget(store, sandbox) {
        return Err((e, Vec::new()));
    }
    // The store import reads through to `kv` while the call runs; the data
    // of a trapped store stays reachable, so `kv` always comes back.
    let backend = std::mem::replace(kv, Box::new(kv::Detached));
    store.data_mut().attach(backend, now_ms);
    let result = call(store, bot);
    let cost = Cost {
        fuel: match sandbox.budget {
            Budget::Fuel { units } => store.get_fuel().ok().map(|left| units.saturating_sub(left)),
            Budget::Epoch { .. } => None,
        },
        memory_bytes: store.data().limits.granted as u64,
    };
    let ctx::Finished {
        kv: backend,
        writes,
        effects,
        logs,
        over_cap,
    } = store.data_mut().finish();
    *kv = backend;
    if let Some(cap) = over_cap {
        return Err((GuestError::OverCap(cap), logs));
    }
    match result {
        Ok(Ok(value)) => {
            if let Err(e) = kv.commit(writes) {
                return Err((GuestError::Store(e), logs));
            }
            Ok((
                value,
                Output {
                    effects,
                    logs,
                    cost,
                },
            ))
        }
        Ok(Err(message)) => Err((refused(message), logs)),
        Err(e) => Err((classify(e, store), logs)),
    }
}

fn classify(err: wasmtime::Error, store: &mut Store<Ctx>) -> GuestError {
    if store.data().limits_hit() {
        return GuestError::OutOfMemory;
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) | Some(Trap::OutOfFuel) => GuestError::Timeout,
        Some(trap) => GuestError::Trap(format!("{trap}: {err:#}")),
        None => GuestError::Trap(format!("{err:#}")),
    }
}
