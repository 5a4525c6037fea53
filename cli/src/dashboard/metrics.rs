//! Fleet-wide Prometheus metrics at the dashboard's `/metrics`: queue depth,
//! groups, kept results, dead letters and live nodes, from the latest
//! reading. Exported here once, not by every node; per-node counters
//! (`fleet_node_*`) come from each node's own `--metrics-addr`.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use super::{AppState, Refused, Scope, Snapshot};

type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    tenant: String,
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    group: String,
}

/// Every fleet-wide metric name, as exported (the Grafana dashboard's
/// queries are checked against these and the node's).
#[cfg(test)]
pub(crate) const NAMES: &[&str] = &[
    "fleet_up",
    "fleet_queue_depth",
    "fleet_group_pending",
    "fleet_group_in_flight",
    "fleet_group_redelivered",
    "fleet_group_waiting_pulls",
    "fleet_group_oldest_waiting_seconds",
    "fleet_group_paused",
    "fleet_results_kept",
    "fleet_dead_letters",
    "fleet_nodes",
];

/// The Prometheus text (format 0.0.4) of one reading.
pub(crate) fn exposition(snapshot: &Snapshot) -> String {
    let mut registry = Registry::default();
    let up = Gauge::<i64>::default();
    let nodes = Gauge::<i64>::default();
    let results = Gauge::<i64>::default();
    let depth = Family::<KindLabels, Gauge>::default();
    let dead = Family::<KindLabels, Gauge>::default();
    let group = |name: &str, help: &str, registry: &mut Registry| {
        let family = Family::<GroupLabels, FloatGauge>::default();
        registry.register(name, help, family.clone());
        family
    };
    registry.register(
        "fleet_up",
        "1 when the last reading of the streams worked",
        up.clone(),
    );
    registry.register(
        "fleet_queue_depth",
        "Tasks in TASKS (waiting or running), by tenant and kind",
        depth.clone(),
    );
    let pending = group(
        "fleet_group_pending",
        "Tasks no node of the group has been handed yet",
        &mut registry,
    );
    let in_flight = group(
        "fleet_group_in_flight",
        "Tasks handed to a node and not yet acked",
        &mut registry,
    );
    let redelivered = group(
        "fleet_group_redelivered",
        "Tasks handed out more than once",
        &mut registry,
    );
    let waiting = group(
        "fleet_group_waiting_pulls",
        "Open pull requests (nodes with free slots)",
        &mut registry,
    );
    let oldest = group(
        "fleet_group_oldest_waiting_seconds",
        "Age of the oldest task no node has been handed yet (0 when none waits)",
        &mut registry,
    );
    let paused = group(
        "fleet_group_paused",
        "1 while the group is paused (fleet pause): its nodes start no task",
        &mut registry,
    );
    registry.register(
        "fleet_results_kept",
        "Results kept in RESULTS",
        results.clone(),
    );
    registry.register(
        "fleet_dead_letters",
        "Dead letters in DEAD, by tenant and kind",
        dead.clone(),
    );
    registry.register(
        "fleet_nodes",
        "Live nodes answering service discovery",
        nodes.clone(),
    );
    nodes.set(snapshot.nodes.len() as i64);
    if let Some(status) = &snapshot.status {
        up.set(1);
        results.set(status.results as i64);
        let labels = |c: &fleet::status::KindCount| KindLabels {
            tenant: c.tenant.clone().unwrap_or_default(),
            kind: c.kind.clone(),
        };
        for c in &status.kinds {
            // Summed over the priority bands.
            depth.get_or_create(&labels(c)).inc_by(c.count as i64);
        }
        for c in &status.dead_kinds {
            dead.get_or_create(&labels(c)).set(c.count as i64);
        }
        for g in &status.groups {
            let l = GroupLabels {
                group: g.name.clone(),
            };
            pending.get_or_create(&l).set(g.pending as f64);
            in_flight.get_or_create(&l).set(g.in_flight as f64);
            redelivered.get_or_create(&l).set(g.redelivered as f64);
            waiting.get_or_create(&l).set(g.waiting_pulls as f64);
            oldest
                .get_or_create(&l)
                .set(g.oldest_waiting_s.unwrap_or(0.0));
            paused
                .get_or_create(&l)
                .set(if g.paused { 1.0 } else { 0.0 });
        }
    }
    let mut text = String::new();
    if prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).is_err() {
        text.clear();
    }
    text
}

pub(super) async fn serve(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, Refused> {
    if app.tokens.read(&headers)? != Scope::Operator {
        return Err(Refused(
            axum::http::StatusCode::FORBIDDEN,
            "fleet-wide metrics are for the operator's token".into(),
        ));
    }
    let snapshot = app.snapshot.borrow().clone();
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        exposition(&snapshot),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_exported_and_listed() {
        use fleet::status::{GroupStatus, KindCount, Status};
        let kind = |count| KindCount {
            tenant: Some("alice".into()),
            kind: "echo".into(),
            priority: None,
            count,
        };
        let snapshot = Snapshot {
            status: Some(Status {
                tasks: 3,
                results: 7,
                dead: 1,
                groups: vec![GroupStatus {
                    name: "workers".into(),
                    kinds: Vec::new(),
                    pending: 2,
                    in_flight: 1,
                    redelivered: 0,
                    waiting_pulls: 4,
                    oldest_waiting_s: Some(1.5),
                    paused: true,
                    paused_until: Some("2026-12-01T09:00:00Z".into()),
                    bands: Vec::new(),
                }],
                kinds: vec![kind(3)],
                dead_kinds: vec![kind(1)],
            }),
            ..Snapshot::default()
        };
        let text = exposition(&snapshot);
        assert!(
            text.contains("fleet_queue_depth{tenant=\"alice\",kind=\"echo\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("fleet_group_oldest_waiting_seconds{group=\"workers\"} 1.5"),
            "{text}"
        );
        assert!(text.contains("fleet_up 1"), "{text}");
        assert!(
            text.contains("fleet_group_paused{group=\"workers\"} 1"),
            "{text}"
        );
        for name in NAMES {
            assert!(
                text.contains(&format!("# TYPE {name} gauge")),
                "{name} missing:\n{text}"
            );
        }
        let exported = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        assert_eq!(exported, NAMES.len(), "{text}");
    }
}
