//! Pausing and resuming a group, and what the node role may do with
//! keys and pauses.

use super::*;

/// Pausing the group stops new starts at once while the queue keeps
/// growing, and running tasks finish; `fleet status`, the dashboard and
/// its metrics show the pause, the node stays ready; resume drains the
/// queue within a second.
#[test]
fn pause_holds_new_starts_and_resume_drains_the_queue() {
    let server = NatsServer::start();
    let probe = free_addr();
    let _node = node(
        &server,
        &["--concurrency", "8", "--metrics-addr", &probe.to_string()],
        &[],
    );
    let dir = server.dir.path();
    let (mut running, running_out) = submit_in_background(
        &server,
        dir,
        "running",
        &["sleep", "--json", "--batch", "running", "--timeout", "30s"],
        "2s\n2s\n",
    );
    eventually(Duration::from_secs(10), "two tasks running", || {
        (group(&server, "workers")["in_flight"] == 2).then_some(())
    });
    fleet_ok(&server, &["pause", "--group", "workers"], 0);
    let paused_at = SystemTime::now();
    let lines: String = (0..10).map(|i| format!("queued-{i}\n")).collect();
    let (mut queued, queued_out) = submit_in_background(
        &server,
        dir,
        "queued",
        &["echo", "--json", "--batch", "queued", "--timeout", "30s"],
        &lines,
    );
    let paused = eventually(Duration::from_secs(10), "the queue grows", || {
        let g = group(&server, "workers");
        (g["pending"] == 10).then_some(g)
    });
    assert_eq!(paused["paused"], true, "{paused}");
    assert!(paused["paused_until"].is_string(), "{paused}");
    let human = fleet(&server, &["status"], b"");
    assert!(
        text(&human.stdout).contains("PAUSED until resumed"),
        "{}",
        text(&human.stdout)
    );
    assert_eq!(
        get(probe, "/readyz").unwrap().status,
        200,
        "a pause is no reason to be unready"
    );

    // What the dashboard reads and exports.
    let dash_addr = free_addr();
    let token_file = dir.join("token");
    let token = "operator-token-for-control-test";
    std::fs::write(&token_file, token).unwrap();
    let _dash = KillOnDrop(
        Command::new(fleet_bin())
            .args([
                "--server",
                &server.url(),
                "dashboard",
                "--listen",
                &dash_addr.to_string(),
            ])
            .args(["--web-token-file", token_file.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let auth = format!("Bearer {token}");
    let dashboard = |path: &str| request(dash_addr, "GET", path, &[("Authorization", &auth)], "");
    let state = eventually(Duration::from_secs(10), "the dashboard's reading", || {
        let state = dashboard("/api/state")?.json();
        state["status"]["groups"][0]["paused"]
            .as_bool()
            .map(|_| state)
    });
    assert_eq!(state["status"]["groups"][0]["paused"], true, "{state}");
    let exported = parse_metrics(&dashboard("/metrics").unwrap().body);
    assert_eq!(
        metric_sum(&exported, "fleet_group_paused", &[("group", "workers")]),
        1.0
    );

    // Running tasks finish during the pause; nothing new starts.
    assert_eq!(wait_exit(&mut running, Duration::from_secs(20)), 0);
    for line in json_lines(&std::fs::read(&running_out).unwrap()) {
        assert!(rfc3339(&line["finished"]) > paused_at, "{line}");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        group(&server, "workers")["pending"],
        10,
        "a task started while paused"
    );

    let before_resume = SystemTime::now();
    fleet_ok(&server, &["resume", "--group", "workers"], 0);
    assert_eq!(wait_exit(&mut queued, Duration::from_secs(20)), 0);
    let starts: Vec<SystemTime> = json_lines(&std::fs::read(&queued_out).unwrap())
        .iter()
        .map(|l| rfc3339(&l["started"]))
        .collect();
    assert_eq!(starts.len(), 10);
    assert!(
        starts.iter().all(|s| *s >= before_resume),
        "a task started before the resume"
    );
    let first = starts
        .iter()
        .min()
        .unwrap()
        .duration_since(before_resume)
        .unwrap();
    eprintln!("first start {first:?} after `fleet resume` began");
    assert!(first < Duration::from_secs(1), "resume took {first:?}");
    assert_eq!(group(&server, "workers")["paused"], false);
    eventually(
        Duration::from_secs(5),
        "the dashboard sees the resume",
        || {
            let exported = parse_metrics(&dashboard("/metrics")?.body);
            (metric_sum(&exported, "fleet_group_paused", &[("group", "workers")]) == 0.0)
                .then_some(())
        },
    );
}

/// `fleet pause KIND` pauses the group that takes that kind alone; a kind
/// that shares its group is refused (exit 2) with how to give it a group of
/// its own; `--until` ends the pause by itself.
#[test]
fn pausing_a_kind_needs_a_group_of_its_own() {
    let server = NatsServer::start();
    fleet_ok(&server, &["setup", "--kinds", "echo,sleep"], 0);
    fleet_ok(
        &server,
        &["setup", "--group", "thumbs", "--kinds", "thumb"],
        0,
    );
    let shared = fleet(&server, &["pause", "echo"], b"");
    assert_eq!(shared.status.code(), Some(2));
    let why = text(&shared.stderr);
    assert!(
        why.contains("kind echo shares group workers with echo, sleep"),
        "{why}"
    );
    assert!(
        why.contains("fleet setup --group NAME --kinds 'echo'"),
        "{why}"
    );
    let none = fleet(&server, &["pause", "nosuch"], b"");
    assert_eq!(none.status.code(), Some(2));
    assert!(
        text(&none.stderr).contains("no group takes kind nosuch"),
        "{}",
        text(&none.stderr)
    );

    let paused = fleet_ok(&server, &["pause", "thumb", "--json"], 0);
    assert_eq!(
        (&paused[0]["group"], &paused[0]["paused"]),
        (&"thumbs".into(), &true.into())
    );
    assert_eq!(group(&server, "thumbs")["paused"], true);
    assert_eq!(group(&server, "workers")["paused"], false);
    fleet_ok(&server, &["resume", "thumb"], 0);
    assert_eq!(group(&server, "thumbs")["paused"], false);

    fleet_ok(&server, &["pause", "--group", "thumbs", "--until", "1s"], 0);
    assert_eq!(group(&server, "thumbs")["paused"], true);
    eventually(Duration::from_secs(5), "the pause ends at its time", || {
        (group(&server, "thumbs")["paused"] == false).then_some(())
    });
}

/// Under the shipped least-privilege roles, a node frees a finished task's
/// unique key (or keeps it with `--unique-for`) and follows an admin's
/// pause and resume, with not one permission violation.
#[test]
fn the_node_role_frees_keys_and_follows_pauses() {
    let s = Secure::start();
    s.setup(&[]);
    let mut node = s.node("node1", &["--dev-builtins"]);
    let submit = |args: &[&str], code: i32| {
        let out = s.fleet(Role::Admin, args, b"");
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: {}",
            text(&out.stderr)
        );
        if args.contains(&"--json") {
            json_lines(&out.stdout)
        } else {
            Vec::new()
        }
    };
    let kv_get = |key: &str| s.nats(Role::Admin, &["kv", "get", "fleet-unique", key, "--raw"]);
    submit(&["submit", "echo", "a", "--json", "--unique", "k1"], 0);
    eventually(Duration::from_secs(5), "the key freed by the node", || {
        (!kv_get("echo.k1").status.success()).then_some(())
    });
    let held = submit(
        &[
            "submit",
            "echo",
            "b",
            "--json",
            "--unique",
            "k2",
            "--unique-for",
            "1h",
        ],
        0,
    );
    let holder = eventually(Duration::from_secs(5), "the key kept by the node", || {
        let out = kv_get("echo.k2");
        out.status.success().then(|| text(&out.stdout))
    });
    assert_eq!(holder.trim(), held[0]["id"].as_str().unwrap());

    submit(&["pause", "--group", "workers"], 0);
    node.wait_for_log("group paused", Duration::from_secs(5));
    let waited = submit(
        &[
            "submit",
            "echo",
            "c",
            "--json",
            "--batch",
            "held",
            "--timeout",
            "2s",
        ],
        1,
    );
    assert_eq!(
        waited[0]["code"], 408,
        "no result while paused: {:?}",
        waited
    );
    submit(&["resume", "--group", "workers"], 0);
    node.wait_for_log("group resumed", Duration::from_secs(5));
    eventually(Duration::from_secs(5), "the held task ran", || {
        let out = s.nats(
            Role::Admin,
            &["stream", "get", "RESULTS", "--last-for", "results.held.1"],
        );
        out.status.success().then_some(())
    });
    let violations = s.server.violations();
    assert!(
        violations.is_empty(),
        "permission violations:\n{}",
        violations.join("\n")
    );
}
