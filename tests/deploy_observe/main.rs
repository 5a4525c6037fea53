//! The monitoring side of `deploy/` against the real thing: promtool accepts
//! the Prometheus config and the alerts; every metric the alerts and the
//! Grafana dashboard query is one a real node or a real `fleet dashboard`
//! exports (scraped after real tasks, one of them failing for good); the
//! Grafana JSON imports with one Prometheus data source and its queries are
//! valid PromQL; the Kubernetes probes, ports and annotations, the systemd
//! units and prometheus.yml agree on where metrics are served; a node tells
//! systemd READY=1 and STOPPING=1; deploy/README.md shows only the commands
//! run here. Without promtool these tests fail (run bin/setup), never skip.

mod grafana;
mod kubernetes;
mod live;
mod promql;
mod queries;
mod scrape;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use fleet_testkit::http::{get, parse_metrics, request};
use fleet_testkit::*;
use queries::alert_queries;
use serde::Deserialize;

/// The commands deploy/README.md (Monitoring) and the comments of
/// prometheus.yml and alerts.yml show, run from the repository root.
const PROMTOOL_COMMANDS: [&str; 2] = [
    "promtool check config --syntax-only deploy/prometheus/prometheus.yml",
    "promtool check rules deploy/prometheus/alerts.yml",
];

const TOKEN: &str = "operator-token-for-deploy-observe";

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// Every document of a (multi-document) YAML file.
fn yaml_docs(path: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(&read(path))
        .map(|doc| serde_yaml::Value::deserialize(doc).unwrap_or_else(|e| panic!("{path}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml_one(path: &str) -> serde_yaml::Value {
    let mut docs = yaml_docs(path);
    assert_eq!(docs.len(), 1, "{path}: one document");
    docs.remove(0)
}

fn grafana() -> serde_json::Value {
    let path = "deploy/grafana/fleet-dashboard.json";
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

/// Runs a promtool command line as written (from the repository root), with
/// the promtool bin/setup installs; panics with its output if it fails.
fn run_promtool(line: &str) {
    let args: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(args[0], "promtool", "{line}");
    let out = Command::new(tool("promtool"))
        .args(&args[1..])
        .current_dir(root())
        .output()
        .expect("running promtool (bin/setup installs it)");
    assert!(
        out.status.success(),
        "`{line}` failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// PromQL: which metrics, and which of their labels, an expression reads.

// ---------------------------------------------------------------------------

#[test]
fn promtool_accepts_the_prometheus_config_and_the_alerts() {
    for line in PROMTOOL_COMMANDS {
        run_promtool(line);
    }
}

/// deploy/README.md's Monitoring section shows no command but the ones
/// run here, and the config files' comments show the same.
#[test]
fn the_readme_shows_only_commands_the_tests_run() {
    let readme = read("deploy/README.md");
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Monitoring"))
        .expect("deploy/README.md has a Monitoring section");
    let mut commands = Vec::new();
    let mut in_block = false;
    for line in section.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block && !line.trim().is_empty() && !line.trim_start().starts_with('#') {
            commands.push(line.trim().to_string());
        }
    }
    assert!(!in_block, "an unclosed code block");
    assert_eq!(
        commands, PROMTOOL_COMMANDS,
        "the Monitoring section's commands"
    );
    for (file, line) in [
        ("deploy/prometheus/prometheus.yml", PROMTOOL_COMMANDS[0]),
        ("deploy/prometheus/prometheus.yml", PROMTOOL_COMMANDS[1]),
        ("deploy/prometheus/alerts.yml", PROMTOOL_COMMANDS[1]),
    ] {
        assert!(
            read(file).contains(&format!("#   {line}\n")),
            "{file} shows {line}"
        );
    }
    // Every alert is explained, one line each.
    for q in alert_queries() {
        let name = q.place.trim_start_matches("alerts.yml ");
        assert!(
            section.contains(&format!("`{name}`")),
            "the Monitoring section explains {name}"
        );
    }
}
