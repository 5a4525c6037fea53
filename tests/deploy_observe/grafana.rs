//! The Grafana dashboard as Grafana imports it.

use super::promql::grafana_variables;
use super::queries::panels;
use super::*;

/// Grafana's own variables, which the dashboard need not define.
const GRAFANA_BUILTINS: &[&str] = &[
    "__rate_interval",
    "__interval",
    "__interval_ms",
    "__range",
    "__range_s",
    "__range_ms",
];

/// The dashboard imports into Grafana as shipped: one Prometheus input that
/// every panel, query and variable uses; a uid and a title; unique panel
/// ids; only variables it defines; every panel type it declares; and every
/// query valid PromQL (checked by promtool, as recording rules).
#[test]
fn the_grafana_dashboard_imports_and_its_queries_are_promql() {
    let d = grafana();
    let uid = d["uid"].as_str().expect("a uid");
    assert!(!uid.is_empty() && uid.len() <= 40, "uid {uid:?}");
    assert!(!d["title"].as_str().expect("a title").is_empty());
    let inputs = d["__inputs"].as_array().expect("__inputs");
    assert_eq!(inputs.len(), 1, "{inputs:?}");
    assert_eq!(
        (
            &inputs[0]["name"],
            &inputs[0]["type"],
            &inputs[0]["pluginId"]
        ),
        (
            &"DS_PROMETHEUS".into(),
            &"datasource".into(),
            &"prometheus".into()
        )
    );
    let source = serde_json::json!({"type": "prometheus", "uid": "${DS_PROMETHEUS}"});
    let required: BTreeSet<&str> = d["__requires"]
        .as_array()
        .expect("__requires")
        .iter()
        .filter(|r| r["type"] == "panel")
        .filter_map(|r| r["id"].as_str())
        .collect();
    let defined: BTreeSet<String> = d["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .collect();
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            assert_eq!(v["datasource"], source, "variable {}", v["name"]);
        }
    }

    let mut ids = BTreeSet::new();
    let mut rules = String::from("groups:\n  - name: grafana\n    rules:\n");
    for p in panels(&d) {
        let title = p["title"].as_str().unwrap_or_default().to_string();
        assert!(!title.is_empty(), "a panel without a title: {p}");
        let id = p["id"].as_u64().unwrap_or_else(|| panic!("{title}: an id"));
        assert!(ids.insert(id), "panel id {id} twice");
        let kind = p["type"].as_str().unwrap_or_default();
        if kind == "row" {
            continue;
        }
        assert!(
            required.contains(kind),
            "{title}: panel type {kind} not in __requires"
        );
        assert_eq!(p["datasource"], source, "panel {title:?}");
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: targets"));
        assert!(!targets.is_empty(), "{title}: no query");
        let mut refs = BTreeSet::new();
        for t in targets {
            let r = t["refId"].as_str().unwrap_or_default();
            assert!(refs.insert(r.to_string()), "{title}: refId {r:?} twice");
            assert_eq!(t["datasource"], source, "panel {title:?} query {r}");
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(!expr.trim().is_empty(), "{title} {r}: no expr");
            let mut concrete = expr.to_string();
            for var in grafana_variables(expr) {
                let value = if GRAFANA_BUILTINS.contains(&var.as_str()) {
                    "5m"
                } else {
                    assert!(
                        defined.contains(&var),
                        "{title} {r}: ${var} is not a variable of the dashboard"
                    );
                    ".*"
                };
                for form in [
                    format!("${{{var}}}"),
                    format!("${var}"),
                    format!("[[{var}]]"),
                ] {
                    concrete = concrete.replace(&form, value);
                }
            }
            rules.push_str(&format!(
                "      - record: grafana:panel{id}:{}\n        expr: {}\n",
                r.to_lowercase(),
                serde_json::to_string(&concrete).unwrap()
            ));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("grafana-queries.yml");
    std::fs::write(&file, &rules).unwrap();
    let out = Command::new(tool("promtool"))
        .arg("check")
        .arg("rules")
        .arg(&file)
        .output()
        .expect("running promtool (bin/setup installs it)");
    assert!(
        out.status.success(),
        "a Grafana query is not valid PromQL:\n{}{}\n{rules}",
        text(&out.stdout),
        text(&out.stderr)
    );
}
