//! The per-instance host state and the imports: each one records an effect,
//! a log line or a store write and returns at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use crate::bindings::surfaces::bot::{agent, clock, host, matrix, store, types};
use crate::effect::{AgentEffect, Effect, HostEffect, MatrixEffect, TimerEffect};
use crate::kv::{BoxedKv, Detached, Write};
use crate::{
    AgentFeedback, AgentMessage, AttachmentContent, EditTarget, Entropy, LogLevel, MessageContent,
};

/// What one call may hand the host, beyond the sandbox's memory cap (the
/// host copies every effect, line and write out of the guest's memory, so
/// a looping guest could otherwise fill the host's). A call that goes past
/// one fails like a trap: nothing of it is kept.
pub(crate) const MAX_EFFECTS: usize = 10_000;
pub(crate) const MAX_LOG_BYTES: usize = 1 << 20;
pub(crate) const MAX_WRITES: usize = 100_000;
pub(crate) const MAX_WRITE_BYTES: usize = 32 << 20;

/// A line the guest logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
}

/// Caps guest memory, and remembers that it did so we can tell an
/// out-of-memory abort from any other trap.
pub(crate) struct Limits {
    max_memory: usize,
    hit: bool,
    /// The largest linear memory granted so far, in bytes.
    pub(crate) granted: usize,
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.hit = true;
            return Ok(false);
        }
        self.granted = self.granted.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// WASI's clocks, read by a guest through std (`SystemTime`, `Instant`):
/// both show the time of the call, as `clock::now` does, so a guest sees
/// one time per event on either host and a replay of the same events sees
/// the same times. The monotonic one never goes back, even if the host's
/// time does between calls.
#[derive(Clone, Default)]
struct CallClock {
    wall_ms: Arc<AtomicU64>,
    steady_ms: Arc<AtomicU64>,
}

impl CallClock {
    fn set(&self, now_ms: u64) {
        self.wall_ms.store(now_ms, Ordering::Relaxed);
        self.steady_ms.fetch_max(now_ms, Ordering::Relaxed);
    }
}

impl HostWallClock for CallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        Duration::from_millis(self.wall_ms.load(Ordering::Relaxed))
    }
}

impl HostMonotonicClock for CallClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }

    fn now(&self) -> u64 {
        self.steady_ms
            .load(Ordering::Relaxed)
            .saturating_mul(1_000_000)
    }
}

pub(crate) struct Ctx {
    wasi: WasiCtx,
    clock: CallClock,
    table: ResourceTable,
    pub(crate) limits: Limits,
    kv: BoxedKv,
    now_ms: u64,
    /// This call's writes: the latest value per key (a delete is `None`).
    /// Reads see it; the host commits it when the call returns.
    overlay: BTreeMap<String, Option<Vec<u8>>>,
    effects: Vec<Effect>,
    logs: Vec<LogLine>,
    log_bytes: usize,
    write_bytes: usize,
    /// The first per-call cap this call went past.
    over_cap: Option<&'static str>,
}

/// What a call left for the host when it ended.
pub(crate) struct Finished {
    pub kv: BoxedKv,
    pub writes: Vec<Write>,
    pub effects: Vec<Effect>,
    pub logs: Vec<LogLine>,
    /// The per-call cap it went past, if any: the call failed.
    pub over_cap: Option<&'static str>,
}

