//! What a node tells its operator: Prometheus metrics, health for probes,
//! and its per-kind counts for service discovery ([`crate::micro`]). One
//! set of counters feeds all three.
//!
//! Kinds are labels only when this node has a handler for them: a task
//! sent to `tasks.<anything>` counts under `kind="other"`, so nobody can
//! grow the metrics without bound by inventing kinds.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use async_nats::connection::State;
use async_nats::Client;
use axum::extract::State as Extract;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::kind_metrics::{KindFamilies, KindMetrics, OTHER};
use super::process::ProcessCollector;
use super::NodeStats;
use crate::contract;
use crate::micro::{EndpointInfo, EndpointStats, Source};

/// Where a node is in its life, for `/readyz` and service discovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Binding its group's consumer.
    Starting = 0,
    /// Bound and pulling.
    Ready = 1,
    /// Stopped asking for tasks; finishing the running ones.
    Draining = 2,
}

/// What is known once the node is bound.
#[derive(Debug)]
struct Bound {
    node: String,
    group: String,
    id: String,
    concurrency: usize,
}

/// A node's metrics, health and discovery counts; cheap to clone.
#[derive(Clone)]
pub struct Observer {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    kinds: HashMap<String, KindMetrics>,
    other: KindMetrics,
    in_flight: Gauge,
    free_slots: Gauge,
    held: Gauge,
    refused: Counter,
    reconnects: Counter,
    phase: AtomicU8,
    became_ready: tokio::sync::Notify,
    client: Client,
    bound: OnceLock<Bound>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("phase", &self.phase())
            .finish()
    }
}

impl Observer {
    /// Metrics for a node with handlers for `kinds`.
    pub(super) fn new(client: Client, kinds: &[&str]) -> Self {
        let mut registry = Registry::default();
        let families = KindFamilies::register(&mut registry);
        let (in_flight, free_slots) = (Gauge::default(), Gauge::default());
        let (refused, reconnects) = (Counter::default(), Counter::default());
        let held = Gauge::default();
        registry.register(
            "fleet_node_held",
            "Tasks held back by a limit (fleet limit), using no slot",
            held.clone(),
        );
        registry.register(
            "fleet_node_in_flight",
            "Tasks running now",
            in_flight.clone(),
        );
        registry.register(
            "fleet_node_free_slots",
            "Slots free for another task",
            free_slots.clone(),
        );
        registry.register(
            "fleet_node_results_refused",
            "Results refused by the fence: another attempt's result was already kept",
            refused.clone(),
        );
        registry.register(
            "fleet_node_reconnects",
            "Reconnections to NATS",
            reconnects.clone(),
        );
        registry.register_collector(Box::new(ProcessCollector));
        let kinds = kinds
            .iter()
            .map(|k| (k.to_string(), families.of(k)))
            .collect();
        let other = families.of(OTHER);
        Observer {
            inner: Arc::new(Inner {
                registry,
                kinds,
                other,
                in_flight,
                free_slots,
                held,
                refused,
                reconnects,
                phase: AtomicU8::new(Phase::Starting as u8),
                became_ready: tokio::sync::Notify::new(),
                client,
                bound: OnceLock::new(),
            }),
        }
    }

    /// The metric handles of `kind` (those of `other` when it has no handler).
    pub(super) fn kind(&self, kind: &str) -> &KindMetrics {
        self.inner.kinds.get(kind).unwrap_or(&self.inner.other)
    }

    /// Slots in use changed.
    pub(super) fn slots(&self, in_flight: usize, free: usize) {
        self.inner.in_flight.set(in_flight as i64);
        self.inner.free_slots.set(free as i64);
    }

    /// Tasks held back by a limit now.
    pub(super) fn held(&self, held: usize) {
        self.inner.held.set(held as i64);
    }

    /// A result was refused because another attempt's is kept.
    pub(super) fn refused(&self) {
        self.inner.refused.inc();
    }

    /// The node is bound to its group and pulls.
    pub(super) fn bound(&self, node: &str, group: &str, id: &str, concurrency: usize) {
        let _ = self.inner.bound.set(Bound {
            node: node.to_string(),
            group: group.to_string(),
            id: id.to_string(),
            concurrency,
        });
        self.slots(0, concurrency);
        self.set_phase(Phase::Ready);
    }

    pub(super) fn set_phase(&self, phase: Phase) {
        self.inner.phase.store(phase as u8, Ordering::Relaxed);
        if phase == Phase::Ready {
            self.inner.became_ready.notify_waiters();
        }
    }

