//! The whole path a Prometheus would take, against a real node and a real
//! `fleet dashboard`.

use super::kubernetes::node_container;
use super::queries::{alert_queries, exported, grafana_queries, unexported, used};
use super::*;

/// A running `fleet dashboard`; killed when dropped.
struct Dashboard {
    _child: KillOnDrop,
    addr: SocketAddr,
}

fn dashboard(server: &NatsServer, token_file: &Path) -> Dashboard {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut child = Command::new(fleet_bin())
        .args(["--server", &server.url(), "dashboard", "--listen"])
        .arg(addr.to_string())
        .arg("--web-token-file")
        .arg(token_file)
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting fleet dashboard");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), format!("fleet dashboard: http://{addr}/"));
    Dashboard {
        _child: KillOnDrop(child),
        addr,
    }
}

/// The next message on the notify socket, or `None` within `limit`.
fn notified(socket: &UnixDatagram, limit: Duration) -> Option<String> {
    socket.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).ok()?;
    Some(text(&buf[..n]).trim_end().to_string())
}

/// The whole path a Prometheus would take: `fleet setup`, a node with
/// metrics (and a systemd notify socket), a dashboard with a token file,
/// tasks that succeed, one that fails for good and one still running; then
/// both scraped as prometheus.yml scrapes them, and every metric and label
/// the alerts and the Grafana dashboard query must be among what they
/// export. On the way, the commands the failure alerts point to (`fleet
/// dead list --kind`, `nats micro stats fleet`) show the failure, the
/// Kubernetes probe paths answer on the real node, and the node sends
/// systemd READY=1 and STOPPING=1.
#[test]
fn every_metric_the_alerts_and_the_dashboard_query_is_exported() {
    let server = NatsServer::start();
    let setup = fleet(&server, &["setup"], b"");
    assert!(setup.status.success(), "{}", text(&setup.stderr));

    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut node = NodeProc::start(
        &server.url(),
        server.dir.path(),
        "node1",
        &[
            "--dev-builtins",
            "--max-deliver",
            "1",
            "--grace",
            "1s",
            "--metrics-addr",
            &metrics.to_string(),
        ],
        &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())],
    );
    node.wait_ready(Duration::from_secs(30));
    let _logs = LogsOnFailure {
        files: vec![("node1".into(), node.log.clone())],
    };
    assert_eq!(
        notified(&notify, Duration::from_secs(10)).as_deref(),
        Some("READY=1"),
        "a Type=notify unit hears READY=1 once the node is bound"
    );

    let ok = fleet(
        &server,
        &["submit", "echo", "--no-progress"],
        numbered_lines(5).as_bytes(),
    );
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let failed = fleet(&server, &["submit", "fail", "--no-progress"], b"boom\n");
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed.stderr));
    // What the alerts on failures tell the operator to look at.
    let dead = fleet(&server, &["dead", "list", "--kind", "fail"], b"");
    assert!(dead.status.success(), "{}", text(&dead.stderr));
    assert_eq!(
        text(&dead.stdout).lines().count(),
        1,
        "{}",
        text(&dead.stdout)
    );
    let stats = Command::new(tool("nats"))
        .args([
            "--server",
            &server.url(),
            "micro",
            "stats",
            "fleet",
            "--json",
        ])
        .output()
        .expect("running nats");
    assert!(stats.status.success(), "{}", text(&stats.stderr));
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    let last_error = stats[0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "fail")
        .map(|e| e["last_error"].as_str().unwrap_or_default().to_string());
    assert!(
        last_error.is_some_and(|e| !e.is_empty()),
        "nats micro stats fleet shows the handler's last error: {stats}"
    );
    // One task still running: the queue depth has a series while it runs.
    let input = dir.path().join("sleep");
    std::fs::write(&input, "20s\n").unwrap();
    let _running = KillOnDrop(spawn_submit(
        &server,
        &["sleep", "--no-progress"],
        &input,
        &dir.path().join("sleep.out"),
    ));
    let node_text = eventually(Duration::from_secs(10), "the sleep task running", || {
        let body = get(metrics, "/metrics")?.body;
        (body.contains("fleet_node_in_flight 1")).then_some(body)
    });

    let token_file = dir.path().join("web-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let dash = dashboard(&server, &token_file);
    assert_eq!(
        get(dash.addr, "/healthz").unwrap().status,
        200,
        "the probe needs no token"
    );
    let refused = get(dash.addr, "/metrics").expect("the dashboard answers");
    assert_eq!(
        refused.status, 401,
        "/metrics without the bearer token: {}",
        refused.body
    );
    let bearer = format!("Bearer {TOKEN}");
    let dash_text = eventually(
        Duration::from_secs(15),
        "the dashboard's metrics showing the dead letter and the running task",
        || {
            let r = request(
                dash.addr,
                "GET",
                "/metrics",
                &[("Authorization", &bearer)],
                "",
            )?;
            assert_eq!(r.status, 200, "{}", r.body);
            let wanted = [
                "fleet_up 1",
                "fleet_nodes 1",
                "fleet_dead_letters{tenant=\"\",kind=\"fail\"} 1",
                "fleet_queue_depth{tenant=\"\",kind=\"sleep\"} 1",
            ];
            wanted
                .iter()
                .all(|w| r.body.lines().any(|l| l == *w))
                .then_some(r.body)
        },
    );

    let mut all = exported(&node_text);
    for (name, labels) in exported(&dash_text) {
        all.entry(name).or_default().extend(labels);
    }
    let mut queries = alert_queries();
    queries.extend(grafana_queries(&grafana()));
    let used = used(&queries);
    assert!(
        used.len() > 30,
        "the extractor found too few metrics: {used:?}"
    );
    let problems = unexported(&used, &all);
    assert!(
        problems.is_empty(),
        "the alerts or the Grafana dashboard query what fleet does not export:\n{}\n\nexported: {:?}",
        problems.join("\n"),
        all.keys().collect::<Vec<_>>()
    );

    // The Kubernetes probes' paths, on a real node.
    let node_yaml = node_container();
    for (probe, want) in [("livenessProbe", 200), ("readinessProbe", 200)] {
        let path = node_yaml[probe]["httpGet"]["path"]
            .as_str()
            .unwrap_or_else(|| panic!("{probe} path"));
        let answer = get(metrics, path).unwrap_or_else(|| panic!("{path} answers"));
        assert_eq!(answer.status, want, "{probe} {path}: {}", answer.body);
    }

    node.signal("TERM");
    assert_eq!(
        notified(&notify, Duration::from_secs(20)).as_deref(),
        Some("STOPPING=1"),
        "a Type=notify unit hears STOPPING=1 as the node stops"
    );
    let exit = node
        .wait_exit(Duration::from_secs(20))
        .expect("the node exits");
    assert!(exit.success(), "{}", node.log_text());
}
