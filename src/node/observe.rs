//! What a node tells its operator: Prometheus metrics, health for probes,
//! and its per-kind counts for service discovery ([`crate::micro`]). One
//! set of counters feeds all three.
//!
//! Kinds are labels only when this node has a handler for them: a task
//! sent to `tasks.<anything>` counts under `kind="other"`, so nobody can
//! grow the metrics without bound by inventing kinds.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::Client;
use axum::extract::State as Extract;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::process::ProcessCollector;
use super::NodeStats;
use crate::contract;
use crate::micro::{EndpointInfo, EndpointStats, Source};

/// Label of tasks of a kind this node has no handler for.
const OTHER: &str = "other";

/// Seconds: from half a millisecond to five minutes.
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
    300.0,
];

/// How an attempt ended, as a label.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum Outcome {
    ok,
    failed,
    retried,
    handed_back,
    cancelled,
    expired,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindOutcome {
    kind: String,
    outcome: Outcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

/// One kind's metric handles, looked up once.
#[derive(Debug, Clone)]
pub(super) struct KindMetrics {
    ok: Counter,
    failed: Counter,
    retried: Counter,
    handed_back: Counter,
    cancelled: Counter,
    expired: Counter,
    dead: Counter,
    redelivered: Counter,
    run: Histogram,
    wait: Histogram,
    /// Run time in nanoseconds, summed (prometheus-client keeps its sum to itself).
    run_ns: Arc<AtomicU64>,
    last_error: Arc<Mutex<String>>,
}

impl KindMetrics {
    /// An attempt begins: how long the task waited since it was stored, and
    /// whether it was delivered before.
    pub(super) fn started(&self, waited: Duration, attempt: u32) {
        self.wait.observe(waited.as_secs_f64());
        if attempt > 1 {
            self.redelivered.inc();
        }
    }

    /// The handler ran for `took`.
    pub(super) fn ran(&self, took: Duration) {
        self.run.observe(took.as_secs_f64());
        self.run_ns
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    /// The task's ok result is kept and the task acked.
    pub(super) fn ok(&self) {
        self.ok.inc();
    }

    /// The attempt failed and the task goes back for another.
    pub(super) fn retried(&self, error: &str) {
        self.retried.inc();
        self.note(error);
    }

    /// The task failed for good: dead letter and error result written.
    pub(super) fn failed(&self, error: &str) {
        self.failed.inc();
        self.dead.inc();
        self.note(error);
    }

    /// The task was handed back untouched (shutdown).
    pub(super) fn handed_back(&self) {
        self.handed_back.inc();
    }

    /// The task was cancelled: its 499 result kept, the task acked.
    pub(super) fn cancelled(&self) {
        self.cancelled.inc();
    }

    /// The task's deadline passed before it started: answered `408
    /// expired`, not run, not a failure.
    pub(super) fn expired(&self) {
        self.expired.inc();
    }

    fn note(&self, error: &str) {
        if let Ok(mut last) = self.last_error.lock() {
            error.clone_into(&mut last);
        }
    }

    fn endpoint(&self, kind: &str, group: &str) -> EndpointStats {
        let (ok, failed, retried) = (self.ok.get(), self.failed.get(), self.retried.get());
        let requests = ok + failed + retried;
        let processing = self.run_ns.load(Ordering::Relaxed);
        EndpointStats {
            name: kind.to_string(),
            subject: format!("{}{kind}", contract::TASK_PREFIX),
            queue_group: group.to_string(),
            num_requests: requests,
            num_errors: failed + retried,
            last_error: self
                .last_error
                .lock()
                .map(|l| l.clone())
                .unwrap_or_default(),
            processing_time: processing,
            average_processing_time: processing.checked_div(requests).unwrap_or(0),
            data: Some(serde_json::json!({
                "ok": ok, "failed": failed, "retried": retried,
                "handed_back": self.handed_back.get(),
                "cancelled": self.cancelled.get(),
                "expired": self.expired.get(),
            })),
        }
    }
}

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
        let tasks = Family::<KindOutcome, Counter>::default();
        let dead = Family::<KindLabel, Counter>::default();
        let redelivered = Family::<KindLabel, Counter>::default();
        let histogram = || Histogram::new(BUCKETS);
        let run =
            Family::<KindLabel, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        let wait =
            Family::<KindLabel, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        let (in_flight, free_slots) = (Gauge::default(), Gauge::default());
        let (refused, reconnects) = (Counter::default(), Counter::default());
        registry.register(
            "fleet_node_tasks",
            "Attempts finished, by kind and outcome",
            tasks.clone(),
        );
        registry.register(
            "fleet_node_dead_letters",
            "Dead letters written, by kind",
            dead.clone(),
        );
        registry.register(
            "fleet_node_redeliveries",
            "Attempts of tasks delivered before, by kind",
            redelivered.clone(),
        );
        registry.register(
            "fleet_node_run_seconds",
            "Handler run time, by kind",
            run.clone(),
        );
        registry.register(
            "fleet_node_queue_wait_seconds",
            "Time from a task's storing to the start of an attempt, by kind",
            wait.clone(),
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
        let metrics_of = |kind: &str| {
            let label = KindLabel {
                kind: kind.to_string(),
            };
            let outcome = |outcome| {
                tasks.get_or_create_owned(&KindOutcome {
                    kind: kind.to_string(),
                    outcome,
                })
            };
            KindMetrics {
                ok: outcome(Outcome::ok),
                failed: outcome(Outcome::failed),
                retried: outcome(Outcome::retried),
                handed_back: outcome(Outcome::handed_back),
                cancelled: outcome(Outcome::cancelled),
                expired: outcome(Outcome::expired),
                dead: dead.get_or_create_owned(&label),
                redelivered: redelivered.get_or_create_owned(&label),
                run: run.get_or_create_owned(&label),
                wait: wait.get_or_create_owned(&label),
                run_ns: Arc::default(),
                last_error: Arc::default(),
            }
        };
        let kinds = kinds
            .iter()
            .map(|k| (k.to_string(), metrics_of(k)))
            .collect();
        let other = metrics_of(OTHER);
        Observer {
            inner: Arc::new(Inner {
                registry,
                kinds,
                other,
                in_flight,
                free_slots,
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
        all.fold(NodeStats::default(), |t, k| NodeStats {
            ok: t.ok + k.ok.get(),
            failed: t.failed + k.failed.get(),
            retried: t.retried + k.retried.get(),
            handed_back: t.handed_back + k.handed_back.get(),
            cancelled: t.cancelled + k.cancelled.get(),
            expired: t.expired + k.expired.get(),
        })
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
        if self.inner.other.ok.get()
            + self.inner.other.failed.get()
            + self.inner.other.retried.get()
            > 0
        {
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
