//! deploy/kubernetes: where the node and the dashboard serve metrics, and
//! who may reach them.

use super::*;

/// The node container of deploy/kubernetes/fleet-node.yaml.
pub(crate) fn node_container() -> serde_yaml::Value {
    let docs = yaml_docs("deploy/kubernetes/fleet-node.yaml");
    let deployment = find(&docs, "Deployment", "fleet-node");
    container(&deployment, "node")
}

pub(crate) fn find(docs: &[serde_yaml::Value], kind: &str, name: &str) -> serde_yaml::Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
        .clone()
}

fn container(deployment: &serde_yaml::Value, name: &str) -> serde_yaml::Value {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
        .clone()
}

/// The value of the environment variable `name` in a container.
fn env_value(container: &serde_yaml::Value, name: &str) -> Option<String> {
    container["env"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
        .map(str::to_string)
}

/// The value of `--flag` in a container's args (`--flag V` or `--flag=V`),
/// else of the environment variable `env`.
fn flag_or_env(container: &serde_yaml::Value, flag: &str, env: &str) -> Option<String> {
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str())
        .collect();
    for (i, arg) in args.iter().enumerate() {
        if *arg == flag {
            return args.get(i + 1).map(|s| s.to_string());
        }
        if let Some(v) = arg.strip_prefix(&format!("{flag}=")) {
            return Some(v.to_string());
        }
    }
    env_value(container, env)
}

/// A probe's or Service's port: a number, or the name of a container port.
fn port_number(container: &serde_yaml::Value, port: &serde_yaml::Value) -> u64 {
    if let Some(n) = port.as_u64() {
        return n;
    }
    let name = port.as_str().expect("a port number or name");
    container["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

/// The node's metrics address in the Kubernetes Deployment.
pub(crate) fn kubernetes_metrics_addr() -> SocketAddr {
    let node = node_container();
    flag_or_env(&node, "--metrics-addr", "FLEET_METRICS_ADDR")
        .expect("the node container sets --metrics-addr or FLEET_METRICS_ADDR")
        .parse()
        .expect("a HOST:PORT metrics address")
}

/// The node pods: probes at /healthz and /readyz on the port the node serves
/// metrics on (any address, so the kubelet reaches it), a container port
/// named for it, the prometheus.io annotations, the headless Service and the
/// NetworkPolicy for the same port. The dashboard: its Service, its token
/// Secret and the reader role. Both in kustomization.yaml.
#[test]
fn kubernetes_serves_metrics_where_probes_and_prometheus_look() {
    let addr = kubernetes_metrics_addr();
    assert!(
        addr.ip().is_unspecified(),
        "{addr}: the kubelet and Prometheus reach the pod's address, not loopback"
    );
    let port = u64::from(addr.port());
    let docs = yaml_docs("deploy/kubernetes/fleet-node.yaml");
    let deployment = find(&docs, "Deployment", "fleet-node");
    let node = node_container();
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &node[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(port_number(&node, &get["port"]), port, "{probe} port");
    }
    assert!(
        node["ports"]
            .as_sequence()
            .expect("container ports")
            .iter()
            .any(|p| p["containerPort"].as_u64() == Some(port) && p["name"] == "metrics"),
        "a container port {port} named metrics"
    );
    let template = &deployment["spec"]["template"]["metadata"];
    let annotations = &template["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(
        annotations["prometheus.io/port"].as_str(),
        Some(port.to_string().as_str())
    );
    assert_eq!(annotations["prometheus.io/path"].as_str(), Some("/metrics"));

    let service = find(&docs, "Service", "fleet-node-metrics");
    assert_eq!(
        service["spec"]["clusterIP"].as_str(),
        Some("None"),
        "headless"
    );
    assert_eq!(
        service["spec"]["publishNotReadyAddresses"].as_bool(),
        Some(true)
    );
    for (label, value) in service["spec"]["selector"]
        .as_mapping()
        .expect("a selector")
    {
        assert_eq!(
            &template["labels"][label.as_str().unwrap()],
            value,
            "selector"
        );
    }
    let ports = service["spec"]["ports"].as_sequence().expect("ports");
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["port"].as_u64(), Some(port));
    assert_eq!(port_number(&node, &ports[0]["targetPort"]), port);

    let policy = find(&docs, "NetworkPolicy", "fleet-node");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    admits_monitoring(&policy, port);

    let dash_docs = yaml_docs("deploy/kubernetes/fleet-dashboard.yaml");
    let dash = find(&dash_docs, "Deployment", "fleet-dashboard");
    let c = container(&dash, "dashboard");
    let listen: SocketAddr = flag_or_env(&c, "--listen", "FLEET_DASHBOARD_LISTEN")
        .expect("--listen")
        .parse()
        .unwrap();
    let dash_service = find(&dash_docs, "Service", "fleet-dashboard");
    let sport = &dash_service["spec"]["ports"][0];
    assert_eq!(
        port_number(&c, &sport["targetPort"]),
        u64::from(listen.port())
    );
    assert_eq!(sport["port"].as_u64(), Some(8080));
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(
            c[probe]["httpGet"]["path"].as_str(),
            Some("/healthz"),
            "{probe}"
        );
        assert_eq!(
            port_number(&c, &c[probe]["httpGet"]["port"]),
            u64::from(listen.port())
        );
    }
    // The token file is the key "token" of the Secret fleet-web-token.
    let token_file = flag_or_env(&c, "--web-token-file", "FLEET_DASHBOARD_TOKEN_FILE")
        .expect("--web-token-file");
    let mount = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| token_file.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap())))
        .expect("the token file is in a mounted volume");
    let volume = dash["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap()
        .clone();
    assert_eq!(
        volume["secret"]["secretName"].as_str(),
        Some("fleet-web-token")
    );
    let key = token_file.rsplit('/').next().unwrap();
    assert!(
        volume["secret"]["items"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|i| i["key"] == "token" && i["path"] == key),
        "{token_file} is the Secret's key token"
    );
    assert_eq!(env_value(&c, "NATS_USER").as_deref(), Some("reader"));
    assert_eq!(
        env_value(&c, "NATS_INBOX_PREFIX").as_deref(),
        Some("_INBOX_reader")
    );
    admits_monitoring(
        &find(&dash_docs, "NetworkPolicy", "fleet-dashboard"),
        u64::from(listen.port()),
    );

    let kustomization = yaml_one("deploy/kubernetes/kustomization.yaml");
    let resources: Vec<&str> = kustomization["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    for file in ["fleet-node.yaml", "fleet-dashboard.yaml"] {
        assert!(resources.contains(&file), "{file} in kustomization.yaml");
    }
    for file in resources {
        assert!(
            root().join("deploy/kubernetes").join(file).is_file(),
            "{file}"
        );
    }
}

/// The policy lets the namespace "monitoring" reach `port`.
fn admits_monitoring(policy: &serde_yaml::Value, port: u64) {
    let admitted = policy["spec"]["ingress"]
        .as_sequence()
        .expect("ingress rules")
        .iter()
        .any(|rule| {
            rule["ports"]
                .as_sequence()
                .into_iter()
                .flatten()
                .any(|p| p["port"].as_u64() == Some(port))
                && rule["from"].as_sequence().into_iter().flatten().any(|f| {
                    f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                        == "monitoring"
                })
        });
    assert!(
        admitted,
        "{}: port {port} from namespace monitoring",
        policy["metadata"]["name"].as_str().unwrap_or_default()
    );
}
