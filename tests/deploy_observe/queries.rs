//! The queries of the deploy files (alerts.yml, the Grafana dashboard), and
//! what they use that nobody exports.

use super::promql::{read_matchers, selectors, variable_selectors, Selector};
use super::*;

/// Prometheus's own series: not exported by fleet, present for every target.
const PROMETHEUS_OWN: &[&str] = &["up"];

/// Labels Prometheus puts on every series it scrapes (target labels).
const TARGET_LABELS: &[&str] = &["job", "instance", "__name__"];

/// A query of the deploy files: where it is, and what it says.
#[derive(Debug, Clone)]
pub(crate) struct Query {
    pub(crate) place: String,
    pub(crate) expr: String,
    variable: bool,
}

/// Every alert and recording rule expression of alerts.yml.
pub(crate) fn alert_queries() -> Vec<Query> {
    let rules = yaml_one("deploy/prometheus/alerts.yml");
    let mut out = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .expect("an alert or a record name");
            out.push(Query {
                place: format!("alerts.yml {name}"),
                expr: rule["expr"].as_str().expect("expr").to_string(),
                variable: false,
            });
        }
    }
    out
}

/// Every panel of the dashboard, rows' nested panels included.
pub(crate) fn panels(dashboard: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        out.push(p.clone());
        if let Some(nested) = p["panels"].as_array() {
            out.extend(nested.iter().cloned());
        }
    }
    out
}

/// Every panel target expression and variable query of the dashboard.
pub(crate) fn grafana_queries(dashboard: &serde_json::Value) -> Vec<Query> {
    let mut out = Vec::new();
    for p in panels(dashboard) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(Query {
                place: format!(
                    "fleet-dashboard.json panel {:?} {}",
                    p["title"].as_str().unwrap_or_default(),
                    t["refId"].as_str().unwrap_or_default()
                ),
                expr: t["expr"].as_str().unwrap_or_default().to_string(),
                variable: false,
            });
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if v["type"] != "query" {
            continue;
        }
        let query = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .or(v["definition"].as_str())
            .unwrap_or_default();
        out.push(Query {
            place: format!(
                "fleet-dashboard.json variable ${}",
                v["name"].as_str().unwrap_or_default()
            ),
            expr: query.to_string(),
            variable: true,
        });
    }
    out
}

/// The selectors of a query, by where they are used.
pub(crate) fn used(queries: &[Query]) -> Vec<(String, Selector)> {
    queries
        .iter()
        .flat_map(|q| {
            let found = if q.variable {
                variable_selectors(&q.expr)
            } else {
                selectors(&q.expr)
            };
            found.into_iter().map(|s| (q.place.clone(), s))
        })
        .collect()
}

/// Series names exported, with the label names each carries.
pub(crate) type Exported = BTreeMap<String, BTreeSet<String>>;

/// The names and label names of a Prometheus text exposition.
pub(crate) fn exported(exposition: &str) -> Exported {
    let mut out = Exported::new();
    for series in parse_metrics(exposition).keys() {
        let (name, rest) = series.split_once('{').unwrap_or((series.as_str(), ""));
        let (_, labels, _) = read_matchers(&format!("{{{rest}").chars().collect::<Vec<_>>(), 0);
        out.entry(name.to_string()).or_default().extend(labels);
    }
    out
}

/// What the queries use that nobody exports: unknown metrics, and labels a
/// metric does not carry; one line each, saying where.
pub(crate) fn unexported(used: &[(String, Selector)], exported: &Exported) -> Vec<String> {
    let mut problems = Vec::new();
    for (place, sel) in used {
        if PROMETHEUS_OWN.contains(&sel.name.as_str()) {
            continue;
        }
        let Some(labels) = exported.get(&sel.name) else {
            problems.push(format!("{place}: metric {} is not exported", sel.name));
            continue;
        };
        for label in &sel.labels {
            if !labels.contains(label) && !TARGET_LABELS.contains(&label.as_str()) {
                problems.push(format!(
                    "{place}: {} has no label {label} (it has {labels:?})",
                    sel.name
                ));
            }
        }
    }
    problems
}

/// The check the live test makes does fail: a made-up metric, and a real
/// metric with a label it lacks, are reported with where they are used.
#[test]
fn an_unexported_name_or_label_is_reported() {
    let exposition =
        "# TYPE fleet_node_tasks counter\nfleet_node_tasks_total{kind=\"echo\",outcome=\"ok\"} 3\n";
    let queries = [Query {
        place: "sample".into(),
        expr: r#"sum(rate(fleet_node_tasks_total{tenant="a"}[5m])) + sum(fleet_bogus_total) + up"#
            .into(),
        variable: false,
    }];
    let problems = unexported(&used(&queries), &exported(exposition));
    assert_eq!(
        problems,
        [
            "sample: fleet_node_tasks_total has no label tenant (it has {\"kind\", \"outcome\"})",
            "sample: metric fleet_bogus_total is not exported",
        ]
    );
}
