//! What the dashboard shows, read once a second: the fleet's status, the
//! live nodes (service discovery), and the tasks finished per second over
//! the last 15 minutes. Every page and `/metrics` read the latest reading;
//! nothing asks NATS per request.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleet::micro::{self, Stats};
use fleet::status::{self, Status};
use serde::Serialize;
use tokio::sync::watch;

/// How often the fleet is read.
pub(crate) const EVERY: Duration = Duration::from_secs(1);
/// How long service discovery waits for the nodes' answers.
const DISCOVERY_WAIT: Duration = Duration::from_millis(300);
/// Throughput samples kept: 15 minutes at one a second.
const KEPT: usize = 900;

/// One reading of the fleet.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Snapshot {
    /// When it was taken (RFC 3339).
    pub(crate) at: String,
    /// The status, unless it could not be read.
    pub(crate) status: Option<Status>,
    /// Why the status could not be read.
    pub(crate) error: Option<String>,
    /// The live nodes.
    pub(crate) nodes: Vec<NodeView>,
    /// Tasks finished per second, oldest first.
    pub(crate) throughput: Vec<Sample>,
}

/// A live node, as its discovery answer says.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub(crate) struct NodeView {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) group: String,
    pub(crate) kinds: Vec<String>,
    pub(crate) state: String,
    pub(crate) concurrency: u64,
    pub(crate) in_flight: u64,
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    pub(crate) retried: u64,
    pub(crate) started: String,
}

/// Tasks finished per second at one instant.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub(crate) struct Sample {
    /// Seconds since the Unix epoch.
    pub(crate) t: f64,
    /// Ok results per second.
    pub(crate) ok: f64,
    /// Failures for good per second.
    pub(crate) failed: f64,
}

impl NodeView {
    pub(crate) fn from_stats(stats: &Stats) -> NodeView {
        let meta = &stats.identity.metadata;
        let get = |k: &str| meta.get(k).cloned().unwrap_or_default();
        let number = |k: &str| meta.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut view = NodeView {
            id: stats.identity.id.clone(),
            name: get("node"),
            group: get("group"),
            kinds: get("kinds")
                .split(',')
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect(),
            state: get("state"),
            concurrency: number("concurrency"),
            in_flight: number("in_flight"),
            started: stats.started.clone(),
            ..NodeView::default()
        };
        for e in &stats.endpoints {
            let count = |k: &str| e.data.as_ref().and_then(|d| d[k].as_u64()).unwrap_or(0);
            view.ok += count("ok");
            view.failed += count("failed");
            view.retried += count("retried");
        }
        view
    }
}

/// Tasks finished per second, from the nodes' running totals.
#[derive(Debug, Default)]
pub(crate) struct Throughput {
    /// Each node's totals (ok, failed) at the last reading.
    last: HashMap<String, (u64, u64)>,
    last_at: Option<f64>,
    samples: VecDeque<Sample>,
}

impl Throughput {
    /// A reading at `t` (Unix seconds). A node seen for the first time adds
    /// all its work, except on the first reading (work from before the
    /// dashboard); a node gone adds nothing; totals never count backwards.
    pub(crate) fn record(&mut self, t: f64, nodes: &[NodeView]) {
        let first = self.last_at.is_none();
        let (mut ok, mut failed) = (0u64, 0u64);
        let mut now = HashMap::new();
        for node in nodes {
            let before = match self.last.get(&node.id) {
                Some(&b) => b,
                None if first => (node.ok, node.failed),
                None => (0, 0),
            };
            ok += node.ok.saturating_sub(before.0);
            failed += node.failed.saturating_sub(before.1);
            now.insert(node.id.clone(), (node.ok, node.failed));
        }
        if let Some(last) = self.last_at {
            let dt = (t - last).max(0.001);
            self.samples.push_back(Sample {
                t,
                ok: ok as f64 / dt,
                failed: failed as f64 / dt,
            });
            while self.samples.len() > KEPT {
                self.samples.pop_front();
            }
        }
        self.last = now;
        self.last_at = Some(t);
    }

    pub(crate) fn samples(&self) -> Vec<Sample> {
        self.samples.iter().copied().collect()
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Reads the fleet every [`EVERY`] and publishes each reading, until the
/// receivers are gone.
pub(crate) async fn run(client: async_nats::Client, tx: watch::Sender<Arc<Snapshot>>) {
    let js = async_nats::jetstream::new(client.clone());
    let mut throughput = Throughput::default();
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (status, nodes) = tokio::join!(
            status::status(&js),
            micro::discover(&client, DISCOVERY_WAIT)
        );
        let nodes: Vec<NodeView> = nodes
            .unwrap_or_default()
            .iter()
            .map(NodeView::from_stats)
            .collect();
        throughput.record(unix_now(), &nodes);
        let (status, error) = match status {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let snapshot = Snapshot {
            at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            status,
            error,
            nodes,
            throughput: throughput.samples(),
        };
        if tx.send(Arc::new(snapshot)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, ok: u64, failed: u64) -> NodeView {
        NodeView {
            id: id.into(),
            ok,
            failed,
            ..NodeView::default()
        }
    }

    #[test]
    fn throughput_counts_work_since_the_last_reading() {
        let mut t = Throughput::default();
        t.record(100.0, &[node("a", 500, 5)]);
        assert!(
            t.samples().is_empty(),
            "the first reading only sets the baseline"
        );
        t.record(101.0, &[node("a", 520, 6)]);
        // Node b appears: its work is new. Node a restarts: nothing negative.
        t.record(103.0, &[node("a", 3, 0), node("b", 10, 2)]);
        let s = t.samples();
        assert_eq!((s[0].ok, s[0].failed), (20.0, 1.0));
        assert_eq!((s[1].ok, s[1].failed), (5.0, 1.0));
    }

    #[test]
    fn throughput_keeps_fifteen_minutes() {
        let mut t = Throughput::default();
        for i in 0..2000 {
            t.record(i as f64, &[node("a", i, 0)]);
        }
        let s = t.samples();
        assert_eq!(s.len(), KEPT);
        assert_eq!(s.last().unwrap().ok, 1.0);
    }
}
