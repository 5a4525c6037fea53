//! prometheus.yml against the systemd units and the Kubernetes objects.

use super::kubernetes::{find, kubernetes_metrics_addr};
use super::*;

/// `Key=Value` lines of a systemd unit (or env file), in order.
fn unit_settings(path: &str) -> Vec<(String, String)> {
    read(path)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn setting<'a>(settings: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    settings
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// prometheus.yml scrapes where the systemd units and the Kubernetes
/// objects serve: instance N of fleet-node@ on 127.0.0.1:910N, the
/// dashboard unit's --listen, the Services' names and ports, the token
/// Secret's path; the node unit is Type=notify for the node's READY=1.
#[test]
fn prometheus_scrapes_where_the_deploys_serve() {
    let prom = yaml_one("deploy/prometheus/prometheus.yml");
    let jobs: BTreeMap<&str, &serde_yaml::Value> = prom["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
        .iter()
        .map(|j| (j["job_name"].as_str().expect("job_name"), j))
        .collect();
    assert_eq!(
        jobs.keys().copied().collect::<Vec<_>>(),
        [
            "fleet-dashboard",
            "fleet-dashboard-kubernetes",
            "fleet-node",
            "fleet-node-kubernetes"
        ],
        "the alerts and the Grafana dashboard match jobs fleet-node* and fleet-dashboard*"
    );
    assert_eq!(prom["rule_files"][0].as_str(), Some("alerts.yml"));
    let targets = |job: &str| -> Vec<String> {
        jobs[job]["static_configs"]
            .as_sequence()
            .unwrap()
            .iter()
            .flat_map(|c| c["targets"].as_sequence().unwrap().iter())
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    };

    let node = unit_settings("deploy/systemd/fleet-node@.service");
    assert_eq!(setting(&node, "Type"), ["notify"]);
    assert_eq!(setting(&node, "NotifyAccess"), ["main"]);
    let env = setting(&node, "Environment");
    let template = env
        .iter()
        .find_map(|e| e.strip_prefix("FLEET_METRICS_ADDR="))
        .expect("Environment=FLEET_METRICS_ADDR=… in fleet-node@.service");
    for target in targets("fleet-node") {
        assert!(
            (1..=9).any(|n| template.replace("%i", &n.to_string()) == target),
            "{target} is no fleet-node@N's {template}"
        );
    }
    assert!(
        !unit_settings("deploy/systemd/node.env.example")
            .iter()
            .any(|(k, _)| k == "FLEET_METRICS_ADDR"),
        "node.env is every instance's: a metrics address there would clash"
    );

    let dash = unit_settings("deploy/systemd/fleet-dashboard.service");
    let exec = setting(&dash, "ExecStart").join(" ");
    let words: Vec<&str> = exec.split_whitespace().collect();
    let after = |flag: &str| {
        words
            .iter()
            .position(|w| *w == flag)
            .and_then(|i| words.get(i + 1))
            .copied()
            .unwrap_or_else(|| panic!("{flag} in {exec}"))
    };
    assert_eq!(words[1], "dashboard", "{exec}");
    assert_eq!(
        vec![after("--listen").to_string()],
        targets("fleet-dashboard")
    );
    assert!(after("--web-token-file").contains("web-token"), "{exec}");
    let dash_env = unit_settings("deploy/systemd/dashboard.env.example");
    assert_eq!(setting(&dash_env, "NATS_USER"), ["reader"]);
    assert_eq!(setting(&dash_env, "NATS_INBOX_PREFIX"), ["_INBOX_reader"]);

    // Kubernetes: the Services by their cluster DNS names.
    let docs = yaml_docs("deploy/kubernetes/fleet-node.yaml");
    let service = find(&docs, "Service", "fleet-node-metrics");
    let dns = &jobs["fleet-node-kubernetes"]["dns_sd_configs"][0];
    assert_eq!(
        dns["names"][0].as_str(),
        Some(
            format!(
                "fleet-node-metrics.{}.svc.cluster.local",
                service["metadata"]["namespace"].as_str().unwrap()
            )
            .as_str()
        )
    );
    assert_eq!(dns["port"], service["spec"]["ports"][0]["port"]);
    assert_eq!(
        dns["port"].as_u64(),
        Some(u64::from(kubernetes_metrics_addr().port()))
    );
    let dash_docs = yaml_docs("deploy/kubernetes/fleet-dashboard.yaml");
    let dash_service = find(&dash_docs, "Service", "fleet-dashboard");
    assert_eq!(
        targets("fleet-dashboard-kubernetes"),
        [format!(
            "fleet-dashboard.{}.svc.cluster.local:{}",
            dash_service["metadata"]["namespace"].as_str().unwrap(),
            dash_service["spec"]["ports"][0]["port"].as_u64().unwrap()
        )]
    );
    for job in ["fleet-dashboard", "fleet-dashboard-kubernetes"] {
        let auth = &jobs[job]["authorization"];
        assert_eq!(auth["type"].as_str(), Some("Bearer"), "{job}");
        assert!(
            auth["credentials_file"].as_str().is_some(),
            "{job}: the token"
        );
    }
    assert_eq!(
        jobs["fleet-dashboard-kubernetes"]["authorization"]["credentials_file"].as_str(),
        Some("/etc/prometheus/secrets/fleet-web-token/token"),
        "the Secret fleet-web-token, key token, as the Prometheus Operator mounts it"
    );
}
