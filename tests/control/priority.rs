//! Priority bands: high tasks start soon behind a low flood, the flood
//! keeps finishing, a band alone gets every slot, and status shows bands.

use super::*;
use fleet_testkit::spans::most_at_once;

fn started_node(server: &NatsServer, name: &str, concurrency: &str) -> NodeProc {
    let args = ["--create", "--dev-builtins", "--concurrency", concurrency];
    let mut node = NodeProc::start(&server.url(), server.dir.path(), name, &args, &[]);
    node.wait_ready(Duration::from_secs(30));
    node
}

/// (started, finished) of every ok task in a `fleet submit --json` output.
fn spans(out: &Path) -> Vec<(SystemTime, SystemTime)> {
    json_lines(&std::fs::read(out).unwrap())
        .iter()
        .filter(|l| l["started"].is_string())
        .map(|l| (rfc3339(&l["started"]), rfc3339(&l["finished"])))
        .collect()
}

/// The starvation test: 5,000 `low` `sleep 20ms` tasks running on
/// three nodes of 8 slots, then 50 `high` ones: the high band's p99 queue
/// wait (its `Task-Started` minus the moment its submit began) is under
/// 10 % of the low flood's drain time, and low tasks keep finishing while
/// the high ones run.
#[test]
fn high_tasks_start_soon_behind_a_low_flood_which_keeps_finishing() {
    let server = NatsServer::start();
    let _nodes: Vec<NodeProc> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| started_node(&server, n, "8"))
        .collect();
    let dir = server.dir.path();
    let low_lines = "20ms\n".repeat(5000);
    let flood_began = SystemTime::now();
    let (mut low, low_out) = submit_in_background(
        &server,
        dir,
        "low",
        &[
            "sleep",
            "--priority",
            "low",
            "--window",
            "5000",
            "--json",
            "--batch",
            "low",
            "--timeout",
            "120s",
        ],
        &low_lines,
    );
    eventually(
        Duration::from_secs(30),
        "the flood running on every slot",
        || {
            let g = group(&server, "workers");
            (g["in_flight"].as_u64() >= Some(20) && g["bands"][2]["pending"].as_u64() > Some(1000))
                .then_some(())
        },
    );
    let high_in = dir.join("high.in");
    std::fs::write(&high_in, "20ms\n".repeat(50)).unwrap();
    let high_out = dir.join("high.out");
    let high_began = SystemTime::now();
    let mut high = KillOnDrop(spawn_submit(
        &server,
        &[
            "sleep",
            "--priority",
            "high",
            "--json",
            "--batch",
            "high",
            "--timeout",
            "60s",
        ],
        &high_in,
        &high_out,
    ));
    assert_eq!(wait_exit(&mut high, Duration::from_secs(60)), 0);
    assert_eq!(wait_exit(&mut low, Duration::from_secs(120)), 0);

    let high_spans = spans(&high_out);
    let low_spans = spans(&low_out);
    assert_eq!((high_spans.len(), low_spans.len()), (50, 5000));
    let mut waits: Vec<Duration> = high_spans
        .iter()
        .map(|(s, _)| s.duration_since(high_began).unwrap_or_default())
        .collect();
    waits.sort();
    let p50 = waits[waits.len() / 2];
    let p99 = waits[(waits.len() * 99).div_ceil(100) - 1];
    let drained = low_spans.iter().map(|(_, f)| *f).max().unwrap();
    let drain = drained.duration_since(flood_began).unwrap();
    let high_first = high_spans.iter().map(|(s, _)| *s).min().unwrap();
    let high_last = high_spans.iter().map(|(_, f)| *f).max().unwrap();
    let low_meanwhile = low_spans
        .iter()
        .filter(|(_, f)| *f >= high_first && *f <= high_last)
        .count();
    println!(
        "high wait p50 {p50:?} p99 {p99:?}; low drain {drain:?}; low finished while high ran: {low_meanwhile}"
    );
    assert!(
        p99 < drain / 10,
        "high p99 wait {p99:?} is not under 10% of the low drain {drain:?}"
    );
    assert!(low_meanwhile > 0, "the low band starved while high ran");
    assert!(
        high_last < drained,
        "the high tasks should be done long before the flood"
    );
}

