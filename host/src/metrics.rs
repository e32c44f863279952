//! Prometheus metrics and the health endpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub kind: &'static str,
    pub outcome: &'static str,
}

/// What the bot is doing, for `/healthz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    Starting = 0,
    Serving = 1,
    ShuttingDown = 2,
}

pub struct Metrics {
    pub events: Family<Kind, Counter>,
    pub effects: Family<Kind, Counter>,
    pub guest_failures: Family<Kind, Counter>,
    pub swaps: Family<Kind, Counter>,
    pub guest_call_seconds: Histogram,
    pub agent_connections: Gauge,
    pub agent_in_flight: Gauge,
    /// Matrix requests (send, edit, react, join, leave) by outcome.
    pub matrix_requests: Family<Outcome, Counter>,
    /// Syncs by outcome (`ok`, `error`).
    pub matrix_syncs: Family<Kind, Counter>,
    /// Room events that did not reach the guest, by reason.
    pub matrix_ignored: Family<Kind, Counter>,
    /// Background tasks started again after they died, by task.
    pub task_restarts: Family<Kind, Counter>,
    health: AtomicU8,
    /// When the last sync succeeded and the guest last handled an event
    /// (ms since the Unix epoch; 0: not yet).
    last_sync_ms: AtomicU64,
    last_event_ms: AtomicU64,
    /// A sync loop runs, and is unhealthy without a success this long (ms).
    sync_stale_after_ms: AtomicU64,
    registry: Registry,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("surfaces");
        let events = Family::<Kind, Counter>::default();
        let effects = Family::<Kind, Counter>::default();
        let guest_failures = Family::<Kind, Counter>::default();
        let swaps = Family::<Kind, Counter>::default();
        // 1 µs .. ~1 s
        let guest_call_seconds = Histogram::new(exponential_buckets(1e-6, 4.0, 11));
        let agent_connections = Gauge::default();
        let agent_in_flight = Gauge::default();
        let matrix_requests = Family::<Outcome, Counter>::default();
        let matrix_syncs = Family::<Kind, Counter>::default();
        let matrix_ignored = Family::<Kind, Counter>::default();
        let task_restarts = Family::<Kind, Counter>::default();
        registry.register(
            "task_restarts",
            "Background tasks started again after they died",
            task_restarts.clone(),
        );
        registry.register(
            "matrix_requests",
            "Matrix requests by kind and outcome (ok, rate_limited, ...)",
            matrix_requests.clone(),
        );
        registry.register("matrix_syncs", "Syncs by outcome", matrix_syncs.clone());
        registry.register(
            "matrix_ignored",
            "Room messages and invites kept from the guest, by reason",
            matrix_ignored.clone(),
        );
        registry.register("events", "Events delivered to the guest", events.clone());
        registry.register("effects", "Effects the guest asked for", effects.clone());
        registry.register(
            "guest_failures",
            "Guest calls that trapped, timed out or ran out of memory",
            guest_failures.clone(),
        );
        registry.register("guest_swaps", "Guest swaps by outcome", swaps.clone());
        registry.register(
            "guest_call_seconds",
            "Time the guest took per event",
            guest_call_seconds.clone(),
        );
        registry.register(
            "agent_connections",
            "Agent connections open or opening",
            agent_connections.clone(),
        );
        registry.register(
            "agent_requests_in_flight",
            "Agent requests being answered",
            agent_in_flight.clone(),
        );
        Arc::new(Metrics {
            events,
            effects,
            guest_failures,
            swaps,
            guest_call_seconds,
            agent_connections,
            agent_in_flight,
            matrix_requests,
            matrix_syncs,
            matrix_ignored,
            task_restarts,
            health: AtomicU8::new(Health::Starting as u8),
            last_sync_ms: AtomicU64::new(0),
            last_event_ms: AtomicU64::new(0),
            sync_stale_after_ms: AtomicU64::new(0),
            registry,
        })
    }

    pub fn set_health(&self, health: Health) {
        self.health.store(health as u8, Ordering::Relaxed);
    }

    pub fn health(&self) -> Health {
        match self.health.load(Ordering::Relaxed) {
            1 => Health::Serving,
            2 => Health::ShuttingDown,
            _ => Health::Starting,
        }
    }

    /// A sync loop runs: health depends on its last success, which must be
    /// no older than `stale_after` (counted from now for the first).
    pub fn watch_sync(&self, stale_after: std::time::Duration, now_ms: u64) {
        self.last_sync_ms.store(now_ms, Ordering::Relaxed);
        let ms = u64::try_from(stale_after.as_millis()).unwrap_or(u64::MAX);
        self.sync_stale_after_ms.store(ms.max(1), Ordering::Relaxed);
    }

    pub fn sync_succeeded(&self, now_ms: u64) {
        self.last_sync_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn event_handled(&self, now_ms: u64) {
        self.last_event_ms.store(now_ms, Ordering::Relaxed);
    }

    /// What `/healthz` says at `now_ms`: healthy or not, and in words.
    pub fn report(&self, now_ms: u64) -> (bool, String) {
        report(
            self.health(),
            now_ms,
            self.last_sync_ms.load(Ordering::Relaxed),
            self.last_event_ms.load(Ordering::Relaxed),
            self.sync_stale_after_ms.load(Ordering::Relaxed),
        )
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!("encoding metrics: {e}");
        }
        text
    }
}

