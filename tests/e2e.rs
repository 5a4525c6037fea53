//! The fleet end to end, each test against its own real nats-server: the nats
//! CLI as a submitter, `fleet submit` across several nodes, node crashes and
//! graceful stops, error results, exec handlers.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleet_testkit::*;

/// The README's nats CLI lines work as written with the real `nats` binary.
#[test]
fn nats_cli_is_a_first_class_submitter() {
    let server = NatsServer::start();
    let _node = NodeProc::spawn(&server, "node1", &[]);

    // nats sub 'results.demo' &   then   nats pub tasks.sha256 'hello' -H Reply-To:results.demo
    let mut sub = Command::new(tool("nats"))
        .args([
            "--server",
            &server.url(),
            "sub",
            "results.demo",
            "--count",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Publish only once the subscription is in place (the CLI says so).
    let mut sub_err = BufReader::new(sub.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("Subscribing on") {
        line.clear();
        assert!(
            sub_err.read_line(&mut line).unwrap() > 0,
            "nats sub ended early"
        );
    }
    let publish = nats(
        &server,
        &[
            "pub",
            "tasks.sha256",
            "hello",
            "-H",
            "Reply-To:results.demo",
        ],
    );
    assert!(publish.status.success(), "{}", text(&publish.stderr));
    let received = sub.wait_with_output().unwrap();
    let received = text(&received.stdout);
    assert!(
        received.contains(&sha256_hex(b"hello")),
        "nats sub saw: {received}"
    );
    assert!(
        received.contains("Task-Node: node1"),
        "nats sub saw: {received}"
    );

    // nats req tasks.echo 'hi'   answers with the PubAck
    let req = nats(&server, &["req", "tasks.echo", "hi"]);
    assert!(req.status.success(), "{}", text(&req.stderr));
    let ack: serde_json::Value =
        serde_json::from_str(text(&req.stdout).trim()).expect("PubAck JSON");
    assert_eq!(ack["stream"], "TASKS");
    let seq = ack["seq"].as_u64().expect("seq");

    // nats stream get RESULTS --last-for results.N   shows the result
    let subject = format!("results.{seq}");
    let start = Instant::now();
    loop {
        let got = nats(
            &server,
            &["stream", "get", "RESULTS", "--last-for", &subject],
        );
        let out = text(&got.stdout);
        if got.status.success() {
            assert!(
                out.lines().any(|l| l.trim() == "hi"),
                "stream get printed: {out}"
            );
            assert!(
                out.contains(&format!("Task-Id: {seq}")),
                "stream get printed: {out}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no result for {subject}: {}",
            text(&got.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// 5,000 sha256 tasks across 3 node processes: 5,000 correct digests, and
/// more than one node did work.
#[test]
fn five_thousand_tasks_across_three_nodes() {
    let server = NatsServer::start();
    let _nodes: Vec<_> = (1..=3)
        .map(|i| NodeProc::spawn(&server, &format!("node{i}"), &["--concurrency", "16"]))
        .collect();
    let input = numbered_lines(5000);
    let out = fleet(&server, &["submit", "sha256", "--json"], input.as_bytes());
    assert!(out.status.success(), "submit failed: {}", text(&out.stderr));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 5000);
    let mut nodes = HashSet::new();
    let mut seen = HashSet::new();
    for line in &lines {
        assert_eq!(line["status"], "ok", "{line}");
        let id = line["id"].as_str().unwrap();
        let n: usize = id.rsplit('.').next().unwrap().parse().unwrap();
        let payload = format!("task-{}", n - 1);
        assert_eq!(line["result"], sha256_hex(payload.as_bytes()), "task {id}");
        assert!(seen.insert(n), "task {n} printed twice");
        nodes.insert(line["node"].as_str().unwrap().to_string());
    }
    assert!(nodes.len() > 1, "only {nodes:?} did work");
    assert!(
        text(&out.stderr).contains("5000 tasks: 5000 ok, 0 failed, 0 timed out"),
        "{}",
        text(&out.stderr)
    );
}

/// A node killed with SIGKILL in the middle of a batch loses nothing: every
/// task still gets its ok result, from the nodes that are left.
#[test]
fn sigkill_mid_batch_loses_nothing() {
    let server = NatsServer::start();
    let args = ["--concurrency", "8", "--ack-wait", "2s"];
    let nodes: Vec<_> = (1..=3)
        .map(|i| NodeProc::spawn(&server, &format!("node{i}"), &args))
        .collect();
    let input = server.dir.path().join("input");
    std::fs::write(&input, (0..1500).map(|_| "20ms\n").collect::<String>()).unwrap();
    let out_file = server.dir.path().join("out.jsonl");
    let mut submit = spawn_submit(
        &server,
        &["sleep", "--json", "--window", "64"],
        &input,
        &out_file,
    );
    // Mid-batch, and with tasks of its own in flight: once node1 has
    // finished some (a fixed wait kills it before it starts, on a busy machine).
    eventually(Duration::from_secs(30), "node1 running tasks", || {
        // Lines as they are written: the last one may be half there.
        let done = std::fs::read_to_string(&out_file).unwrap_or_default();
        done.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["node"] == "node1")
            .nth(4)
            .map(|_| ())
    });
    nodes[0].signal("KILL");
    let status = submit.wait().unwrap();
    let stdout = std::fs::read(&out_file).unwrap();
    let lines = json_lines(&stdout);
    assert!(
        status.success(),
        "submit: {}",
        std::fs::read_to_string(out_file.with_extension("err")).unwrap()
    );
    assert_eq!(lines.len(), 1500);
    assert!(lines.iter().all(|l| l["status"] == "ok"));
    // The killed node had tasks in flight: they ran again elsewhere.
    assert!(
        lines.iter().any(|l| l["attempt"].as_u64() > Some(1)),
        "no task was redelivered: the kill came too late to test anything"
    );
}

/// SIGTERM to a node running sleep tasks: it exits 0 within the grace period
/// and every task still gets exactly one result.
#[test]
fn sigterm_drains_and_exits_zero() {
    let server = NatsServer::start();
    let args = ["--concurrency", "4", "--grace", "5s", "--ack-wait", "30s"];
    let mut node1 = NodeProc::spawn(&server, "node1", &args);
    let _node2 = NodeProc::spawn(&server, "node2", &args);
    let input = server.dir.path().join("input");
    std::fs::write(&input, (0..40).map(|_| "300ms\n").collect::<String>()).unwrap();
    let out_file = server.dir.path().join("out.jsonl");
    let started = Instant::now();
    let mut submit = spawn_submit(
        &server,
        &["sleep", "--json", "--batch", "term"],
        &input,
        &out_file,
    );
    std::thread::sleep(Duration::from_millis(500));
    let asked = Instant::now();
    node1.signal("TERM");
    let exit = node1
        .wait_exit(Duration::from_secs(15))
        .expect("node1 did not exit");
    assert!(
        exit.success(),
        "node1 exit status {exit:?}\n{}",
        node1.log_text()
    );
    assert!(
        asked.elapsed() < Duration::from_secs(5 + 3),
        "node1 took {:?}",
        asked.elapsed()
    );
    assert!(submit.wait().unwrap().success());
    // Whatever node1 held was handed back at once, not left to the 30 s ack_wait.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "batch took {:?}",
        started.elapsed()
    );
    let lines = json_lines(&std::fs::read(&out_file).unwrap());
    assert_eq!(lines.len(), 40);
    assert!(lines.iter().all(|l| l["status"] == "ok"));
    let kept = rt().block_on(results_per_subject(&server.url()));
    assert_eq!(kept.len(), 40);
    assert!(
        kept.values().all(|&c| c == 1),
        "a task has more than one kept result: {kept:?}"
    );
}

/// An unknown kind gets a 404 error result and `fleet submit` exits 1 with a
/// clear message; `fail` ends as an error result after its attempts.
#[test]
fn unknown_kind_and_fail_end_as_error_results() {
    let server = NatsServer::start();
    let _node = NodeProc::spawn(
        &server,
        "node1",
        &["--max-deliver", "3", "--retry-delay", "50ms"],
    );
    let out = fleet(&server, &["submit", "no.such.kind", "x", "--json"], b"");
    assert_eq!(out.status.code(), Some(1));
    let line = &json_lines(&out.stdout)[0];
    assert_eq!(line["status"], "error");
    assert_eq!(line["code"], 404);
    assert!(line["error"]
        .as_str()
        .unwrap()
        .contains("no handler for kind \"no.such.kind\""));
    assert!(
        text(&out.stderr).contains("1 of 1 tasks failed"),
        "{}",
        text(&out.stderr)
    );

    // The 404 is also in the result headers, for any client.
    let kept = rt().block_on(read_stream(&server.url(), "RESULTS"));
    let headers = kept[0].headers.as_ref().unwrap();
    assert_eq!(
        headers.get("Nats-Service-Error-Code").unwrap().as_str(),
        "404"
    );

    let out = fleet(&server, &["submit", "fail", "x", "--json"], b"");
    assert_eq!(out.status.code(), Some(1));
    let line = &json_lines(&out.stdout)[0];
    assert_eq!(line["status"], "error");
    assert_eq!(line["code"], 500);
    assert_eq!(
        line["attempt"], 3,
        "fail should end on its last attempt: {line}"
    );
}

/// An exec handler round-trips binary data through stdin and stdout, reports
/// a failing command's stderr, and is killed (whole process group) at its
/// timeout.
#[test]
fn exec_handlers() {
    let server = NatsServer::start();
    let pidfile = server.dir.path().join("grandchild.pid");
    let slow = format!("slow=sleep 30 & echo $! > {}; wait", pidfile.display());
    let _node = NodeProc::spawn(
        &server,
        "node1",
        &[
            "--exec",
            "copy=cat",
            "--exec",
            "bad=echo broken pipe dream >&2; exit 3",
            "--exec",
            &slow,
            "--max-deliver",
            "1",
        ],
    );
    rt().block_on(async {
        let client = async_nats::connect(server.url()).await.unwrap();
        let js = async_nats::jetstream::new(client.clone());
        let all_bytes: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        let ask = |kind: &str, payload: Vec<u8>, timeout: Option<&str>| {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Reply-To", format!("results.exec.{kind}").as_str());
            if let Some(t) = timeout {
                headers.insert("Task-Timeout", t);
            }
            (format!("tasks.{kind}"), headers, payload)
        };
        let mut sub = client.subscribe("results.exec.>").await.unwrap();
        client.flush().await.unwrap();
        for (subject, headers, payload) in [
            ask("copy", all_bytes.clone(), None),
            ask("bad", b"x".to_vec(), None),
            ask("slow", b"x".to_vec(), Some("500ms")),
        ] {
            js.publish_with_headers(subject, headers, payload.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let mut got = HashMap::new();
        use futures::StreamExt;
        while got.len() < 3 {
            let msg = tokio::time::timeout(Duration::from_secs(20), sub.next())
                .await
                .expect("results")
                .unwrap();
            got.insert(msg.subject.to_string(), msg);
        }
        let copy = &got["results.exec.copy"];
        assert_eq!(copy.payload.as_ref(), all_bytes.as_slice());
        let bad = got["results.exec.bad"].headers.clone().unwrap();
        assert_eq!(bad.get("Nats-Service-Error-Code").unwrap().as_str(), "500");
        assert!(bad
            .get("Nats-Service-Error")
            .unwrap()
            .as_str()
            .contains("broken pipe dream"));
        let slow = got["results.exec.slow"].headers.clone().unwrap();
        assert_eq!(slow.get("Nats-Service-Error-Code").unwrap().as_str(), "408");
    });
    // The backgrounded grandchild died with its process group.
    let pid = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .to_string();
    let start = Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.contains(") Z ") {
            break; // a zombie waiting for its (dead) parent's reaper: killed
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "grandchild {pid} still alive after the timeout"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `fleet status` shows queued tasks and the group's pending count at a
/// glance, and they drain once a node runs.
#[test]
fn status_shows_queue_and_groups() {
    let server = NatsServer::start();
    let mut node = NodeProc::spawn(&server, "node1", &[]);
    node.signal("TERM");
    assert!(node
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    // No node runs: the tasks wait, and the submitter gives up on them.
    let out = fleet(
        &server,
        &["submit", "echo", "a", "b", "c", "--timeout", "1s", "--json"],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(json_lines(&out.stdout).iter().all(|l| l["code"] == 408));
    let status = fleet(&server, &["status", "--json"], b"");
    assert!(status.status.success(), "{}", text(&status.stderr));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["tasks"], 3);
    assert_eq!(status["groups"][0]["name"], "workers");
    assert_eq!(status["groups"][0]["pending"], 3);
    let human = text(&fleet(&server, &["status"], b"").stdout);
    assert!(
        human.contains("tasks queued:  3") && human.contains("group workers"),
        "{human}"
    );

    let _node = NodeProc::spawn(&server, "node2", &[]);
    let start = Instant::now();
    loop {
        let status: serde_json::Value =
            serde_json::from_slice(&fleet(&server, &["status", "--json"], b"").stdout).unwrap();
        if status["tasks"] == 0 && status["results"] == 3 {
            break; // the tasks the submitter gave up on still ran: their results are kept
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Usage and connection errors exit 2 with a clear message; nothing is sent.
#[test]
fn usage_and_connection_errors_exit_two() {
    let server = NatsServer::start();
    let out = fleet(&server, &["submit", "bad kind", "x"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("bad kind"),
        "{}",
        text(&out.stderr)
    );
    let out = fleet(
        &server,
        &["submit", "echo", "x", "--task-timeout", "soon"],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("Task-Timeout"),
        "{}",
        text(&out.stderr)
    );
    let out = fleet(&server, &["node", "--exec", "no-equals-sign"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("KIND=COMMAND"),
        "{}",
        text(&out.stderr)
    );
    let dead_port = free_port();
    let out = Command::new(fleet_bin())
        .args([
            "--nats-url",
            &format!("nats://127.0.0.1:{dead_port}"),
            "submit",
            "echo",
            "x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("error: connecting to"),
        "{}",
        text(&out.stderr)
    );
}

/// Without `fleet setup`, a node and a submitter say to run it and exit 2
/// at once, instead of waiting or creating what their role may not.
#[test]
fn without_setup_node_and_submit_say_to_run_it() {
    let server = NatsServer::start();
    for args in [
        &["node", "--name", "lonely"][..],
        &["submit", "echo", "x"][..],
    ] {
        let started = Instant::now();
        let out = fleet(&server, args, b"");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("run `fleet setup`"),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
    let setup = fleet(&server, &["setup"], b"");
    assert!(setup.status.success(), "{}", text(&setup.stderr));
    assert!(
        text(&setup.stdout).contains("created   stream TASKS"),
        "{}",
        text(&setup.stdout)
    );
    let again = fleet(&server, &["setup"], b"");
    assert!(
        text(&again.stdout).contains("unchanged group workers"),
        "{}",
        text(&again.stdout)
    );
    let _node = NodeProc::start(&server.url(), server.dir.path(), "bound", &[], &[]);
    let out = fleet(&server, &["submit", "echo", "x"], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "x\n");
}
