//! The security model, attacked. Each test runs the shipped least-privilege
//! setup (`deploy/secure/nats.conf`: accounts FLEET with admin, node and
//! reader; tenants alice and bob) on a server of its own, real `fleet`
//! processes under their roles, and the real `nats` CLI as the attacker;
//! it asserts the denial and that the victim's results are the genuine ones.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use fleet_testkit::secure::{Role, Secure};
use fleet_testkit::*;

/// A fleet of the secure setup: streams made by admin, one node under the
/// node role (with the development kinds).
fn fleet_up(node_args: &[&str]) -> (Secure, NodeProc) {
    let s = Secure::start();
    s.setup(&[]);
    let mut args = vec!["--dev-builtins"];
    args.extend_from_slice(node_args);
    let node = s.node("node1", &args);
    (s, node)
}

/// What a denied `nats` command says.
fn denied(out: &std::process::Output) -> bool {
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    !out.status.success()
        || all.contains("Permissions Violation")
        || all.contains("permissions violation")
}

/// Submits `lines` as `role` in batch `batch`; returns the JSON lines.
fn submit_as(
    s: &Secure,
    role: Role,
    batch: &str,
    kind: &str,
    lines: &[String],
) -> Vec<serde_json::Value> {
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let out = s.fleet(
        role,
        &[
            "submit",
            kind,
            "--json",
            "--batch",
            batch,
            "--timeout",
            "20s",
        ],
        input.as_bytes(),
    );
    assert!(
        out.status.success(),
        "{role:?} submit: {}",
        text(&out.stderr)
    );
    json_lines(&out.stdout)
}

/// The subjects RESULTS keeps, read as admin.
fn kept_subjects(s: &Secure) -> HashSet<String> {
    rt().block_on(async {
        let admin = s.client(Role::Admin).await;
        let js = async_nats::jetstream::new(admin);
        let mut stream = js.get_stream("RESULTS").await.unwrap();
        let info = stream.info().await.unwrap().clone();
        let mut subjects = HashSet::new();
        for seq in info.state.first_sequence..=info.state.last_sequence {
            if let Ok(msg) = stream.get_raw_message(seq).await {
                subjects.insert(msg.subject.to_string());
            }
        }
        subjects
    })
}

/// The node role binds in well under 2 s, and a whole working day of the
/// fleet (kept and ephemeral batches of two tenants, a retried failure, a
/// dead letter, status as reader, dead letters as admin) leaves not one
/// permission violation in the server's log.
#[test]
fn every_role_works_with_no_permission_violation() {
    let s = Secure::start();
    s.setup(&[]);
    let started = Instant::now();
    let mut node = NodeProc::start(
        &s.server.url(),
        s.server.dir.path(),
        "node1",
        &[
            "--inbox-prefix",
            "_INBOX_node",
            "--dev-builtins",
            "--max-deliver",
            "2",
            "--retry-delay",
            "50ms",
        ],
        &[
            ("NATS_USER", "node"),
            ("NATS_PASSWORD", &Role::Node.password()),
        ],
    );
    node.wait_ready(Duration::from_secs(10));
    let ready = started.elapsed();
    assert!(
        ready < Duration::from_secs(2),
        "the node took {ready:?} to be ready"
    );

    let words: Vec<String> = (0..50).map(|i| format!("word-{i}")).collect();
    let alice = submit_as(&s, Role::Alice, "day", "echo", &words);
    assert!(alice.iter().all(|l| l["status"] == "ok"));
    let bob = s.fleet(
        Role::Bob,
        &["submit", "sha256", "one", "two", "--ephemeral", "--json"],
        b"",
    );
    assert!(bob.status.success(), "{}", text(&bob.stderr));
    let failed = s.fleet(Role::Alice, &["submit", "fail", "x", "--json"], b"");
    assert_eq!(failed.status.code(), Some(1));
    assert_eq!(json_lines(&failed.stdout)[0]["attempt"], 2);
    let status = s.fleet(Role::Reader, &["status", "--json"], b"");
    assert!(status.status.success(), "{}", text(&status.stderr));
    let dead = s.fleet(Role::Admin, &["dead", "list", "--json"], b"");
    assert_eq!(json_lines(&dead.stdout).len(), 1, "{}", text(&dead.stderr));
    let again = s.fleet(
        Role::Alice,
        &[
            "submit",
            "echo",
            "--json",
            "--batch",
            "day",
            "--timeout",
            "20s",
        ],
        b"word-0\n",
    );
    assert!(
        again.status.success() && text(&again.stderr).contains("collected from an earlier run"),
        "{}",
        text(&again.stderr)
    );

    let violations = s.server.violations();
    assert!(
        violations.is_empty(),
        "permission violations:\n{}",
        violations.join("\n")
    );
    assert!(
        !node.log_text().contains("disconnected"),
        "{}",
        node.log_text()
    );
}