/// Serve `/metrics` and `/healthz` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    use axum::http::{StatusCode, header};
    use axum::routing::get;

    let m = metrics.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = m.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.encode(),
                    )
                }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let m = metrics.clone();
                async move {
                    let (ok, text) = m.report(crate::time::now_ms());
                    let status = if ok {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (status, text)
                }
            }),
        );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("metrics endpoint stopped: {e}");
    }
}

/// `/healthz`: serving (200) only while the loop serves and, with a sync
/// loop, its last success is recent; the ages of the last sync and of the
/// last guest event either way.
fn report(
    health: Health,
    now_ms: u64,
    last_sync_ms: u64,
    last_event_ms: u64,
    sync_stale_after_ms: u64,
) -> (bool, String) {
    let age = |t: u64| match t {
        0 => "never".to_string(),
        t => format!("{}s ago", now_ms.saturating_sub(t) / 1000),
    };
    let syncs = sync_stale_after_ms > 0;
    let stale = syncs && now_ms.saturating_sub(last_sync_ms) > sync_stale_after_ms;
    let (ok, state) = match health {
        Health::Starting => (false, "starting".to_string()),
        Health::ShuttingDown => (false, "shutting down".to_string()),
        Health::Serving if stale => (
            false,
            format!(
                "unhealthy: no successful sync for {}s (limit {}s)",
                now_ms.saturating_sub(last_sync_ms) / 1000,
                sync_stale_after_ms / 1000
            ),
        ),
        Health::Serving => (true, "serving".to_string()),
    };
    let mut text = format!("{state}\n");
    if syncs {
        text.push_str(&format!("last sync: {}\n", age(last_sync_ms)));
    }
    text.push_str(&format!("last guest event: {}\n", age(last_event_ms)));
    (ok, text)
}

/// Bind the metrics endpoint; the error names the address.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::{Health, report};

    #[test]
    fn health_follows_the_sync_loop() {
        let (ok, text) = report(Health::Serving, 100_000, 95_000, 99_000, 60_000);
        assert!(ok, "{text}");
        assert_eq!(
            text,
            "serving\nlast sync: 5s ago\nlast guest event: 1s ago\n"
        );
        let (ok, text) = report(Health::Serving, 200_000, 95_000, 199_000, 60_000);
        assert!(!ok);
        assert!(
            text.starts_with("unhealthy: no successful sync for 105s"),
            "{text}"
        );
        // Without a sync loop (the terminal) only the loop's state counts.
        let (ok, text) = report(Health::Serving, 200_000, 0, 0, 0);
        assert!(ok);
        assert_eq!(text, "serving\nlast guest event: never\n");
        assert!(!report(Health::Starting, 1, 0, 0, 0).0);
        assert!(!report(Health::ShuttingDown, 1, 1, 1, 60_000).0);
    }
}
