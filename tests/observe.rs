//! What an operator sees, each test against its own nats-server: nodes in
//! NATS service discovery (`nats micro`), Prometheus metrics that count a
//! known batch exactly (and pass `promtool check metrics`), health probes
//! that follow the node's life, JSON logs, timestamps on results.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use fleet_testkit::http::{get, metric_sum, parse_metrics};
use fleet_testkit::secure::{Role, Secure};
use fleet_testkit::*;

/// Per-kind sums over every node of `nats micro stats fleet --json`.
fn micro_stats(server: &NatsServer) -> BTreeMap<String, (u64, u64)> {
    let out = nats(server, &["micro", "stats", "fleet", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut sums = BTreeMap::new();
    for node in stats.as_array().unwrap() {
        for e in node["endpoints"].as_array().unwrap() {
            let entry = sums
                .entry(e["name"].as_str().unwrap().to_string())
                .or_insert((0, 0));
            entry.0 += e["num_requests"].as_u64().unwrap();
            entry.1 += e["num_errors"].as_u64().unwrap();
        }
    }
    sums
}

/// `nats micro ls` lists every node of the fleet with its kinds; `nats micro
/// stats fleet` counts a batch by kind; a node that stops leaves the list.
#[test]
fn service_discovery_lists_every_node_and_counts_by_kind() {
    let server = NatsServer::start();
    let mut nodes: Vec<NodeProc> = ["node1", "node2", "node3"]
        .iter()
        .map(|n| NodeProc::spawn(&server, n, &["--max-deliver", "1"]))
        .collect();
    let ls = nats(&server, &["micro", "ls"]);
    let listed = text(&ls.stdout);
    for n in ["node1", "node2", "node3"] {
        assert!(
            listed.contains(&format!(
                "fleet node {n} of group workers: echo, fail, sha256, sleep"
            )),
            "{listed}"
        );
    }
    let ping = nats(&server, &["micro", "ping", "fleet"]);
    assert_eq!(
        text(&ping.stdout).matches("rtt=").count(),
        3,
        "{}",
        text(&ping.stdout)
    );

    let ok = fleet(
        &server,
        &["submit", "echo", "--no-progress"],
        numbered_lines(60).as_bytes(),
    );
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let failed = fleet(
        &server,
        &["submit", "fail", "--no-progress"],
        numbered_lines(7).as_bytes(),
    );
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed.stderr));
    let sums = micro_stats(&server);
    assert_eq!(sums["echo"], (60, 0), "{sums:?}");
    assert_eq!(sums["fail"], (7, 7), "{sums:?}");
    let info = nats(&server, &["micro", "info", "fleet"]);
    let info = text(&info.stdout);
    assert!(
        info.contains("Subject: tasks.echo") && info.contains("kinds: echo,fail,sha256,sleep"),
        "{info}"
    );

    let mut gone = nodes.pop().unwrap();
    gone.signal("TERM");
    assert!(gone
        .wait_exit(Duration::from_secs(20))
        .is_some_and(|s| s.success()));
    let listed = text(&nats(&server, &["micro", "ls"]).stdout);
    assert!(
        !listed.contains("node3") && listed.contains("node1"),
        "{listed}"
    );
}

