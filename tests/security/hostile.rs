//! Hostile input: replayed dead letters, exec handlers fishing for
//! secrets, poison headers, unbounded growth and slot hogging.

use super::*;

/// Hostile dead letters (a wildcard task id, JetStream headers that would
/// refuse every publish) are skipped and reported; the genuine one is
/// replayed, and nothing outside its own task is purged. An id published
/// ahead of time cannot squat the next genuine dead letter.
#[test]
fn dead_letters_cannot_be_weaponized() {
    let (s, _node) = fleet_up(&["--max-deliver", "1"]);
    let keep: Vec<String> = vec!["precious".into()];
    submit_as(&s, Role::Alice, "keep", "echo", &keep);
    // A compromised FLEET user plants letters and squats the next ids.
    for seq in 1..20 {
        let out = s.nats(
            Role::Admin,
            &[
                "pub",
                "tenant.alice.dead.fail",
                "x",
                "-H",
                &format!("Nats-Msg-Id:dead-{seq}"),
            ],
        );
        assert!(out.status.success());
    }
    // Stored in DEAD (it names DEAD), it would refuse its replay to TASKS.
    for header in [
        vec!["-H", "Task-Id:>"],
        vec!["-H", "Task-Id:ok.1", "-H", "Nats-Expected-Stream:DEAD"],
    ] {
        let mut args = vec!["pub", "tenant.alice.dead.echo", "evil"];
        args.extend(header);
        assert!(s.nats(Role::Admin, &args).status.success());
    }
    // A genuine failure: its dead letter is kept despite the squatted ids.
    let failed = s.fleet(
        Role::Alice,
        &["submit", "fail", "x", "--batch", "gen", "--json"],
        b"",
    );
    assert_eq!(failed.status.code(), Some(1));
    let dead = json_lines(
        &s.fleet(
            Role::Admin,
            &["dead", "list", "--kind", "fail", "--json"],
            b"",
        )
        .stdout,
    );
    assert!(
        dead.iter().any(|d| d["id"] == "gen.1"),
        "the genuine dead letter is missing: {dead:?}"
    );

    let replay = s.fleet(Role::Admin, &["dead", "replay", "--kind", "echo"], b"");
    let err = text(&replay.stderr);
    assert_eq!(replay.status.code(), Some(1), "{err}");
    assert!(
        err.contains("skipped dead letter") && err.contains("1 tasks replayed, 1 skipped"),
        "{err}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let kept = kept_subjects(&s);
    assert!(
        kept.contains("tenant.alice.results.keep.1"),
        "a replay purged another task's result: {kept:?}"
    );
    assert!(
        kept.contains("tenant.alice.results.ok.1"),
        "the good letter ran again: {kept:?}"
    );
}

/// Exec handlers start from a cleared environment: the node's credentials
/// (here in NATS_USER and NATS_PASSWORD, as a service manager passes them)
/// never reach a program; a name the operator allows does.
#[test]
fn exec_handlers_never_see_the_nodes_secrets() {
    let s = Secure::start();
    s.setup(&[]);
    std::env::set_var("FLEET_TEST_ALLOWED", "visible");
    let _node = s.node(
        "node1",
        &["--exec", "env=env", "--exec-env", "FLEET_TEST_ALLOWED"],
    );
    let out = s.fleet(Role::Alice, &["submit", "env", "x"], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let env = text(&out.stdout);
    assert!(env.contains("FLEET_TEST_ALLOWED=visible"), "{env}");
    assert!(
        env.contains("TASK_TENANT=alice") && env.contains("TASK_KIND=env"),
        "{env}"
    );
    for secret in ["NATS_", "node-trial-password"] {
        assert!(!env.contains(secret), "a program saw {secret}:\n{env}");
    }
}

/// A task published over the raw protocol with a header line the server
/// takes but a client cannot parse (`Bad Name: x`) neither disconnects the
/// node nor stops the tasks behind it; in DEAD and RESULTS it stops
/// neither `fleet dead list` nor `fleet submit --batch`.
#[test]
fn poison_header_does_not_disconnect_a_node() {
    use std::io::Write;
    let server = NatsServer::start();
    let node = NodeProc::spawn(&server, "node1", &[]);
    let raw = |subject: &str, headers: &str, payload: &str| {
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        let block = format!("NATS/1.0\r\n{headers}\r\n");
        let frame = format!("CONNECT {{\"verbose\":false,\"headers\":true}}\r\nHPUB {subject} {} {}\r\n{block}{payload}\r\nPING\r\n", block.len(), block.len() + payload.len());
        conn.write_all(frame.as_bytes()).unwrap();
        // The server has taken it when it answers the PING.
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("PONG") {
            let n = std::io::Read::read(&mut conn, &mut buf).unwrap();
            assert!(
                n > 0,
                "the server closed: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
        assert!(
            !String::from_utf8_lossy(&seen).contains("-ERR"),
            "{}",
            String::from_utf8_lossy(&seen)
        );
    };
    raw(
        "tasks.echo",
        "Task-Id: poison.1\r\nBad Name: x\r\n",
        "poisoned",
    );
    std::thread::sleep(Duration::from_millis(300));
    let good = fleet(&server, &["submit", "echo", "after", "--json"], b"");
    assert!(good.status.success(), "{}", text(&good.stderr));
    raw(
        "dead.echo",
        "Task-Id: poison.2\r\nBad Name: x\r\n",
        "letter",
    );
    raw("results.pb.1", "Task-Id: pb.1\r\nBad Name: x\r\n", "kept");
    let list = fleet(&server, &["dead", "list", "--json"], b"");
    assert!(
        list.status.success() && text(&list.stdout).contains("poison.2"),
        "{}",
        text(&list.stderr)
    );
    let resume = fleet(
        &server,
        &[
            "submit",
            "echo",
            "--batch",
            "pb",
            "--json",
            "--timeout",
            "10s",
        ],
        b"one\n",
    );
    assert!(resume.status.success(), "{}", text(&resume.stderr));
    let kept = rt().block_on(results_per_subject(&server.url()));
    assert_eq!(
        kept.get("results.poison.1"),
        Some(&1),
        "the poisoned task ran: {kept:?}"
    );
    assert!(
        !node.log_text().contains("disconnected"),
        "the node was disconnected:\n{}",
        node.log_text()
    );
}

/// Nothing grows without bound: a full queue refuses new tasks with a
/// clear "queue is full"; a task of unknown kind near max_payload becomes a
/// truncated dead letter instead of looping; a Task-Timeout over the
/// node's limit is refused; a production node does not run `sleep`.
#[test]
fn unbounded_growth_and_slot_hogging_are_refused() {
    let server = NatsServer::start();
    let setup = fleet(&server, &["setup", "--tasks-max-msgs", "3"], b"");
    assert!(setup.status.success(), "{}", text(&setup.stderr));
    let out = fleet(
        &server,
        &[
            "submit",
            "echo",
            "1",
            "2",
            "3",
            "4",
            "5",
            "--timeout",
            "1s",
            "--json",
        ],
        b"",
    );
    let lines = json_lines(&out.stdout);
    let full: Vec<_> = lines.iter().filter(|l| l["code"] == 503).collect();
    assert_eq!(full.len(), 2, "{lines:?}");
    assert!(
        full[0]["error"]
            .as_str()
            .unwrap()
            .contains("the queue is full"),
        "{}",
        full[0]
    );

    let server = NatsServer::start();
    assert!(fleet(&server, &["setup"], b"").status.success());
    // A production node: no --create, no --dev-builtins.
    let mut node = NodeProc::start(&server.url(), server.dir.path(), "prod", &[], &[]);
    node.wait_ready(Duration::from_secs(10));
    // A task of unknown kind just under max_payload: its dead letter, with
    // the node's headers added, would not fit.
    let size = rt().block_on(async {
        let client = async_nats::connect(server.url()).await.unwrap();
        let size = client.server_info().max_payload - 64;
        let js = async_nats::jetstream::new(client);
        js.publish("tasks.no.such.kind", vec![b'z'; size].into())
            .await
            .unwrap()
            .await
            .unwrap();
        size
    });
    let start = Instant::now();
    let dead = loop {
        let dead = json_lines(&fleet(&server, &["dead", "list", "--json"], b"").stdout);
        if !dead.is_empty() || start.elapsed() > Duration::from_secs(10) {
            break dead;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        dead.len(),
        1,
        "no dead letter for the oversized unknown task"
    );
    assert_eq!(dead[0]["truncated"], size, "{}", dead[0]);
    assert_eq!(dead[0]["code"], 404, "{}", dead[0]);
    assert_eq!(
        rt().block_on(stream_len(&server.url(), "TASKS")),
        0,
        "the task still loops"
    );
    let out = fleet(
        &server,
        &["submit", "echo", "x", "--task-timeout", "24h", "--json"],
        b"",
    );
    let line = &json_lines(&out.stdout)[0];
    assert_eq!(line["code"], 400);
    assert!(
        line["error"]
            .as_str()
            .unwrap()
            .contains("--max-task-timeout"),
        "{line}"
    );
    let out = fleet(&server, &["submit", "sleep", "24h", "--json"], b"");
    assert_eq!(
        json_lines(&out.stdout)[0]["code"],
        404,
        "a production node ran sleep"
    );
}
