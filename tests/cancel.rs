//! `fleet cancel`, end to end, each test against its own nats-server with
//! real `fleet` processes and real signals: a queued task (no node up), a
//! delayed one (a raw schedule in `SCHEDULES`), running ones (the `sleep`
//! built-in and an exec handler), a node SIGSTOPped when the cancel comes,
//! a server restart under a watching node, a batch of a tenant, and the
//! node role's rights on the marks.

use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use fleet_testkit::http::{get, metric_sum, parse_metrics};
use fleet_testkit::secure::{Role, Secure};
use fleet_testkit::*;

/// Publishes a task of `kind` with `Task-Id: <id>` (its result goes to
/// `results.<id>`), as `nats pub tasks.<kind> <payload> -H Task-Id:<id>` does.
fn publish(url: &str, kind: &str, id: &str, payload: &str) {
    rt().block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
        let mut headers = HeaderMap::new();
        headers.insert("Task-Id", id);
        js.publish_with_headers(format!("tasks.{kind}"), headers, payload.to_string().into())
            .await
            .unwrap()
            .await
            .unwrap();
    });
}

/// Holds task `id` of `kind` in `SCHEDULES` until `at` (a raw `@at`
/// schedule, as `nats pub sched.task.<id> … -H Nats-Schedule:…` makes it).
fn publish_delayed(url: &str, kind: &str, id: &str, payload: &str, at: std::time::SystemTime) {
    rt().block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
        let mut headers = HeaderMap::new();
        let at = humantime::format_rfc3339_seconds(at).to_string();
        headers.insert("Nats-Schedule", format!("@at {at}").as_str());
        headers.insert("Nats-Schedule-Target", format!("due.{kind}").as_str());
        headers.insert("Nats-TTL", "never");
        headers.insert("Task-Id", id);
        js.publish_with_headers(
            format!("sched.task.{id}"),
            headers,
            payload.to_string().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    });
}

/// Every result `RESULTS` keeps for task `id` (its headers), oldest first.
fn results(url: &str, id: &str) -> Vec<HeaderMap> {
    let subject = format!("results.{id}");
    rt().block_on(read_stream(url, "RESULTS"))
        .into_iter()
        .filter(|m| m.subject.as_str() == subject)
        .map(|m| m.headers.unwrap_or_default())
        .collect()
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).map(|v| v.as_str().to_string())
}

/// The one kept result of `id`, once there is one.
fn kept(url: &str, id: &str, limit: Duration) -> HeaderMap {
    eventually(limit, &format!("a result for {id}"), || {
        results(url, id).into_iter().next()
    })
}

/// Asserts that `h` is a `499 cancelled` result of the first attempt.
fn assert_cancelled(h: &HeaderMap, id: &str) {
    assert_eq!(
        header(h, "Nats-Service-Error-Code").as_deref(),
        Some("499"),
        "{id}: {h:?}"
    );
    assert_eq!(
        header(h, "Nats-Service-Error").as_deref(),
        Some("cancelled"),
        "{id}"
    );
    assert_eq!(header(h, "Task-Id").as_deref(), Some(id));
}

/// `fleet cancel --json ARGS` as whoever `run` is; its lines by id.
fn cancel_lines(out: std::process::Output) -> Vec<serde_json::Value> {
    assert!(out.status.success(), "fleet cancel: {}", text(&out.stderr));
    json_lines(&out.stdout)
}

fn cancel(server: &NatsServer, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["cancel", "--json"];
    all.extend_from_slice(args);
    cancel_lines(fleet(server, &all, b""))
}

fn outcome(line: &serde_json::Value) -> (&str, &str) {
    (
        line["id"].as_str().unwrap_or_default(),
        line["outcome"].as_str().unwrap_or_default(),
    )
}

fn nats(server: &NatsServer, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(tool("nats"));
    cmd.args(["--server", &server.url()]).args(args);
    fleet_testkit::process::output_within(cmd, Duration::from_secs(10))
}

fn setup(server: &NatsServer) {
    let out = fleet(server, &["setup"], b"");
    assert!(out.status.success(), "fleet setup: {}", text(&out.stderr));
}

/// An exec handler that leaves `<dir>/ran.<task id>` when it runs.
fn touch_handler(dir: &Path) -> String {
    format!("touch=touch {}/ran.$TASK_ID", dir.display())
}

fn dead_letters(url: &str) -> u64 {
    rt().block_on(stream_len(url, "DEAD"))
}