impl Ctx {
    /// `instance` numbers the instances of one guest, so that a fresh one
    /// after a trap draws a stream of its own (seeded entropy only);
    /// `now_ms` is the time its instantiation sees.
    pub(crate) fn new(max_memory: usize, entropy: Entropy, instance: u64, now_ms: u64) -> Self {
        let clock = CallClock::default();
        clock.set(now_ms);
        // No preopened directories, no environment, no arguments, no
        // sockets: the guest reaches the world only through our imports.
        let mut wasi = WasiCtx::builder();
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .wall_clock(clock.clone())
            .monotonic_clock(clock.clone())
            // The guest must not depend on this seed; a fixed one keeps
            // the simulator's transcripts from depending on it either.
            .insecure_random_seed(0);
        match entropy {
            Entropy::Os => {}
            Entropy::Seeded(seed) => {
                let seed = seed ^ instance.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                wasi.secure_random(ChaCha8Rng::seed_from_u64(seed))
                    .insecure_random(ChaCha8Rng::seed_from_u64(!seed));
            }
        }
        Ctx {
            wasi: wasi.build(),
            clock,
            table: ResourceTable::new(),
            limits: Limits {
                max_memory,
                hit: false,
                granted: 0,
            },
            kv: Box::new(Detached),
            now_ms: 0,
            overlay: BTreeMap::new(),
            effects: Vec::new(),
            logs: Vec::new(),
            log_bytes: 0,
            write_bytes: 0,
            over_cap: None,
        }
    }

    pub(crate) fn limits_hit(&self) -> bool {
        self.limits.hit
    }

    pub(crate) fn attach(&mut self, kv: BoxedKv, now_ms: u64) {
        self.kv = kv;
        self.now_ms = now_ms;
        self.clock.set(now_ms);
    }

    /// End a call: give back the host's store, this call's writes, effects
    /// and logs.
    pub(crate) fn finish(&mut self) -> Finished {
        self.log_bytes = 0;
        self.write_bytes = 0;
        Finished {
            kv: std::mem::replace(&mut self.kv, Box::new(Detached)),
            writes: std::mem::take(&mut self.overlay).into_iter().collect(),
            effects: std::mem::take(&mut self.effects),
            logs: std::mem::take(&mut self.logs),
            over_cap: self.over_cap.take(),
        }
    }

    /// Past a cap: keep nothing more of this call (it will fail).
    fn over(&mut self, cap: &'static str) {
        self.over_cap.get_or_insert(cap);
    }

    fn effect(&mut self, e: Effect) {
        if self.effects.len() >= MAX_EFFECTS {
            return self.over("effects");
        }
        self.effects.push(e);
    }

    fn matrix(&mut self, e: MatrixEffect) {
        self.effect(Effect::Matrix(e));
    }

    fn write(&mut self, key: String, value: Option<Vec<u8>>) {
        self.write_bytes = self
            .write_bytes
            .saturating_add(key.len() + value.as_ref().map_or(0, Vec::len));
        if self.overlay.len() >= MAX_WRITES || self.write_bytes > MAX_WRITE_BYTES {
            return self.over("store writes");
        }
        self.overlay.insert(key, value);
    }
}

impl WasiView for Ctx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for Ctx {}

impl matrix::Host for Ctx {
    fn send(&mut self, request: u64, room_id: String, content: MessageContent) {
        self.matrix(MatrixEffect::Send {
            request,
            room_id,
            content,
        });
    }

    fn send_attachment(&mut self, request: u64, room_id: String, content: AttachmentContent) {
        self.matrix(MatrixEffect::SendAttachment {
            request,
            room_id,
            content,
        });
    }

    fn edit(&mut self, request: u64, room_id: String, target: EditTarget, content: MessageContent) {
        self.matrix(MatrixEffect::Edit {
            request,
            room_id,
            target,
            content,
        });
    }

    fn react(&mut self, request: u64, room_id: String, event_id: String, key: String) {
        self.matrix(MatrixEffect::React {
            request,
            room_id,
            event_id,
            key,
        });
    }

    fn set_typing(&mut self, room_id: String, typing: bool, timeout_ms: u32) {
        self.matrix(MatrixEffect::SetTyping {
            room_id,
            typing,
            timeout_ms,
        });
    }

    fn read_receipt(&mut self, room_id: String, event_id: String) {
        self.matrix(MatrixEffect::ReadReceipt { room_id, event_id });
    }

    fn join(&mut self, request: u64, room_id: String) {
        self.matrix(MatrixEffect::Join { request, room_id });
    }