/// Two tenants run batches with the same name at the same time through the
/// same node: each sees its own results, none of the other's, and RESULTS
/// keeps each under its own tenant.
#[test]
fn two_tenants_share_nodes_and_see_only_their_own() {
    let (s, _node) = fleet_up(&["--concurrency", "16"]);
    let alice_words: Vec<String> = (0..300).map(|i| format!("alice-{i}")).collect();
    let bob_words: Vec<String> = (0..300).map(|i| format!("bob-{i}")).collect();
    let (alice, bob) = std::thread::scope(|scope| {
        let a = scope.spawn(|| submit_as(&s, Role::Alice, "nightly", "echo", &alice_words));
        let b = scope.spawn(|| submit_as(&s, Role::Bob, "nightly", "echo", &bob_words));
        (a.join().unwrap(), b.join().unwrap())
    });
    for (lines, words, other) in [(&alice, &alice_words, "bob-"), (&bob, &bob_words, "alice-")] {
        assert_eq!(lines.len(), words.len());
        for line in lines {
            let n: usize = line["id"]
                .as_str()
                .unwrap()
                .rsplit('.')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(line["result"], words[n - 1].as_str(), "{line}");
            assert!(
                !line["result"].as_str().unwrap().starts_with(other),
                "{line}"
            );
        }
    }
    let kept = kept_subjects(&s);
    assert!(
        kept.contains("tenant.alice.results.nightly.1")
            && kept.contains("tenant.bob.results.nightly.1"),
        "{kept:?}"
    );
    assert!(
        !kept.iter().any(|k| k.starts_with("results.")),
        "a tenant's result outside its tenant: {kept:?}"
    );

    // Bob reads what he can: his own kept result, not alice's.
    let own = s.nats(
        Role::Bob,
        &["req", "$JS.API.DIRECT.GET.RESULTS.results.nightly.1", ""],
    );
    assert!(text(&own.stdout).contains("bob-0"), "{}", text(&own.stdout));
    assert!(
        !text(&own.stdout).contains("alice"),
        "{}",
        text(&own.stdout)
    );
    let other = s.nats(
        Role::Bob,
        &[
            "req",
            "$JS.API.DIRECT.GET.RESULTS.tenant.alice.results.nightly.1",
            "",
        ],
    );
    assert!(
        denied(&other) && !text(&other.stdout).contains("alice-0"),
        "{}",
        text(&other.stdout)
    );
}

