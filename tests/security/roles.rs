//! Each role does its job and nothing more.

use super::*;

/// The node role binds in well under 2 s, and a whole working day of the
/// fleet (kept and ephemeral batches of two tenants, a retried failure, a
/// dead letter, a tenant's task moved to its band, status as reader,
/// dead letters as admin) leaves not one permission violation in the
/// server's log.
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
    // A tenant's task on the normal subject asking for the low band: the
    // node moves it into alice's low band (its right to publish there).
    let moved = s.nats(
        Role::Alice,
        &[
            "req",
            "tasks.fail",
            "y",
            "-H",
            "Task-Priority:low",
            "-H",
            "Task-Id:moved",
        ],
    );
    assert!(moved.status.success(), "{}", text(&moved.stderr));
    let status = s.fleet(Role::Reader, &["status", "--json"], b"");
    assert!(status.status.success(), "{}", text(&status.stderr));
    let dead = eventually(Duration::from_secs(10), "two dead letters", || {
        let dead = s.fleet(Role::Admin, &["dead", "list", "--json"], b"");
        let lines = json_lines(&dead.stdout);
        (lines.len() == 2).then_some(lines)
    });
    let moved = dead
        .iter()
        .find(|d| d["id"] == "moved")
        .expect("the moved task's letter");
    assert_eq!(
        (&moved["tenant"], &moved["priority"]),
        (&"alice".into(), &"low".into()),
        "{moved}"
    );
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