/// A task cancelled while queued with no node up never runs once a node
/// comes: its handler is not called, its result is `499 cancelled` on
/// attempt 1, no dead letter, counted apart in the node's metrics. Tasks
/// that already finished are left as they are, and `fleet cancel` says so.
#[test]
fn a_queued_task_is_cancelled_before_a_node_takes_it() {
    let server = NatsServer::start();
    setup(&server);
    let dir = server.dir.path();
    publish(&server.url(), "touch", "q.1", "");
    publish(&server.url(), "touch", "q.2", "");
    let lines = cancel(&server, &["q.1"]);
    assert_eq!(
        lines.iter().map(outcome).collect::<Vec<_>>(),
        [("q.1", "marked")]
    );

    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let handler = touch_handler(dir);
    let metrics = addr.to_string();
    let _node = NodeProc::spawn(
        &server,
        "node1",
        &[
            "--exec",
            &handler,
            "--max-deliver",
            "1",
            "--metrics-addr",
            &metrics,
        ],
    );
    let q1 = kept(&server.url(), "q.1", Duration::from_secs(10));
    assert_cancelled(&q1, "q.1");
    assert_eq!(header(&q1, "Task-Attempt").as_deref(), Some("1"));
    let q2 = kept(&server.url(), "q.2", Duration::from_secs(10));
    assert_eq!(header(&q2, "Nats-Service-Error-Code"), None, "{q2:?}");
    assert!(dir.join("ran.q.2").exists(), "the handler runs the others");
    assert!(
        !dir.join("ran.q.1").exists(),
        "the cancelled task's handler ran"
    );

    // Already finished: nothing changes, and the command says how it ended.
    let failed = fleet(&server, &["submit", "fail", "x", "--batch", "f"], b"");
    assert_eq!(failed.status.code(), Some(1));
    let text_out = fleet(&server, &["cancel", "q.2", "f.1", "q.1"], b"");
    assert!(text_out.status.success(), "{}", text(&text_out.stderr));
    assert_eq!(
        text(&text_out.stdout),
        "q.2: already finished: ok\nf.1: already finished: failed 500\nq.1: already finished: cancelled 499\n"
    );
    for id in ["q.1", "q.2", "f.1"] {
        assert_eq!(results(&server.url(), id).len(), 1, "{id}");
    }
    let marks = nats(&server, &["kv", "ls", "fleet-cancel"]);
    let marks = text(&marks.stdout);
    assert_eq!(
        marks.split_whitespace().collect::<Vec<_>>(),
        ["task.q.1"],
        "{marks}"
    );
    assert_eq!(dead_letters(&server.url()), 1, "only fail's");

    let scraped = parse_metrics(&get(addr, "/metrics").expect("metrics").body);
    let count = |outcome| {
        metric_sum(
            &scraped,
            "fleet_node_tasks_total",
            &[("kind", "touch"), ("outcome", outcome)],
        )
    };
    assert_eq!(
        (count("cancelled"), count("ok"), count("failed")),
        (1.0, 1.0, 0.0)
    );
}

/// A delayed task cancelled before its time: its schedule is gone at once,
/// its `499 cancelled` result is kept at once, and nothing runs at its
/// time, while an uncancelled one beside it does.
#[test]
fn a_delayed_task_is_withdrawn_and_never_runs() {
    let server = NatsServer::start();
    let dir = server.dir.path();
    let handler = touch_handler(dir);
    let _node = NodeProc::spawn(&server, "node1", &["--exec", &handler]);
    let at = std::time::SystemTime::now() + Duration::from_secs(4);
    publish_delayed(&server.url(), "touch", "d.1", "", at);
    publish_delayed(&server.url(), "touch", "d.2", "", at);

    let lines = cancel(&server, &["d.1"]);
    assert_eq!(
        lines.iter().map(outcome).collect::<Vec<_>>(),
        [("d.1", "withdrawn")]
    );
    // At once, long before its time.
    let d1 = results(&server.url(), "d.1");
    assert_eq!(d1.len(), 1, "the 499 is kept at once");
    assert_cancelled(&d1[0], "d.1");
    let held = rt().block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
        let schedules = js.get_stream("SCHEDULES").await.unwrap();
        let d1 = schedules
            .direct_get_last_for_subject("sched.task.d.1")
            .await
            .is_ok();
        let d2 = schedules
            .direct_get_last_for_subject("sched.task.d.2")
            .await
            .is_ok();
        (d1, d2)
    });
    assert_eq!(held, (false, true), "d.1's schedule is gone, d.2's is held");
    assert!(
        std::time::SystemTime::now() < at,
        "the checks ran before the time"
    );

    // d.2 runs at its time; d.1 does not, then or after.
    let d2 = kept(&server.url(), "d.2", Duration::from_secs(15));
    assert_eq!(header(&d2, "Nats-Service-Error-Code"), None);
    std::thread::sleep(Duration::from_secs(1));
    assert!(dir.join("ran.d.2").exists());
    assert!(!dir.join("ran.d.1").exists(), "the withdrawn task ran");
    assert_eq!(results(&server.url(), "d.1").len(), 1);
    let again = cancel(&server, &["d.1"]);
    assert_eq!(again[0]["outcome"], "already_finished");
    assert_eq!(again[0]["code"], 499);
}

