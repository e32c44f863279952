//! Prometheus metrics and the health endpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

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
    health: AtomicU8,
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
            health: AtomicU8::new(Health::Starting as u8),
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
                    match m.health() {
                        Health::Serving => (StatusCode::OK, "serving\n"),
                        Health::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
                        Health::ShuttingDown => {
                            (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
                        }
                    }
                }
            }),
        );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("metrics endpoint stopped: {e}");
    }
}

/// Bind the metrics endpoint; the error names the address.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))
}
