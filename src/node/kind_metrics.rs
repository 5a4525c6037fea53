//! A node's metrics per kind: the Prometheus families by kind and outcome,
//! and the handles of one kind, which also feed its counts for service
//! discovery ([`crate::micro`]). [`super::observe`] owns the registry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::NodeStats;
use crate::contract;
use crate::micro::EndpointStats;

/// Label of tasks of a kind this node has no handler for.
pub(super) const OTHER: &str = "other";

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

/// The per-kind metric families, registered once; each kind's handles are
/// looked up from them.
pub(super) struct KindFamilies {
    tasks: Family<KindOutcome, Counter>,
    dead: Family<KindLabel, Counter>,
    redelivered: Family<KindLabel, Counter>,
    run: Family<KindLabel, Histogram>,
    wait: Family<KindLabel, Histogram>,
}

impl KindFamilies {
    /// Makes the families and registers them in `registry`.
    pub(super) fn register(registry: &mut Registry) -> Self {
        let tasks = Family::<KindOutcome, Counter>::default();
        let dead = Family::<KindLabel, Counter>::default();
        let redelivered = Family::<KindLabel, Counter>::default();
        let histogram = || Histogram::new(BUCKETS);
        let run =
            Family::<KindLabel, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        let wait =
            Family::<KindLabel, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
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
        KindFamilies {
            tasks,
            dead,
            redelivered,
            run,
            wait,
        }
    }

    /// The handles of `kind`.
    pub(super) fn of(&self, kind: &str) -> KindMetrics {
        let label = KindLabel {
            kind: kind.to_string(),
        };
        let outcome = |outcome| {
            self.tasks.get_or_create_owned(&KindOutcome {
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
            dead: self.dead.get_or_create_owned(&label),
            redelivered: self.redelivered.get_or_create_owned(&label),
            run: self.run.get_or_create_owned(&label),
            wait: self.wait.get_or_create_owned(&label),
            run_ns: Arc::default(),
            last_error: Arc::default(),
        }
    }
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

    /// Attempts finished ok, failed or retried.
    pub(super) fn attempts(&self) -> u64 {
        self.ok.get() + self.failed.get() + self.retried.get()
    }

    /// `t` plus this kind's counts.
    pub(super) fn add_to(&self, t: NodeStats) -> NodeStats {
        NodeStats {
            ok: t.ok + self.ok.get(),
            failed: t.failed + self.failed.get(),
            retried: t.retried + self.retried.get(),
            handed_back: t.handed_back + self.handed_back.get(),
            cancelled: t.cancelled + self.cancelled.get(),
            expired: t.expired + self.expired.get(),
        }
    }

    fn note(&self, error: &str) {
        if let Ok(mut last) = self.last_error.lock() {
            error.clone_into(&mut last);
        }
    }

    /// This kind's counts for service discovery (`nats micro stats`).
    pub(super) fn endpoint(&self, kind: &str, group: &str) -> EndpointStats {
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