/// Two running tasks, the `sleep` built-in (30s) and an exec handler that
/// would write a file when done, are stopped within a second of the
/// cancel: each ends as `499 cancelled` on attempt 1, the exec's process
/// group is killed and its file never written, nothing is retried or
/// dead-lettered.
#[test]
fn running_tasks_stop_within_a_second() {
    let server = NatsServer::start();
    let dir = server.dir.path();
    let pidfile = dir.join("slow.pid");
    let slow = format!(
        "slow=sleep 4 & echo $! > {pid}; wait; touch {dir}/done.$TASK_ID",
        pid = pidfile.display(),
        dir = dir.display()
    );
    let _node = NodeProc::spawn(&server, "node1", &["--exec", &slow]);
    publish(&server.url(), "sleep", "r.1", "30s");
    publish(&server.url(), "slow", "r.2", "");
    let started = Instant::now();
    let grandchild: u32 = eventually(Duration::from_secs(5), "the exec handler started", || {
        std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
    });
    let running = || {
        rt().block_on(async {
            let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
            let tasks = js.get_stream("TASKS").await.unwrap();
            tasks
                .consumer_info("workers")
                .await
                .unwrap()
                .num_ack_pending
        })
    };
    eventually(Duration::from_secs(5), "both tasks running", || {
        (running() == 2).then_some(())
    });

    let asked = Instant::now();
    let lines = cancel(&server, &["r.1", "r.2"]);
    assert!(lines.iter().all(|l| l["outcome"] == "marked"), "{lines:?}");
    let (r1, r2) = eventually(Duration::from_secs(3), "both cancelled", || {
        let r1 = results(&server.url(), "r.1").into_iter().next()?;
        let r2 = results(&server.url(), "r.2").into_iter().next()?;
        Some((r1, r2))
    });
    let took = asked.elapsed();
    println!("cancel to both 499 results kept: {took:?} (fleet cancel's own start included)");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    for (h, id) in [(&r1, "r.1"), (&r2, "r.2")] {
        assert_cancelled(h, id);
        assert_eq!(header(h, "Task-Attempt").as_deref(), Some("1"), "{id}");
    }
    // Gone, or a zombie its (killed) parent left for the reaper: killed.
    let stat = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z "),
        "the exec handler's process group outlived the cancel: {stat}"
    );

    // Past the time the exec would have finished: no file, no retry.
    std::thread::sleep(
        Duration::from_secs(5).saturating_sub(started.elapsed()) + Duration::from_secs(1),
    );
    assert!(
        !dir.join("done.r.2").exists(),
        "the cancelled exec handler finished"
    );
    for id in ["r.1", "r.2"] {
        assert_eq!(results(&server.url(), id).len(), 1, "{id}");
    }
    assert_eq!(running(), 0);
    assert_eq!(rt().block_on(stream_len(&server.url(), "TASKS")), 0);
    assert_eq!(dead_letters(&server.url()), 0);
}

