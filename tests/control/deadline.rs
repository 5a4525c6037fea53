//! A task's deadline (`--expire-after`) and its result's lifetime
//! (`--result-ttl`).

use super::*;

/// A task whose deadline passed while it was queued is not run (its exec
/// handler would have left a file): it ends `408 expired`, is neither
/// retried nor dead-lettered, and is counted as expired, not failed. A task
/// whose deadline is ahead runs.
#[test]
fn an_expired_task_is_not_run() {
    let server = NatsServer::start();
    let marks = server.dir.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    let addr = free_addr();
    let _node = node(
        &server,
        &[
            "--exec",
            r#"mark=touch "$MARK_DIR/$TASK_ID"; cat"#,
            "--exec-env",
            "MARK_DIR",
            "--metrics-addr",
            &addr.to_string(),
        ],
        &[("MARK_DIR", marks.to_str().unwrap())],
    );
    // Hold the queue so the deadline passes while the task waits in it.
    fleet_ok(&server, &["pause", "--group", "workers"], 0);
    let (mut late, late_out) = submit_in_background(
        &server,
        server.dir.path(),
        "late",
        &[
            "mark",
            "--json",
            "--batch",
            "late",
            "--expire-after",
            "1s",
            "--timeout",
            "30s",
        ],
        "late\n",
    );
    eventually(Duration::from_secs(10), "the task queued", || {
        (group(&server, "workers")["pending"] == 1).then_some(())
    });
    std::thread::sleep(Duration::from_millis(1500));
    fleet_ok(&server, &["resume", "--group", "workers"], 0);
    assert_eq!(
        wait_exit(&mut late, Duration::from_secs(20)),
        1,
        "an expired task is no success"
    );
    let lines = json_lines(&std::fs::read(&late_out).unwrap());
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["status"], "expired", "{}", lines[0]);
    assert_eq!(lines[0]["code"], 408);
    assert!(
        lines[0]["error"].as_str().unwrap().starts_with("expired"),
        "{}",
        lines[0]
    );
    assert_eq!(lines[0]["attempt"], 1, "not retried");
    let summary = std::fs::read_to_string(late_out.with_extension("err")).unwrap();
    assert!(summary.contains("1 expired"), "{summary}");
    assert!(!marks.join("late.1").exists(), "the handler ran");

    // The kept result says 408 and which deadline it missed.
    let kept = nats(
        &server,
        &["stream", "get", "RESULTS", "--last-for", "results.late.1"],
    );
    let kept = text(&kept.stdout);
    assert!(kept.contains("Nats-Service-Error-Code: 408"), "{kept}");
    assert!(kept.contains("Task-Deadline: "), "{kept}");

    // A deadline ahead: the handler runs and leaves its mark.
    let fresh = fleet_ok(
        &server,
        &[
            "submit",
            "mark",
            "fresh",
            "--json",
            "--batch",
            "fresh",
            "--expire-after",
            "1h",
        ],
        0,
    );
    assert_eq!(
        (&fresh[0]["status"], &fresh[0]["result"]),
        (&"ok".into(), &"fresh".into())
    );
    assert!(marks.join("fresh.1").exists());

    assert!(
        fleet_ok(&server, &["dead", "list", "--json"], 0).is_empty(),
        "no dead letter"
    );
    let metrics = parse_metrics(&get(addr, "/metrics").unwrap().body);
    let count = |outcome| {
        metric_sum(
            &metrics,
            "fleet_node_tasks_total",
            &[("kind", "mark"), ("outcome", outcome)],
        )
    };
    assert_eq!(
        (count("expired"), count("failed"), count("ok")),
        (1.0, 0.0, 1.0)
    );
}

/// A result kept with `--result-ttl 2s` is gone from RESULTS after it; one
/// without stays. A malformed Result-TTL or Task-Deadline fails its own task
/// (400), and the next task runs.
#[test]
fn a_result_ttl_removes_the_kept_result() {
    let server = NatsServer::start();
    let _node = NodeProc::spawn(&server, "node1", &[]);
    let brief = fleet_ok(
        &server,
        &[
            "submit",
            "echo",
            "a",
            "--json",
            "--batch",
            "brief",
            "--result-ttl",
            "2s",
        ],
        0,
    );
    let written = Instant::now();
    assert_eq!(brief[0]["status"], "ok");
    fleet_ok(
        &server,
        &["submit", "echo", "b", "--json", "--batch", "kept"],
        0,
    );
    let get_result = |subject: &str| {
        nats(
            &server,
            &["stream", "get", "RESULTS", "--last-for", subject],
        )
    };
    let now = get_result("results.brief.1");
    assert!(now.status.success(), "kept at first: {}", text(&now.stderr));
    assert!(
        text(&now.stdout).contains("Nats-TTL: 2"),
        "{}",
        text(&now.stdout)
    );
    std::thread::sleep(Duration::from_secs(3).saturating_sub(written.elapsed()));
    let later = get_result("results.brief.1");
    assert!(
        !later.status.success(),
        "still kept after its TTL: {}",
        text(&later.stdout)
    );
    assert!(
        get_result("results.kept.1").status.success(),
        "a result without TTL stays"
    );

    for (id, name, value) in [
        ("bad-ttl", "Result-TTL", "500ms"),
        ("bad-deadline", "Task-Deadline", "soon"),
    ] {
        let out = nats(
            &server,
            &[
                "pub",
                "tasks.echo",
                "x",
                "-H",
                &format!("Task-Id:{id}"),
                "-H",
                &format!("{name}:{value}"),
            ],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let kept = eventually(Duration::from_secs(10), "the error result", || {
            let out = get_result(&format!("results.{id}"));
            out.status.success().then(|| text(&out.stdout))
        });
        assert!(kept.contains("Nats-Service-Error-Code: 400"), "{kept}");
        assert!(kept.contains(name), "{kept}");
    }
    let after = fleet_ok(&server, &["submit", "echo", "fine", "--json"], 0);
    assert_eq!(after[0]["result"], "fine");
}