/// After a known batch (n ok, m failed) the node's counters and histogram
/// counts are exactly n and m, and promtool accepts the exposition.
#[test]
fn metrics_count_a_known_batch() {
    let server = NatsServer::start();
    let addr = free_addr();
    let _node = NodeProc::spawn(
        &server,
        "node1",
        &["--max-deliver", "1", "--metrics-addr", &addr.to_string()],
    );
    let (n, m) = (45, 6);
    let ok = fleet(
        &server,
        &["submit", "echo", "--no-progress"],
        numbered_lines(n).as_bytes(),
    );
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let failed = fleet(
        &server,
        &["submit", "fail", "--no-progress"],
        numbered_lines(m).as_bytes(),
    );
    assert_eq!(failed.status.code(), Some(1));

    let scraped = get(addr, "/metrics").expect("the node serves /metrics");
    assert_eq!(scraped.status, 200);
    assert!(scraped.headers["content-type"].starts_with("text/plain; version=0.0.4"));
    let s = parse_metrics(&scraped.body);
    let sum = |name, labels: &[(&str, &str)]| metric_sum(&s, name, labels) as usize;
    assert_eq!(
        sum(
            "fleet_node_tasks_total",
            &[("kind", "echo"), ("outcome", "ok")]
        ),
        n
    );
    assert_eq!(
        sum(
            "fleet_node_tasks_total",
            &[("kind", "fail"), ("outcome", "failed")]
        ),
        m
    );
    assert_eq!(sum("fleet_node_tasks_total", &[("outcome", "retried")]), 0);
    assert_eq!(sum("fleet_node_dead_letters_total", &[("kind", "fail")]), m);
    assert_eq!(sum("fleet_node_run_seconds_count", &[("kind", "echo")]), n);
    assert_eq!(sum("fleet_node_run_seconds_count", &[("kind", "fail")]), m);
    assert_eq!(sum("fleet_node_queue_wait_seconds_count", &[]), n + m);
    assert_eq!(
        sum(
            "fleet_node_run_seconds_bucket",
            &[("kind", "echo"), ("le", "+Inf")]
        ),
        n
    );
    assert_eq!(sum("fleet_node_in_flight", &[]), 0);
    assert_eq!(sum("fleet_node_free_slots", &[]), 64);
    assert!(sum("process_resident_memory_bytes", &[]) > 1_000_000);
    assert!(
        s.contains_key("process_cpu_seconds_total"),
        "{}",
        scraped.body
    );

    let mut promtool = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(scraped.body.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        text(&checked.stdout),
        text(&checked.stderr)
    );
}

/// `/healthz` answers while the process lives; `/readyz` only while the
/// node is bound, connected and taking work: not while it drains.
#[test]
fn readiness_follows_the_node() {
    let server = NatsServer::start();
    let addr = free_addr();
    let mut node = NodeProc::spawn(
        &server,
        "node1",
        &["--metrics-addr", &addr.to_string(), "--grace", "20s"],
    );
    assert_eq!(get(addr, "/healthz").unwrap().status, 200);
    assert_eq!(get(addr, "/readyz").unwrap().status, 200);

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::write(&input, "3s\n").unwrap();
    let _submit = KillOnDrop(spawn_submit(
        &server,
        &["sleep", "--no-progress"],
        &input,
        &dir.path().join("out"),
    ));
    eventually(Duration::from_secs(10), "the sleep task running", || {
        let s = parse_metrics(&get(addr, "/metrics")?.body);
        (metric_sum(&s, "fleet_node_in_flight", &[]) == 1.0).then_some(())
    });
    node.signal("TERM");
    eventually(Duration::from_secs(5), "not ready while draining", || {
        (get(addr, "/readyz")?.status == 503).then_some(())
    });
    assert_eq!(
        get(addr, "/healthz").unwrap().status,
        200,
        "alive while it drains"
    );
    let exit = node
        .wait_exit(Duration::from_secs(30))
        .expect("the node exits");
    assert!(exit.success(), "{}", node.log_text());
    assert!(
        get(addr, "/healthz").is_none(),
        "nothing listens once it exited"
    );
}

/// Every log line of `--log-format json` is a JSON object; text logs to a
/// file carry no escape codes.
#[test]
fn logs_are_json_or_plain_text() {
    let server = NatsServer::start();
    let mut json_node = NodeProc::start(
        &server.url(),
        server.dir.path(),
        "json",
        &["--create", "--log-format", "json"],
        &[],
    );
    json_node.wait_ready(Duration::from_secs(30));
    let mut text_node = NodeProc::start(
        &server.url(),
        server.dir.path(),
        "plain",
        &[],
        &[("FLEET_LOG_FORMAT", "text")],
    );
    text_node.wait_ready(Duration::from_secs(30));
    json_node.signal("TERM");
    json_node.wait_exit(Duration::from_secs(20));
    let log = json_node.log_text();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 3, "{log}");
    for line in lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            value["level"].is_string() && value["fields"]["message"].is_string(),
            "{line}"
        );
    }
    let plain = text_node.log_text();
    assert!(
        plain.contains("node ready") && !plain.contains('\u{1b}'),
        "{plain:?}"
    );
}