/// A cancel issued while the node running the task is SIGSTOPped takes
/// effect once it is SIGCONTed (and not before: it is the node that ends
/// it); after a restart of nats-server, a watching node still learns of
/// new cancels.
#[test]
fn cancels_reach_a_stopped_node_and_survive_a_server_restart() {
    let mut server = NatsServer::start();
    let node = NodeProc::spawn(&server, "node1", &[]);
    publish(&server.url(), "sleep", "s.1", "30s");
    std::thread::sleep(Duration::from_millis(500));
    node.signal("STOP");
    let lines = cancel(&server, &["s.1"]);
    assert_eq!(lines[0]["outcome"], "marked");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        results(&server.url(), "s.1").is_empty(),
        "ended while its node was stopped"
    );
    let resumed = Instant::now();
    node.signal("CONT");
    let s1 = kept(&server.url(), "s.1", Duration::from_secs(3));
    println!("SIGCONT to 499 kept: {:?}", resumed.elapsed());
    assert!(
        resumed.elapsed() < Duration::from_secs(1),
        "{:?}",
        resumed.elapsed()
    );
    assert_cancelled(&s1, "s.1");

    // The server restarts under the node; the node watches again.
    publish(&server.url(), "sleep", "s.2", "30s");
    std::thread::sleep(Duration::from_millis(300));
    server.restart();
    std::thread::sleep(Duration::from_millis(1500));
    let asked = Instant::now();
    cancel(&server, &["s.2"]);
    let s2 = kept(&server.url(), "s.2", Duration::from_secs(5));
    println!(
        "after a server restart, cancel to 499 kept: {:?}",
        asked.elapsed()
    );
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    assert_cancelled(&s2, "s.2");
    assert_eq!(header(&s2, "Task-Attempt").as_deref(), Some("1"));
}

/// Under the shipped least-privilege config: admin cancels a tenant's batch
/// (`--batch --tenant`), the nodes (node role) honour it and alice's
/// submitter sees `499 cancelled`; the node role reads the marks but cannot
/// write, delete or purge them, and a node's watch raises no permission
/// violation.
#[test]
fn the_node_role_reads_marks_but_cannot_change_them() {
    let s = Secure::start();
    s.setup(&[]);
    let _node = s.node("node1", &["--dev-builtins"]);
    let dir = s.server.dir.path();
    std::fs::write(dir.join("in"), "30s\n30s\n").unwrap();
    let out = dir.join("out.jsonl");
    let mut submit = KillOnDrop(s.submit_in_background(
        Role::Alice,
        &["sleep", "--json", "--batch", "tb", "--timeout", "20s"],
        &dir.join("in"),
        &out,
    ));
    std::thread::sleep(Duration::from_secs(1));
    let lines = cancel_lines(s.fleet(
        Role::Admin,
        &["cancel", "--json", "--batch", "tb", "--for-tenant", "alice"],
        b"",
    ));
    assert_eq!(lines[0]["batch"], "tb");
    let asked = Instant::now();
    let status = eventually(Duration::from_secs(5), "alice's submit ends", || {
        submit.0.try_wait().unwrap()
    });
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(
        status.code(),
        Some(1),
        "cancelled tasks are failures to the submitter"
    );
    let ended = json_lines(&std::fs::read(&out).unwrap());
    assert_eq!(ended.len(), 2);
    for line in &ended {
        assert_eq!(
            (line["code"].as_u64(), line["attempt"].as_u64()),
            (Some(499), Some(1)),
            "{line}"
        );
    }

    let attacks: [&[&str]; 5] = [
        &["pub", "$KV.fleet-cancel.task.planted", "x"],
        &["req", "$KV.fleet-cancel.batch.tb", ""],
        &[
            "req",
            "$JS.API.STREAM.MSG.DELETE.KV_fleet-cancel",
            "{\"seq\":1}",
        ],
        &["req", "$JS.API.STREAM.PURGE.KV_fleet-cancel", ""],
        &["kv", "del", "fleet-cancel", "tenant.alice.batch.tb", "-f"],
    ];
    std::thread::scope(|scope| {
        for args in attacks {
            let s = &s;
            scope.spawn(move || {
                let out = s.nats(Role::Node, args);
                let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
                assert!(
                    !out.status.success() || all.to_lowercase().contains("permissions violation"),
                    "node role {args:?} was allowed:\n{all}"
                );
            });
        }
    });
    let keys = s.nats(Role::Admin, &["kv", "ls", "fleet-cancel"]);
    assert_eq!(
        text(&keys.stdout).split_whitespace().collect::<Vec<_>>(),
        ["tenant.alice.batch.tb"]
    );
    let from_nodes: Vec<String> = s
        .server
        .violations()
        .into_iter()
        .filter(|l| l.contains(":rust:"))
        .collect();
    assert!(
        from_nodes.is_empty(),
        "violations by fleet processes:\n{}",
        from_nodes.join("\n")
    );
}