    /// Completes once the node is bound and pulling.
    pub async fn wait_ready(&self) {
        loop {
            let notified = self.inner.became_ready.notified();
            if self.phase() != Phase::Starting {
                return;
            }
            notified.await;
        }
    }

    /// Where the node is in its life.
    pub fn phase(&self) -> Phase {
        match self.inner.phase.load(Ordering::Relaxed) {
            1 => Phase::Ready,
            2 => Phase::Draining,
            _ => Phase::Starting,
        }
    }

    /// Ready to take work: bound, pulling, connected, not draining.
    pub fn ready(&self) -> bool {
        self.phase() == Phase::Ready && self.inner.client.connection_state() == State::Connected
    }

    /// Counts so far, summed over kinds.
    pub(super) fn totals(&self) -> NodeStats {
        let all = self.inner.kinds.values().chain([&self.inner.other]);
        all.fold(NodeStats::default(), |t, k| k.add_to(t))
    }

    /// The Prometheus text exposition (format 0.0.4) of this node's metrics.
    pub fn metrics_text(&self) -> String {
        let connects = self
            .inner
            .client
            .statistics()
            .connects
            .load(Ordering::Relaxed);
        let reconnects = connects.saturating_sub(1);
        let counted = self.inner.reconnects.get();
        if reconnects > counted {
            self.inner.reconnects.inc_by(reconnects - counted);
        }
        let mut text = String::new();
        if prometheus_client::encoding::prometheus_text::encode(&mut text, &self.inner.registry)
            .is_err()
        {
            text.clear();
        }
        text
    }

    /// `/metrics`, `/healthz` (the process is alive) and `/readyz` (see
    /// [`Observer::ready`]), to serve with `axum::serve`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .with_state(self.clone())
    }

    /// The endpoints `INFO` lists: one per kind, and `drain`.
    pub(super) fn endpoint_infos(&self) -> Vec<EndpointInfo> {
        let Some(bound) = self.inner.bound.get() else {
            return Vec::new();
        };
        let mut kinds: Vec<&String> = self.inner.kinds.keys().collect();
        kinds.sort();
        let mut infos: Vec<EndpointInfo> = kinds
            .into_iter()
            .map(|kind| EndpointInfo {
                name: kind.clone(),
                subject: format!("{}{kind}", contract::TASK_PREFIX),
                queue_group: bound.group.clone(),
                metadata: BTreeMap::new(),
            })
            .collect();
        infos.push(EndpointInfo {
            name: "drain".to_string(),
            subject: control_subject(&bound.id),
            queue_group: String::new(),
            metadata: BTreeMap::from([(
                "does".to_string(),
                "stop taking tasks, finish the running ones, exit".to_string(),
            )]),
        });
        infos
    }
}

/// The subject that asks node `id` to drain.
pub(super) fn control_subject(id: &str) -> String {
    format!("{}{id}.drain", contract::CONTROL_PREFIX)
}

impl Source for Observer {
    fn metadata(&self) -> BTreeMap<String, String> {
        let mut meta = BTreeMap::new();
        if let Some(b) = self.inner.bound.get() {
            let mut kinds: Vec<&str> = self.inner.kinds.keys().map(String::as_str).collect();
            kinds.sort_unstable();
            meta.insert("node".into(), b.node.clone());
            meta.insert("group".into(), b.group.clone());
            meta.insert("kinds".into(), kinds.join(","));
            meta.insert("concurrency".into(), b.concurrency.to_string());
        }
        meta.insert("in_flight".into(), self.inner.in_flight.get().to_string());
        let phase = match self.phase() {
            Phase::Starting => "starting",
            Phase::Ready => "ready",
            Phase::Draining => "draining",
        };
        meta.insert("state".into(), phase.into());
        meta
    }

    fn endpoints(&self) -> Vec<EndpointStats> {
        let group = self
            .inner
            .bound
            .get()
            .map(|b| b.group.as_str())
            .unwrap_or_default();
        let mut kinds: Vec<(&String, &KindMetrics)> = self.inner.kinds.iter().collect();
        kinds.sort_by_key(|(k, _)| k.as_str());
        let mut out: Vec<EndpointStats> = kinds
            .into_iter()
            .map(|(k, m)| m.endpoint(k, group))
            .collect();
        if self.inner.other.attempts() > 0 {
            out.push(self.inner.other.endpoint(OTHER, group));
        }
        out
    }
}

async fn metrics(Extract(observer): Extract<Observer>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        observer.metrics_text(),
    )
}

async fn readyz(Extract(observer): Extract<Observer>) -> impl IntoResponse {
    if observer.ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