/// Results say when their attempt started and finished (RFC 3339, UTC),
/// and `fleet submit --json` shows both.
#[test]
fn results_carry_start_and_finish_times() {
    let server = NatsServer::start();
    let _node = NodeProc::spawn(&server, "node1", &[]);
    let out = fleet(
        &server,
        &["submit", "sleep", "--json", "--no-progress"],
        b"200ms\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line = &json_lines(&out.stdout)[0];
    let time = |key: &str| {
        let value = line[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} in {line}"));
        assert!(value.ends_with('Z'), "{value}");
        humantime::parse_rfc3339(value).unwrap()
    };
    let ran = time("finished").duration_since(time("started")).unwrap();
    assert!(
        ran >= Duration::from_millis(200) && ran < Duration::from_secs(5),
        "{ran:?}"
    );
}

/// Under the shipped least-privilege config, the reader role sees the nodes
/// but cannot drain one; the admin can, and the node drains and exits 0.
#[test]
fn only_the_admin_drains_a_node() {
    let secure = Secure::start();
    secure.setup(&[]);
    let mut node = secure.node("node1", &[]);
    let info = secure.nats(Role::Reader, &["micro", "info", "fleet", "--json"]);
    assert!(info.status.success(), "{}", text(&info.stderr));
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let drain = info["info"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "drain")
        .expect("a drain endpoint")["subject"]
        .as_str()
        .unwrap()
        .to_string();
    let tenant = secure.nats(Role::Alice, &["micro", "ls"]);
    assert!(
        !text(&tenant.stdout).contains("node1"),
        "a tenant sees no nodes"
    );

    let refused = secure.nats(Role::Reader, &["req", &drain, ""]);
    // The nats CLI reports the server's refusal but exits 0.
    assert!(
        text(&refused.stderr).contains("Permissions Violation for Publish"),
        "{}",
        text(&refused.stderr)
    );
    assert!(
        node.wait_exit(Duration::from_millis(500)).is_none(),
        "still running"
    );

    let drained = secure.nats(Role::Admin, &["req", &drain, ""]);
    assert!(drained.status.success(), "{}", text(&drained.stderr));
    assert!(
        text(&drained.stdout).contains("\"draining\":true"),
        "{}",
        text(&drained.stdout)
    );
    let exit = node
        .wait_exit(Duration::from_secs(30))
        .expect("the node exits");
    assert!(exit.success(), "{}", node.log_text());
}

/// On a terminal, `fleet submit`'s progress shows a whole rate a person
/// can read (`12 tasks 40/s`), never `40.8859/s`.
#[test]
fn progress_shows_a_readable_rate() {
    let server = NatsServer::start();
    let _node = NodeProc::spawn(&server, "node1", &[]);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::write(&input, "100ms\n".repeat(16)).unwrap();
    // `script` gives the submitter a terminal and records what it drew.
    let line = format!(
        "{} --server {} submit sleep --window 4 < {} > /dev/null",
        fleet_bin().display(),
        server.url(),
        input.display()
    );
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .output()
        .expect("running script (util-linux)");
    assert!(out.status.success(), "{}", text(&out.stdout));
    let drawn = text(&out.stdout);
    let rates: Vec<&str> = drawn
        .split(" tasks ")
        .skip(1)
        .filter_map(|after| after.split_whitespace().next())
        .filter(|word| word.ends_with("/s"))
        .collect();
    assert!(!rates.is_empty(), "no progress drawn: {drawn:?}");
    for rate in rates {
        let digits = rate.trim_end_matches("/s").replace(',', "");
        assert!(digits.parse::<u64>().is_ok(), "{rate} in {drawn:?}");
    }
}

/// `fleet status --watch --json` prints one reading a second, each a JSON
/// object, and stops cleanly on Ctrl-C.
#[test]
fn status_watch_reads_again_every_second() {
    use std::io::{BufRead, BufReader};
    let server = NatsServer::start();
    let _node = NodeProc::spawn(&server, "node1", &[]);
    let mut watch = Command::new(fleet_bin())
        .args(["--server", &server.url(), "status", "--watch", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut readings = Vec::new();
    for _ in 0..3 {
        let line = lines.next().expect("another reading").unwrap();
        readings.push(serde_json::from_str::<serde_json::Value>(&line).unwrap());
    }
    assert!(
        readings.iter().all(|r| r["groups"][0]["name"] == "workers"),
        "{readings:?}"
    );
    fleet_testkit::os::signal_pid(watch.id(), "INT");
    let status = watch.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
