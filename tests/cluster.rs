//! fleet on a three-server JetStream cluster made from the shipped
//! `deploy/cluster/n*.conf` (the test kit's `run_cluster`), run on loopback
//! with real processes: one server is killed mid-batch and nothing is lost
//! or doubled, and a recurring schedule held by the cluster keeps firing
//! once a second through the failover.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use fleet_testkit::cluster::{kept_per_subject, stream_info_when};
use fleet_testkit::*;

const TASKS: usize = 3000;

/// Proves the shipped deploy/cluster configs form a working three-server
/// JetStream cluster, and that with R3 streams fleet loses and doubles
/// nothing when the TASKS stream leader is SIGKILLed in the middle of a batch.
#[test]
fn three_server_cluster_survives_a_killed_server_mid_batch() {
    let started = Instant::now();
    let mut cluster = run_cluster();
    let work = tempfile::tempdir().unwrap();
    let urls = cluster.urls();
    // Every client connects over TLS as a user of accounts.conf.
    let with = |user: &str, args: &[&str]| -> Vec<String> {
        let mut all = cluster.flags(user);
        all.extend(args.iter().map(|a| a.to_string()));
        all
    };
    // The operator's one step, as admin: streams with three replicas, the group.
    let setup_args = with("admin", &["setup", "--replicas", "3", "--ack-wait", "3s"]);
    let setup_args: Vec<&str> = setup_args.iter().map(String::as_str).collect();
    let setup = fleet_testkit::process::fleet_at(&urls, &setup_args, b"");
    assert!(
        setup.status.success(),
        "fleet setup: {}",
        text(&setup.stderr)
    );
    // Nodes as the node role.
    let node_args = with("node", &["--concurrency", "32"]);
    let node_args: Vec<&str> = node_args.iter().map(String::as_str).collect();
    let mut nodes: Vec<NodeProc> = (1..=3)
        .map(|i| NodeProc::start(&urls, work.path(), &format!("node{i}"), &node_args, &[]))
        .collect();
    let out_file = work.path().join("out.jsonl");
    let err_file = work.path().join("out.err");
    let mut files = cluster.logs();
    files.extend(nodes.iter().map(|n| (n.name.clone(), n.log.clone())));
    files.push(("submit stderr".into(), err_file.clone()));
    let _logs = LogsOnFailure { files };
    for node in &mut nodes {
        node.wait_ready(Duration::from_secs(30));
    }
    eprintln!("3 nodes ready after {:?}", started.elapsed());
    // A schedule the cluster holds (R3 SCHEDULES), firing into TASKS
    // through the failover below.
    let schedule_args = with(
        "admin",
        &["schedule", "add", "tick", "--every", "1s", "echo", "ping"],
    );
    let schedule_args: Vec<&str> = schedule_args.iter().map(String::as_str).collect();
    let scheduled = fleet_testkit::process::fleet_at(&urls, &schedule_args, b"");
    assert!(
        scheduled.status.success(),
        "fleet schedule add: {}",
        text(&scheduled.stderr)
    );
    let scheduled_at = Instant::now();
    // Its first firing, before the fault: on a cluster just made, the
    // sourcing from SCHEDULES into TASKS can take a while to start.
    rt().block_on(async {
        let limit = Instant::now() + Duration::from_secs(60);
        loop {
            let kept = kept_per_subject(&cluster, 0, limit).await;
            if kept.keys().any(|s| s.starts_with("results.sched.tick.")) {
                break;
            }
            assert!(
                Instant::now() < limit,
                "the schedule did not fire within 60 s of being added"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    eprintln!(
        "first firing kept {:?} after the schedule was added",
        scheduled_at.elapsed()
    );

    let rt = rt();
    // fleet setup --replicas 3 took effect: every stream has three replicas.
    rt.block_on(async {
        let js = async_nats::jetstream::new(cluster.client(0, "admin").await);
        for name in ["SCHEDULES", "TASKS", "RESULTS", "DEAD"] {
            let info = js
                .get_stream(name)
                .await
                .unwrap()
                .info()
                .await
                .unwrap()
                .clone();
            assert_eq!(
                info.config.num_replicas, 3,
                "{name} was created with {} replicas",
                info.config.num_replicas
            );
        }
    });

    // The server that leads TASKS, found before the batch: looked up once
    // results flow, a fast batch could be over before the answer came.
    let leader = rt.block_on(async {
        let js = async_nats::jetstream::new(cluster.client(0, "admin").await);
        let info = stream_info_when(
            &js,
            "TASKS",
            Instant::now() + Duration::from_secs(5),
            |_| true,
        )
        .await;
        info.cluster
            .and_then(|c| c.leader)
            .expect("TASKS has a leader")
    });

    // Distinct payloads, so a result given to the wrong task shows.
    let lines: Vec<String> = (0..TASKS)
        .map(|i| format!("cluster-{i}-{}", &sha256_hex(i.to_string().as_bytes())[..8]))
        .collect();
    let input = work.path().join("input");
    std::fs::write(
        &input,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    let mut submit = KillOnDrop(
        Command::new(fleet_bin())
            .args(["--server", &urls])
            .args(cluster.flags("admin"))
            .args(["submit", "echo", "--json", "--timeout", "60s"])
            .stdin(std::fs::File::open(&input).unwrap())
            .stdout(std::fs::File::create(&out_file).unwrap())
            .stderr(std::fs::File::create(&err_file).unwrap())
            .spawn()
            .expect("starting fleet submit"),
    );

    // Mid-batch: once the first results are in, SIGKILL the server that
    // leads TASKS (a leader election has to happen while tasks flow).
    let count_results = || {
        std::fs::read(&out_file)
            .map(|b| b.iter().filter(|&&c| c == b'\n').count())
            .unwrap_or(0)
    };
    let wait_start = Instant::now();
    while count_results() < TASKS / 50 {
        assert!(
            submit.0.try_wait().unwrap().is_none(),
            "submit ended early: {}",
            std::fs::read_to_string(&err_file).unwrap()
        );
        assert!(
            wait_start.elapsed() < Duration::from_secs(30),
            "no results after 30s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let victim = cluster
        .index_of(&leader)
        .unwrap_or_else(|| panic!("leader {leader:?} is none of ours"));
    cluster.servers[victim].kill();
    let done_at_kill = count_results();
    eprintln!(
        "killed {leader} (TASKS leader) with {done_at_kill} of {TASKS} results in, {:?} in",
        started.elapsed()
    );
    let survivor = (victim + 1) % 3;
    assert!(
        done_at_kill < TASKS,
        "the batch was over before the kill: the test proves nothing; make it longer"
    );

    // Results in by each second after the kill: shows how long the failover
    // stalled the batch.
    let killed_at = Instant::now();
    let mut timeline = Vec::new();
    let status = loop {
        if let Some(status) = submit.0.try_wait().unwrap() {
            break status;
        }
        if killed_at.elapsed() >= Duration::from_secs(timeline.len() as u64 + 1) {
            timeline.push(count_results());
        }
        // Its --timeout (60s) ends it before this.
        assert!(
            killed_at.elapsed() < Duration::from_secs(90),
            "submit still running 90s after the kill: {timeline:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("results in, by second after the kill: {timeline:?}");
    let submit_err = std::fs::read_to_string(&err_file).unwrap();
    eprintln!(
        "submit exited {status} after {:?}: {}",
        started.elapsed(),
        submit_err.trim()
    );
    assert!(status.success(), "submit exited {status}: {submit_err}");
    // Elections take 4 to 9 s (a second round as much again); a task whose
    // result only turns up at its 60 s deadline means a result was kept but
    // the submitter did not see it until its last look in RESULTS.
    assert!(
        killed_at.elapsed() < Duration::from_secs(40),
        "the batch took {:?} after the kill: a task waited for its --timeout (results by second: {timeline:?})",
        killed_at.elapsed()
    );

    // Every task: exactly one ok result, its own payload echoed.
    let results = json_lines(&std::fs::read(&out_file).unwrap());
    let mut by_task: HashMap<usize, usize> = HashMap::new();
    let mut batch = None;
    let mut redelivered = 0;
    for r in &results {
        assert_eq!(r["status"], "ok", "{r}");
        let id = r["id"].as_str().unwrap();
        let (b, n) = id.rsplit_once('.').unwrap();
        assert_eq!(
            *batch.get_or_insert_with(|| b.to_string()),
            b,
            "two batches in one run: {id}"
        );
        let n: usize = n.parse().unwrap();
        assert!((1..=TASKS).contains(&n), "unknown task {id}");
        assert_eq!(
            r["result"],
            lines[n - 1].as_str(),
            "task {id} got another task's result"
        );
        *by_task.entry(n).or_insert(0) += 1;
        if r["attempt"].as_u64() > Some(1) {
            redelivered += 1;
        }
    }
    let missing: Vec<_> = (1..=TASKS).filter(|n| !by_task.contains_key(n)).collect();
    let doubled: Vec<_> = by_task.iter().filter(|(_, &c)| c > 1).collect();
    assert!(
        missing.is_empty(),
        "{} tasks have no result: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    assert!(
        doubled.is_empty(),
        "tasks printed more than once: {doubled:?}"
    );
    assert_eq!(results.len(), TASKS);
    eprintln!("{TASKS} ok results, {redelivered} from a redelivery");

    // Through a survivor: the queue drains (a task whose ack was lost in the
    // failover runs again after ack_wait, and its second result is fenced),
    // then RESULTS keeps exactly one result per task and nothing went to DEAD.
    let batch = batch.unwrap();
    rt.block_on(async {
        let js = async_nats::jetstream::new(cluster.client(survivor, "admin").await);
        let limit = Instant::now() + Duration::from_secs(30);
        let tasks = stream_info_when(&js, "TASKS", limit, |i| i.state.messages == 0).await;
        let dead = stream_info_when(&js, "DEAD", limit, |_| true).await;
        stream_info_when(&js, "RESULTS", limit, |_| true).await;
        eprintln!(
            "after the batch: TASKS led by {:?}",
            tasks.cluster.and_then(|c| c.leader)
        );
        assert_eq!(dead.state.messages, 0, "tasks were dead-lettered");
        let kept = kept_per_subject(&cluster, survivor, limit).await;
        let ours: HashMap<_, _> = kept
            .iter()
            .filter(|(s, _)| s.starts_with(&format!("results.{batch}.")))
            .collect();
        assert_eq!(
            ours.len(),
            TASKS,
            "RESULTS keeps results for {} of {TASKS} tasks",
            ours.len()
        );
        let doubled: Vec<_> = ours.iter().filter(|(_, &&c)| c != 1).collect();
        assert!(
            doubled.is_empty(),
            "RESULTS keeps more than one result for {doubled:?}"
        );
        let ticks = |kept: &HashMap<String, usize>| {
            kept.iter()
                .filter(|(s, _)| s.starts_with("results.sched.tick."))
                .map(|(_, &c)| c)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            kept.len() - ticks(&kept).len(),
            TASKS,
            "RESULTS holds other subjects: {}",
            kept.len()
        );
        // The schedule fired on through the failover, once a second at
        // most (a result per firing, each its own), and fires on after it.
        let before = ticks(&kept);
        assert!(before.iter().all(|&c| c == 1), "a firing has two results");
        let elapsed = scheduled_at.elapsed().as_secs_f64();
        assert!(
            before.len() as f64 <= elapsed + 2.0,
            "{} firings in {elapsed:.1}s of a schedule every second",
            before.len()
        );
        // It fires on after the failover; what must hold is that the
        // firings come back. Measured on 2.15.2 (docs/decisions.md, "Why
        // firings stall after a server dies"): they wait for the elections
        // of the streams whose leader died (TASKS, and SCHEDULES when it
        // led both: 5 to 8 s in 14 of 15 runs, once 11 s), and when the dead server led SCHEDULES but
        // not TASKS, TASKS' source from it is set up again only by the
        // server's 10 s source health check: 15 to 17 s after the kill.
        // An unanswered source request (SCHEDULES still leaderless) waits
        // 30 s and retries after 10 s more, hence the 90 s.
        let waited = Instant::now();
        let after = loop {
            let after = ticks(
                &kept_per_subject(&cluster, survivor, Instant::now() + Duration::from_secs(10))
                    .await,
            );
            if after.len() >= before.len() + 2 {
                break after;
            }
            assert!(
                waited.elapsed() < Duration::from_secs(90),
                "the schedule stopped firing after the failover: {} firings, then {} {:?} later",
                before.len(),
                after.len(),
                waited.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        assert!(after.iter().all(|&c| c == 1), "a firing has two results");
        eprintln!(
            "schedule: {} firings in {elapsed:.1}s, {} after {:?} more",
            before.len(),
            after.len(),
            waited.elapsed()
        );
    });

    // No node died along the way.
    for node in &mut nodes {
        if let Some(status) = node.child.try_wait().unwrap() {
            panic!("node {} exited ({status}):\n{}", node.name, node.log_text());
        }
        assert!(
            !node.log_text().contains("panicked"),
            "node {} panicked:\n{}",
            node.name,
            node.log_text()
        );
    }
    eprintln!("test took {:?}", started.elapsed());
}

/// A server that is not one of ours (no certificate from the cluster's CA,
/// or one from another CA) cannot join the shipped cluster's routes, so it
/// never sees a task or a result.
#[test]
fn a_rogue_server_cannot_join_the_cluster() {
    let cluster = run_cluster();
    let dir = tempfile::tempdir().unwrap();
    let target = cluster.servers[0].cluster_port;
    let rogue_tls = format!(
        "tls {{ cert_file: \"{}\", key_file: \"{}\", ca_file: \"{}\" }}",
        cluster.certs.rogue_cert.display(),
        cluster.certs.rogue_key.display(),
        cluster.certs.ca.display()
    );
    let mut rogues = Vec::new();
    for (name, tls) in [
        ("rogue-plain", String::new()),
        ("rogue-other-ca", rogue_tls),
    ] {
        let conf = format!(
            "server_name: {name}\ncluster {{\n  name: fleet\n  listen: 127.0.0.1:{}\n  {tls}\n  routes: [ nats-route://127.0.0.1:{target} ]\n}}\n",
            free_port()
        );
        let rogue = NatsServer::start_with_conf(&conf);
        let mut sub = std::process::Command::new(tool("nats"))
            .args(["--server", &rogue.url(), "sub", ">"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        rogues.push((name, rogue, sub.stdout.take().unwrap(), sub));
    }
    let _ = dir;
    // Traffic on the cluster while the rogues keep trying.
    let setup_args = {
        let mut a = cluster.flags("admin");
        a.push("setup".into());
        a
    };
    let setup_args: Vec<&str> = setup_args.iter().map(String::as_str).collect();
    let setup = fleet_testkit::process::fleet_at(&cluster.urls(), &setup_args, b"");
    assert!(setup.status.success(), "{}", text(&setup.stderr));
    std::thread::sleep(Duration::from_secs(3));
    for server in &cluster.servers {
        let routez = server.monitor("/routez").expect("routez");
        let remotes: Vec<String> = routez["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["remote_name"].as_str().unwrap_or_default().to_string())
            .collect();
        assert!(
            remotes
                .iter()
                .all(|r| ["nats1", "nats2", "nats3"].contains(&r.as_str())),
            "{} routes to {remotes:?}",
            server.name
        );
    }
    for (name, rogue, out, mut sub) in rogues {
        signal(&sub, "TERM");
        let _ = sub.wait();
        let mut seen = String::new();
        let mut out = out;
        std::io::Read::read_to_string(&mut out, &mut seen).unwrap();
        assert!(
            !seen.contains("Received"),
            "{name} received cluster traffic:\n{seen}"
        );
        // It keeps trying; each attempt is closed at once by the cluster.
        let log = rogue.log_text();
        assert!(
            log.contains("Router connection closed"),
            "{name} never even tried:\n{log}"
        );
        let routes = rogue.monitor("/routez").expect("routez")["num_routes"].as_u64();
        assert_eq!(routes, Some(0), "{name} holds a route");
    }
}