/// Only low work queued: the node runs it at full concurrency (no slot
/// kept for the empty bands), and never above it.
#[test]
fn a_band_alone_gets_every_slot() {
    let server = NatsServer::start();
    let _node = started_node(&server, "n1", "8");
    let dir = server.dir.path();
    let (mut low, low_out) = submit_in_background(
        &server,
        dir,
        "low",
        &[
            "sleep",
            "--priority",
            "low",
            "--json",
            "--batch",
            "low",
            "--timeout",
            "60s",
        ],
        &"300ms\n".repeat(32),
    );
    assert_eq!(wait_exit(&mut low, Duration::from_secs(60)), 0);
    let spans = spans(&low_out);
    assert_eq!(spans.len(), 32);
    assert_eq!(most_at_once(&spans), 8, "every slot, and no more");
}

/// `fleet status` shows each group's pending tasks by band, in text and
/// JSON, and a value of `Task-Priority` that is not a band is refused.
#[test]
fn status_shows_the_bands() {
    let server = NatsServer::start();
    fleet_ok(&server, &["setup"], 0);
    for (subject, n) in [
        ("tasks-high.echo", 2),
        ("tasks-low.echo", 3),
        ("tasks.echo", 1),
    ] {
        for _ in 0..n {
            let out = nats(&server, &["pub", subject, "x"]);
            assert!(out.status.success(), "{}", text(&out.stderr));
        }
    }
    let g = group(&server, "workers");
    let bands: Vec<(String, u64)> = g["bands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["priority"].as_str().unwrap().to_string(),
                b["pending"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        bands,
        [("high".into(), 2), ("normal".into(), 1), ("low".into(), 3)],
        "{g}"
    );
    assert_eq!(g["pending"], 6, "{g}");
    let human = text(&fleet(&server, &["status"], b"").stdout);
    assert!(
        human.contains("pending by priority: high 2, normal 1, low 3"),
        "{human}"
    );
    assert!(human.contains("echo high 2"), "{human}");

    // A priority that is no band: refused by the node, 400.
    let _node = started_node(&server, "n1", "4");
    let out = nats(
        &server,
        &[
            "req",
            "tasks.echo",
            "odd",
            "-H",
            "Task-Priority:urgent",
            "-H",
            "Task-Id:odd",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let kept = eventually(
        Duration::from_secs(10),
        "the result of the odd task",
        || {
            let out = nats(
                &server,
                &["stream", "get", "RESULTS", "--last-for", "results.odd"],
            );
            out.status.success().then(|| text(&out.stdout))
        },
    );
    assert!(kept.contains("Nats-Service-Error-Code: 400"), "{kept}");
}

/// `Task-Priority` on a normal subject (`nats req tasks.fail x -H
/// Task-Priority:high`): the node moves the task to that band before it
/// runs it, with its id (a task without `Task-Id` is known by the `TASKS`
/// sequence it was first stored at). The dead letters say the band each
/// ran in, and each ran once.
#[test]
fn the_priority_header_moves_a_normal_task_to_its_band() {
    let server = NatsServer::start();
    fleet_ok(&server, &["setup"], 0);
    let out = nats(
        &server,
        &["req", "tasks.fail", "a", "-H", "Task-Priority:high"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ack: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    let first_seq = ack["seq"].as_u64().unwrap().to_string();
    for args in [
        [
            "pub",
            "tasks.fail",
            "b",
            "-H",
            "Task-Priority:low",
            "-H",
            "Task-Id:b",
        ],
        [
            "pub",
            "tasks.fail",
            "c",
            "-H",
            "Task-Priority:normal",
            "-H",
            "Task-Id:c",
        ],
    ] {
        let out = nats(&server, &args);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let g = group(&server, "workers");
    assert_eq!(g["bands"][1]["pending"], 3, "all stored as normal: {g}");

    let _node = node(&server, &["--max-deliver", "1"], &[]);
    let dead = eventually(Duration::from_secs(15), "three dead letters", || {
        let lines = fleet_ok(&server, &["dead", "list", "--json"], 0);
        (lines.len() == 3).then_some(lines)
    });
    let mut ran: Vec<(String, String, u64)> = dead
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_string(),
                d["priority"].as_str().unwrap().to_string(),
                d["attempts"].as_u64().unwrap(),
            )
        })
        .collect();
    ran.sort();
    let mut expected = vec![
        (first_seq, "high".to_string(), 1),
        ("b".into(), "low".into(), 1),
        ("c".into(), "normal".into(), 1),
    ];
    expected.sort();
    assert_eq!(ran, expected);
    let g = group(&server, "workers");
    assert_eq!(g["pending"], 0, "nothing left behind: {g}");
}