/// Watching another tenant's tasks or results, or publishing a forged
/// result ahead of the node, is denied; the victim's results stay genuine.
#[test]
fn forged_and_stolen_results_are_denied() {
    let (s, _node) = fleet_up(&[]);
    for (role, args) in [
        (
            Role::Bob,
            vec!["sub", "tasks.>", "--count", "1", "--timeout", "1s"],
        ),
        (
            Role::Bob,
            vec!["sub", "_INBOX_node.>", "--count", "1", "--timeout", "1s"],
        ),
        (Role::Bob, vec!["pub", "results.victim.1", "forged"]),
        (
            Role::Bob,
            vec!["pub", "tenant.alice.results.victim.1", "forged"],
        ),
        (Role::Alice, vec!["pub", "results.victim.1", "forged"]),
        (
            Role::Reader,
            vec!["sub", "results.>", "--count", "1", "--timeout", "1s"],
        ),
        (
            Role::Node,
            vec!["sub", "_INBOX.>", "--count", "1", "--timeout", "1s"],
        ),
    ] {
        let out = s.nats(role, &args);
        assert!(
            denied(&out),
            "{role:?} {args:?} was allowed:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    // Bob listening to results.> sees nothing of alice's batch.
    let bob_sub = std::process::Command::new(tool("nats"))
        .args(["--server", &s.server.url()])
        .args(Role::Bob.flags())
        .args(["sub", "results.>"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let lines: Vec<String> = (0..20).map(|i| format!("genuine-{i}")).collect();
    let alice = submit_as(&s, Role::Alice, "victim", "echo", &lines);
    assert!(alice
        .iter()
        .all(|l| l["result"].as_str().unwrap().starts_with("genuine-")));
    std::thread::sleep(Duration::from_millis(300));
    signal(&bob_sub, "TERM");
    let seen = bob_sub.wait_with_output().unwrap();
    assert!(
        !text(&seen.stdout).contains("genuine"),
        "bob saw alice's results:\n{}",
        text(&seen.stdout)
    );
}

/// A task from bob naming alice's task id or reply subject makes the node
/// write only into bob's own space: alice's results are untouched.
#[test]
fn a_task_cannot_point_the_node_into_another_tenant() {
    let (s, _node) = fleet_up(&[]);
    for header in ["Task-Id:target.1", "Reply-To:results.target.2"] {
        let out = s.nats(Role::Bob, &["req", "tasks.echo", "from-bob", "-H", header]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    std::thread::sleep(Duration::from_millis(500));
    let kept = kept_subjects(&s);
    assert!(
        kept.contains("tenant.bob.results.target.1")
            && kept.contains("tenant.bob.results.target.2"),
        "{kept:?}"
    );
    assert!(!kept.iter().any(|k| k.contains("alice")), "{kept:?}");
    let lines: Vec<String> = vec!["a".into(), "b".into()];
    let alice = submit_as(&s, Role::Alice, "target", "echo", &lines);
    assert_eq!(
        alice
            .iter()
            .map(|l| l["result"].as_str().unwrap())
            .collect::<HashSet<_>>(),
        HashSet::from(["a", "b"])
    );
    assert!(alice.iter().all(|l| l["status"] == "ok"));
}

/// Purging or deleting the streams, pulling tasks, acking them away, and
/// writing dead letters are the admin's and the node's alone.
#[test]
fn only_admin_destroys_and_only_nodes_take_tasks() {
    let s = Secure::start();
    s.setup(&[]);
    // Tasks waiting, no node.
    let queued = s.fleet(
        Role::Alice,
        &["submit", "echo", "keep-me", "--timeout", "1s"],
        b"",
    );
    assert_eq!(queued.status.code(), Some(1));
    let mut attempts: Vec<(Role, Vec<&str>)> = Vec::new();
    for role in [Role::Node, Role::Reader, Role::Alice, Role::Bob] {
        for args in [
            vec!["stream", "purge", "TASKS", "-f"],
            vec!["stream", "purge", "RESULTS", "-f"],
            vec!["stream", "rm", "DEAD", "-f"],
            vec!["req", "$JS.API.STREAM.PURGE.TASKS", ""],
        ] {
            attempts.push((role, args));
        }
        if role != Role::Node {
            attempts.push((role, vec!["pub", "dead.echo", "planted"]));
            attempts.push((
                role,
                vec![
                    "req",
                    "$JS.API.CONSUMER.MSG.NEXT.TASKS.workers",
                    "{\"batch\":1}",
                ],
            ));
            attempts.push((
                role,
                vec![
                    "consumer", "next", "TASKS", "workers", "--count", "1", "--ack",
                ],
            ));
            attempts.push((
                role,
                vec!["pub", "$JS.ACK.TASKS.workers.1.1.1.1.0", "+TERM"],
            ));
        }
    }
    // Each refused command may wait out its timeout: all at once.
    std::thread::scope(|scope| {
        for (role, args) in &attempts {
            let s = &s;
            scope.spawn(move || {
                let out = s.nats(*role, args);
                assert!(
                    denied(&out),
                    "{role:?} {args:?} was allowed:\n{}",
                    text(&out.stdout)
                );
            });
        }
    });
    let state = rt().block_on(async {
        let js = async_nats::jetstream::new(s.client(Role::Admin).await);
        js.get_stream("TASKS")
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .messages
    });
    assert_eq!(state, 1, "the queued task is still there");
    // Admin may.
    assert!(s
        .nats(Role::Admin, &["stream", "purge", "TASKS", "-f"])
        .status
        .success());
}

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