    fn leave(&mut self, request: u64, room_id: String) {
        self.matrix(MatrixEffect::Leave { request, room_id });
    }
}

impl agent::Host for Ctx {
    fn submit(&mut self, request: u64, context_id: String, message: AgentMessage) {
        self.effect(Effect::Agent(AgentEffect::Submit {
            request,
            context_id,
            message,
        }));
    }

    fn cancel(&mut self, context_id: String) {
        self.effect(Effect::Agent(AgentEffect::Cancel { context_id }));
    }

    fn reset(&mut self, context_id: String) {
        self.effect(Effect::Agent(AgentEffect::Reset { context_id }));
    }

    fn feedback(&mut self, context_id: String, feedback: AgentFeedback) {
        self.effect(Effect::Agent(AgentEffect::Feedback {
            context_id,
            feedback,
        }));
    }
}

impl store::Host for Ctx {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        if let Some(v) = self.overlay.get(&key) {
            return Ok(v.clone());
        }
        // A failing store must not look like a missing key (the guest would
        // take a known user for a new one): it fails the event instead.
        self.kv.get(&key).map_err(wasmtime::Error::msg)
    }

    fn put(&mut self, key: String, value: Vec<u8>) {
        self.write(key, Some(value));
    }

    fn delete(&mut self, key: String) {
        self.write(key, None);
    }

    fn keys(&mut self, prefix: String) -> wasmtime::Result<Vec<String>> {
        let mut keys: std::collections::BTreeSet<String> = self
            .kv
            .keys(&prefix)
            .map_err(wasmtime::Error::msg)?
            .into_iter()
            .collect();
        for (k, v) in self.overlay.range(prefix.clone()..) {
            if !k.starts_with(&prefix) {
                break;
            }
            match v {
                Some(_) => keys.insert(k.clone()),
                None => keys.remove(k),
            };
        }
        Ok(keys.into_iter().collect())
    }

    fn keys_page(
        &mut self,
        prefix: String,
        after: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Vec<String>> {
        let limit = limit as usize;
        let after_ok = |k: &str| after.as_deref().is_none_or(|a| k > a);
        // Keys this call deleted may be among the store's next ones: read
        // as many more, then apply the call's own writes.
        let overlay: Vec<(&String, bool)> = self
            .overlay
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| after_ok(k))
            .map(|(k, v)| (k, v.is_some()))
            .collect();
        let deleted = overlay.iter().filter(|(_, put)| !put).count();
        let mut keys: std::collections::BTreeSet<String> = self
            .kv
            .keys_page(&prefix, after.as_deref(), limit.saturating_add(deleted))
            .map_err(wasmtime::Error::msg)?
            .into_iter()
            .collect();
        for (k, put) in overlay {
            if put {
                keys.insert(k.clone());
            } else {
                keys.remove(k);
            }
        }
        Ok(keys.into_iter().take(limit).collect())
    }
}

impl clock::Host for Ctx {
    fn now(&mut self) -> u64 {
        self.now_ms
    }

    fn set_timer(&mut self, id: u64, delay_ms: u64) {
        self.effect(Effect::Timer(TimerEffect::Set { id, delay_ms }));
    }

    fn cancel_timer(&mut self, id: u64) {
        self.effect(Effect::Timer(TimerEffect::Cancel { id }));
    }
}

impl host::Host for Ctx {
    fn log(&mut self, level: LogLevel, message: String) {
        self.log_bytes = self.log_bytes.saturating_add(message.len());
        if self.log_bytes > MAX_LOG_BYTES {
            return self.over("log bytes");
        }
        self.logs.push(LogLine { level, message });
    }

    fn reload(&mut self, request: u64) {
        self.effect(Effect::Host(HostEffect::Reload { request }));
    }

    fn rollback(&mut self, request: u64) {
        self.effect(Effect::Host(HostEffect::Rollback { request }));
    }
}
