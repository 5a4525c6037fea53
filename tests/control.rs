//! Deadlines, result lifetimes, unique tasks, pause and resume, as users
//! see them: each test against its own nats-server, real `fleet` and `nats`
//! processes, checks on exit codes, printed statuses, what RESULTS and the
//! `fleet-unique` bucket hold, and when tasks started.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use fleet_testkit::http::{get, metric_sum, parse_metrics, request};
use fleet_testkit::secure::{Role, Secure};
use fleet_testkit::*;

fn nats(server: &NatsServer, args: &[&str]) -> Output {
    Command::new(tool("nats"))
        .args(["--server", &server.url()])
        .args(args)
        .output()
        .expect("running nats")
}

fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A node of a development fleet with extra flags and environment, ready.
fn node(server: &NatsServer, args: &[&str], env: &[(&str, &str)]) -> NodeProc {
    let mut all = vec!["--create", "--dev-builtins"];
    all.extend_from_slice(args);
    let mut node = NodeProc::start(&server.url(), server.dir.path(), "node1", &all, env);
    node.wait_ready(Duration::from_secs(30));
    node
}

/// `fleet status --json`'s group `name`.
fn group(server: &NatsServer, name: &str) -> serde_json::Value {
    let out = fleet(server, &["status", "--json"], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    status["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
        .unwrap_or_else(|| panic!("no group {name}: {status}"))
        .clone()
}

/// Runs `fleet` and checks its exit code; returns its JSON lines (with
/// `--json`).
fn fleet_ok(server: &NatsServer, args: &[&str], code: i32) -> Vec<serde_json::Value> {
    let out = fleet(server, args, b"");
    assert_eq!(
        out.status.code(),
        Some(code),
        "fleet {args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    if args.contains(&"--json") {
        json_lines(&out.stdout)
    } else {
        Vec::new()
    }
}

fn rfc3339(value: &serde_json::Value) -> SystemTime {
    humantime::parse_rfc3339(value.as_str().unwrap_or_else(|| panic!("no time: {value}"))).unwrap()
}

/// A background `fleet submit` of `lines`, its output in `dir/<name>.out`.
fn submit_in_background(
    server: &NatsServer,
    dir: &Path,
    name: &str,
    args: &[&str],
    lines: &str,
) -> (KillOnDrop, std::path::PathBuf) {
    let input = dir.join(format!("{name}.in"));
    std::fs::write(&input, lines).unwrap();
    let out = dir.join(format!("{name}.out"));
    (KillOnDrop(spawn_submit(server, args, &input, &out)), out)
}

fn wait_exit(child: &mut KillOnDrop, limit: Duration) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(
            start.elapsed() < limit,
            "fleet submit still runs after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

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

/// Two submitter processes race for one unique key at the same instant
/// (both wait for one file): exactly one task is published, the other is
/// refused (409) and told the id of the task that holds the key. Five such
/// races at once, five winners. When the holder ends the key is free
/// again; with `--unique-for` it stays taken that long after.
#[test]
fn racing_submitters_get_one_winner_per_unique_key() {
    let server = NatsServer::start();
    let _node = NodeProc::spawn(&server, "node1", &[]);
    let dir = server.dir.path();
    let go = dir.join("go");
    let mut racers = Vec::new();
    for key in 0..5 {
        for side in ["a", "b"] {
            let out = dir.join(format!("race-{key}-{side}.out"));
            let child = Command::new("sh")
                .arg("-c")
                .arg(r#"while [ ! -e "$1" ]; do sleep 0.005; done; exec "$2" --nats-url "$3" submit sleep 3s --json --unique "$4""#)
                .args(["race", go.to_str().unwrap(), fleet_bin().to_str().unwrap(), &server.url(), &format!("race-{key}")])
                .stdout(std::fs::File::create(&out).unwrap())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            racers.push((key, KillOnDrop(child), out));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&go, "").unwrap();
    let mut ended = Vec::new();
    for (key, mut child, out) in racers {
        let code = wait_exit(&mut child, Duration::from_secs(30));
        let line = json_lines(&std::fs::read(&out).unwrap()).remove(0);
        ended.push((key, code, line));
    }
    for key in 0..5 {
        let pair: Vec<_> = ended.iter().filter(|(k, ..)| *k == key).collect();
        let winners: Vec<_> = pair.iter().filter(|(_, code, _)| *code == 0).collect();
        let losers: Vec<_> = pair.iter().filter(|(_, code, _)| *code == 1).collect();
        assert_eq!(
            (winners.len(), losers.len()),
            (1, 1),
            "key race-{key}: {pair:?}"
        );
        let (winner, loser) = (&winners[0].2, &losers[0].2);
        assert_eq!(winner["status"], "ok");
        assert_eq!(
            (&loser["status"], &loser["code"]),
            (&"refused".into(), &409.into()),
            "{loser}"
        );
        let holder = winner["id"].as_str().unwrap();
        assert_eq!(
            loser["error"],
            format!("unique key sleep.race-{key} is held by task {holder}"),
        );
    }
    let kept = rt().block_on(stream_len(&server.url(), "RESULTS"));
    assert_eq!(kept, 5, "only the winners' tasks were published and run");

    // The holders ended: their keys are free again.
    eventually(Duration::from_secs(5), "the keys freed", || {
        (0..5)
            .all(|k| {
                !nats(
                    &server,
                    &["kv", "get", "fleet-unique", &format!("sleep.race-{k}")],
                )
                .status
                .success()
            })
            .then_some(())
    });
    let again = fleet_ok(
        &server,
        &["submit", "sleep", "10ms", "--json", "--unique", "race-0"],
        0,
    );
    assert_eq!(again[0]["status"], "ok");

    // --unique-for keeps the key taken after the task ended.
    let held = fleet_ok(
        &server,
        &[
            "submit",
            "echo",
            "a",
            "--json",
            "--unique",
            "hold",
            "--unique-for",
            "3s",
        ],
        0,
    );
    let ended_at = Instant::now();
    let refused = fleet_ok(
        &server,
        &["submit", "echo", "b", "--json", "--unique", "hold"],
        1,
    );
    assert_eq!(
        refused[0]["error"],
        format!(
            "unique key echo.hold is held by task {}",
            held[0]["id"].as_str().unwrap()
        )
    );
    eventually(Duration::from_secs(8), "the held key expired", || {
        (!nats(&server, &["kv", "get", "fleet-unique", "echo.hold"])
            .status
            .success())
        .then_some(())
    });
    let freed_after = ended_at.elapsed();
    assert!(
        freed_after >= Duration::from_secs(2),
        "freed after {freed_after:?}, not 3s"
    );
    fleet_ok(
        &server,
        &["submit", "echo", "c", "--json", "--unique", "hold"],
        0,
    );
}

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
