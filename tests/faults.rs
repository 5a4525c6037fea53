//! The fault suite: real nats-server, real `fleet` processes, real signals,
//! all under least privilege: the shipped `deploy/secure/nats.conf`, the
//! streams made by admin, nodes as the node role, batches submitted by the
//! tenant alice. Each scenario runs a batch large enough to be mid-flight
//! when the fault hits, then the checker classifies every acknowledged task
//! from what `RESULTS` committed. A lost or duplicated task fails the test.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant, SystemTime};

use fleet_testkit::checker::{check_cancels, check_from, never_acked, Cancel, Expected, Report};
use fleet_testkit::process::spawn_submit_at;
use fleet_testkit::secure::{Role, Secure};
use fleet_testkit::streams::{read_stream_from, stream_state_from};
use fleet_testkit::*;

/// A secure server, some nodes and one batch alice submits with `fleet
/// submit --batch`.
struct Scenario {
    secure: Secure,
    nodes: Vec<NodeProc>,
    node_args: Vec<String>,
    batch: String,
    tasks: u64,
    input: PathBuf,
    out: PathBuf,
    next_node: usize,
}

impl Scenario {
    /// `args` are node flags; `--ack-wait` among them goes to `fleet setup`
    /// (it is the group's, made by admin).
    fn new(nodes: usize, args: &[&str], batch: &str, lines: &str) -> Self {
        let secure = Secure::start();
        let (mut group, mut node_args) = (Vec::new(), vec!["--dev-builtins".to_string()]);
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            if *arg == "--ack-wait" {
                group.extend([arg.to_string(), it.next().expect("a value").to_string()]);
            } else {
                node_args.push(arg.to_string());
            }
        }
        secure.setup(&group.iter().map(String::as_str).collect::<Vec<_>>());
        let input = secure.server.dir.path().join("input");
        std::fs::write(&input, lines).unwrap();
        let mut s = Scenario {
            nodes: Vec::new(),
            node_args,
            batch: batch.to_string(),
            tasks: lines.lines().count() as u64,
            input,
            out: secure.server.dir.path().join("out.jsonl"),
            secure,
            next_node: 0,
        };
        for _ in 0..nodes {
            s.add_node();
        }
        s
    }

    fn add_node(&mut self) {
        self.next_node += 1;
        let args: Vec<&str> = self.node_args.iter().map(String::as_str).collect();
        let node = self.secure.node(&format!("node{}", self.next_node), &args);
        self.nodes.push(node);
    }

    fn submit(&self, kind: &str, extra: &[&str]) -> Child {
        let flags = Role::Alice.flags();
        let mut args = vec![kind, "--json", "--batch", &self.batch, "--timeout", "120s"];
        args.extend_from_slice(extra);
        args.extend(flags.iter().map(String::as_str));
        spawn_submit_at(&self.secure.server.url(), &args, &self.input, &self.out)
    }

    fn submit_err(&self) -> String {
        std::fs::read_to_string(self.out.with_extension("err")).unwrap_or_default()
    }

    /// All messages of `stream`, read as admin.
    fn read(&self, stream: &str) -> Vec<async_nats::Message> {
        rt().block_on(async {
            read_stream_from(self.secure.client(Role::Admin).await, stream).await
        })
    }

    /// The state of `stream`, read as admin.
    fn state(&self, stream: &str) -> async_nats::jetstream::stream::State {
        rt().block_on(async {
            stream_state_from(self.secure.client(Role::Admin).await, stream).await
        })
    }

    fn check(&self) -> Report {
        let lines = json_lines(&std::fs::read(&self.out).unwrap());
        let report = rt().block_on(async {
            let admin = self.secure.client(Role::Admin).await;
            check_from(admin, Some("alice"), &self.batch, self.tasks, &lines).await
        });
        println!("checker, batch {}:\n{report}", self.batch);
        report
    }
}

fn assert_nothing_lost(report: &Report, tasks: u64) {
    assert_eq!(report.lost, 0, "lost tasks:\n{report}");
    assert_eq!(report.duplicated, 0, "duplicated tasks:\n{report}");
    assert_eq!(report.unknown, 0, "tasks never acknowledged:\n{report}");
    assert_eq!(report.ok as u64, tasks, "not every task ok:\n{report}");
}

/// The fault must hit a batch in flight, or the scenario proves nothing.
fn assert_running(submit: &mut Child) {
    assert!(
        submit.try_wait().unwrap().is_none(),
        "the batch ended before the fault"
    );
}

fn wait_ok(child: &mut Child, scenario: &Scenario) {
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "fleet submit failed: {}",
        scenario.submit_err()
    );
}

/// Scenario 1: SIGKILL of a node mid-batch: its tasks run again elsewhere.
#[test]
fn sigkill_of_a_node() {
    let s = Scenario::new(
        3,
        &["--concurrency", "8", "--ack-wait", "1s"],
        "kill",
        &"10ms\n".repeat(4000),
    );
    let mut submit = s.submit("sleep", &[]);
    std::thread::sleep(Duration::from_millis(500));
    assert_running(&mut submit);
    s.nodes[1].signal("KILL");
    wait_ok(&mut submit, &s);
    assert_nothing_lost(&s.check(), s.tasks);
}

/// Scenario 2: SIGSTOP of a node for longer than ack_wait, then SIGCONT: the paused
/// node finishes tasks others already ran, and its late results are fenced.
#[test]
fn sigstop_past_ack_wait_is_fenced() {
    let s = Scenario::new(
        3,
        &["--concurrency", "8", "--ack-wait", "1s"],
        "stop",
        &"100ms\n".repeat(400),
    );
    let mut submit = s.submit("sleep", &[]);
    std::thread::sleep(Duration::from_millis(400));
    assert_running(&mut submit);
    s.nodes[0].signal("STOP");
    std::thread::sleep(Duration::from_millis(2500));
    s.nodes[0].signal("CONT");
    wait_ok(&mut submit, &s);
    // Let the resumed node finish and try to commit its late results.
    std::thread::sleep(Duration::from_millis(1500));
    let report = s.check();
    assert_nothing_lost(&report, s.tasks);
    let log = s.nodes[0].log_text();
    assert!(!log.contains("panicked"), "{log}");
}

/// Scenario 3: SIGTERM of a node: it drains, exits 0, and nothing is lost.
#[test]
fn sigterm_of_a_node() {
    let mut s = Scenario::new(
        3,
        &["--concurrency", "8", "--ack-wait", "30s", "--grace", "10s"],
        "term",
        &"20ms\n".repeat(2400),
    );
    let mut submit = s.submit("sleep", &[]);
    std::thread::sleep(Duration::from_millis(400));
    assert_running(&mut submit);
    s.nodes[2].signal("TERM");
    let status = s.nodes[2]
        .wait_exit(Duration::from_secs(15))
        .expect("node did not stop");
    assert!(status.success(), "{}", s.nodes[2].log_text());
    let started = Instant::now();
    wait_ok(&mut submit, &s);
    // Nothing waited out the 30 s ack_wait: handed-back tasks ran at once.
    assert!(started.elapsed() < Duration::from_secs(25));
    assert_nothing_lost(&s.check(), s.tasks);
}

/// Scenario 4: nats-server stopped and restarted on the same store mid-batch, with
/// the submitter and the nodes connected throughout.
#[test]
fn server_restart_mid_batch() {
    let mut s = Scenario::new(
        3,
        &["--concurrency", "16", "--ack-wait", "2s"],
        "restart",
        &"10ms\n".repeat(8000),
    );
    let mut submit = s.submit("sleep", &["--window", "128"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_running(&mut submit);
    s.secure.server.stop();
    std::thread::sleep(Duration::from_millis(800));
    s.secure.server.restart();
    wait_ok(&mut submit, &s);
    assert_nothing_lost(&s.check(), s.tasks);
    for node in &mut s.nodes {
        assert!(
            node.child.try_wait().unwrap().is_none(),
            "node {} died:\n{}",
            node.name,
            node.log_text()
        );
    }
}

/// Scenario 5: A poison task among good ones: the good ones finish, the poison one
/// lands in DEAD after its attempts, and `fleet dead replay` brings it back.
#[test]
fn poison_task_goes_to_dead_and_replays() {
    let flag = tempfile::tempdir().unwrap();
    let ready = flag.path().join("ready");
    let flaky = format!("flaky=test -f {} && cat", ready.display());
    let s = Scenario::new(
        3,
        &[
            "--concurrency",
            "8",
            "--max-deliver",
            "3",
            "--retry-delay",
            "50ms",
            "--exec",
            &flaky,
        ],
        "good",
        &numbered_lines(2000),
    );
    let mut good = s.submit("echo", &[]);
    let poison = s.secure.fleet(
        Role::Alice,
        &["submit", "flaky", "poison", "--json", "--batch", "bad"],
        b"",
    );
    wait_ok(&mut good, &s);
    assert_nothing_lost(&s.check(), s.tasks);
    assert_eq!(poison.status.code(), Some(1));
    let line = &json_lines(&poison.stdout)[0];
    assert_eq!(
        (line["status"].as_str(), line["attempt"].as_u64()),
        (Some("error"), Some(3))
    );

    let dead = s
        .secure
        .fleet(Role::Admin, &["dead", "list", "--json"], b"");
    let dead = json_lines(&dead.stdout);
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0]["id"].as_str(), dead[0]["kind"].as_str()),
        (Some("bad.1"), Some("flaky"))
    );

    // The cause is fixed; replay it.
    std::fs::write(&ready, "").unwrap();
    let replay = s
        .secure
        .fleet(Role::Admin, &["dead", "replay", "--kind", "flaky"], b"");
    assert!(replay.status.success(), "{}", text(&replay.stderr));
    let start = Instant::now();
    loop {
        let kept = s.read("RESULTS");
        let mine: Vec<_> = kept
            .iter()
            .filter(|m| m.subject.as_str() == "tenant.alice.results.bad.1")
            .collect();
        if let [only] = mine.as_slice() {
            if only
                .headers
                .as_ref()
                .is_some_and(|h| h.get("Nats-Service-Error").is_none())
            {
                assert_eq!(only.payload.as_ref(), b"poison");
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "replayed task never succeeded"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(s.state("DEAD").messages, 0);
}

/// Scenario 6: `fleet submit` killed mid-batch and run again with the same batch: no
/// task is enqueued twice and every result is collected.
#[test]
fn submitter_killed_and_rerun() {
    let s = Scenario::new(3, &["--concurrency", "8"], "again", &"20ms\n".repeat(3000));
    let mut first = s.submit("sleep", &["--window", "64"]);
    std::thread::sleep(Duration::from_millis(700));
    assert_running(&mut first);
    signal(&first, "KILL");
    let _ = first.wait();
    let before = json_lines(&std::fs::read(&s.out).unwrap_or_default()).len();
    assert!(
        before > 0 && (before as u64) < s.tasks,
        "the kill should land mid-batch ({before} results)"
    );

    let mut second = s.submit("sleep", &["--window", "64"]);
    wait_ok(&mut second, &s);
    let lines = json_lines(&std::fs::read(&s.out).unwrap());
    assert_eq!(
        lines.len() as u64,
        s.tasks,
        "the second run prints every task once"
    );
    assert!(
        s.submit_err().contains("collected from an earlier run"),
        "{}",
        s.submit_err()
    );
    assert_nothing_lost(&s.check(), s.tasks);
    // Every task was stored in TASKS once: the re-publishes were de-duplicated.
    let last_seq = s.state("TASKS").last_sequence;
    assert_eq!(last_seq, s.tasks, "tasks enqueued twice");
}

/// Scenario 7: Mixed: kills, pauses, graceful stops and a server restart at random
/// moments during one run of 20,000 tasks. Prints the checker's table.
#[test]
fn mixed_faults_twenty_thousand_tasks() {
    let args = ["--concurrency", "32", "--ack-wait", "2s", "--grace", "5s"];
    let mut s = Scenario::new(4, &args, "mixed", &"50ms\n".repeat(20_000));
    let started = Instant::now();
    let mut submit = s.submit("sleep", &["--window", "256"]);
    let mut rng = fleet_testkit::rng::XorShift::from_env();
    let mut plan = vec![
        "SIGKILL node",
        "SIGSTOP node past ack_wait",
        "SIGTERM node",
        "restart nats-server",
        "SIGKILL node",
        "SIGSTOP node past ack_wait",
    ];
    rng.shuffle(&mut plan);
    let mut injected = Vec::new();
    for fault in plan {
        std::thread::sleep(Duration::from_millis(300 + rng.below(700)));
        if submit.try_wait().unwrap().is_some() {
            break;
        }
        let victim = rng.below(s.nodes.len() as u64) as usize;
        match fault {
            "SIGKILL node" => {
                s.nodes[victim].signal("KILL");
                let _ = s.nodes[victim].wait_exit(Duration::from_secs(5));
                s.nodes.remove(victim);
                s.add_node();
            }
            "SIGSTOP node past ack_wait" => {
                s.nodes[victim].signal("STOP");
                std::thread::sleep(Duration::from_millis(2500));
                s.nodes[victim].signal("CONT");
            }
            "SIGTERM node" => {
                s.nodes[victim].signal("TERM");
                let status = s.nodes[victim].wait_exit(Duration::from_secs(10));
                assert!(
                    status.is_some_and(|st| st.success()),
                    "graceful stop failed"
                );
                s.nodes.remove(victim);
                s.add_node();
            }
            _ => {
                s.secure.server.stop();
                std::thread::sleep(Duration::from_millis(500));
                s.secure.server.restart();
            }
        }
        injected.push(fault);
    }
    wait_ok(&mut submit, &s);
    std::thread::sleep(Duration::from_millis(1000));
    let report = s.check();
    println!(
        "faults injected: {injected:?}; run took {:?}",
        started.elapsed()
    );
    assert!(
        injected.len() >= 4,
        "the batch ended before the faults were injected: {injected:?}"
    );
    assert_nothing_lost(&report, s.tasks);
}

/// Publishes, as admin, delayed tasks of kind `sleep` (id, payload, due
/// time) as raw schedules held by `SCHEDULES` until they are due.
fn publish_delayed(s: &Scenario, tasks: &[(String, &str, SystemTime)]) {
    rt().block_on(async {
        let js = async_nats::jetstream::new(s.secure.client(Role::Admin).await);
        for (id, payload, at) in tasks {
            let mut headers = async_nats::HeaderMap::new();
            let at = humantime::format_rfc3339_seconds(*at).to_string();
            headers.insert("Nats-Schedule", format!("@at {at}").as_str());
            headers.insert("Nats-Schedule-Target", "due.sleep");
            headers.insert("Nats-TTL", "never");
            headers.insert("Task-Id", id.as_str());
            let subject = fleet::contract::delayed_subject(id);
            js.publish_with_headers(subject, headers, payload.to_string().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    });
}

/// `fleet cancel --json` as admin (for `tenant`'s tasks); what it said of
/// each, by the subject the task's result is kept on.
fn cancel_as_admin(
    s: &Scenario,
    tenant: Option<&str>,
    ids: &[String],
    said: &mut HashMap<String, Cancel>,
) {
    let mut args = vec!["cancel", "--json"];
    if let Some(t) = tenant {
        args.extend(["--tenant", t]);
    }
    args.extend(ids.iter().map(String::as_str));
    let out = s.secure.fleet(Role::Admin, &args, b"");
    assert!(out.status.success(), "fleet cancel: {}", text(&out.stderr));
    for line in json_lines(&out.stdout) {
        let (id, cancel) = Cancel::from_line(&line).expect("a line per task");
        let subject = fleet::contract::in_tenant(tenant, &fleet::contract::default_reply(&id));
        said.insert(subject, cancel);
    }
}

/// Scenario 8: Mixed, with time and control: delayed tasks (raw schedules,
/// fired by the server) come due among node kills, a pause past
/// `ack_wait`, a graceful stop and a server restart, and cancellations land
/// at random moments: of long tasks queued or running, of delayed tasks
/// before or after they fire, of tasks already finished. Every task ends
/// with exactly one kept result; a cancelled one with `499` unless `fleet
/// cancel` found it finished; none lost, none duplicated.
#[test]
fn mixed_faults_with_delays_and_cancels() {
    // A short grace: a stopping node's minute-long tasks are handed back
    // after it, not finished.
    let args = ["--concurrency", "32", "--ack-wait", "2s", "--grace", "2s"];
    // Every 400th task sleeps a minute: it can only end by being cancelled,
    // so the batch cannot end before the last cancel.
    let tasks = 6000u64;
    let long = |n: u64| n.is_multiple_of(400);
    let lines: String = (1..=tasks)
        .map(|n| if long(n) { "60s\n" } else { "50ms\n" })
        .collect();
    let mut s = Scenario::new(4, &args, "mixc", &lines);
    let started = Instant::now();
    let mut rng = fleet_testkit::rng::XorShift::from_env();
    // 40 delayed tasks of the fleet account, due 2 to 7 s from now; every
    // fourth sleeps a minute and will be cancelled.
    let now = SystemTime::now();
    let delayed: Vec<String> = (1..=40).map(|n| format!("dly.{n}")).collect();
    let doomed: Vec<String> = delayed.iter().step_by(4).cloned().collect();
    let schedules: Vec<_> = delayed
        .iter()
        .map(|id| {
            let payload = if doomed.contains(id) { "60s" } else { "50ms" };
            (
                id.clone(),
                payload,
                now + Duration::from_secs(2 + rng.below(6)),
            )
        })
        .collect();
    publish_delayed(&s, &schedules);
    let mut submit = s.submit("sleep", &["--window", "256"]);
    let long_ids: Vec<String> = (1..=tasks)
        .filter(|n| long(*n))
        .map(|n| fleet::contract::batch_task_id("mixc", n))
        .collect();
    let (first, rest) = long_ids.split_at(long_ids.len() / 2);
    let mut said: HashMap<String, Cancel> = HashMap::new();
    let mut plan = vec![
        "SIGKILL node",
        "SIGSTOP node past ack_wait",
        "SIGTERM node",
        "restart nats-server",
        "cancel long tasks",
        "cancel delayed tasks",
        "cancel finished tasks",
    ];
    rng.shuffle(&mut plan);
    for fault in &plan {
        std::thread::sleep(Duration::from_millis(300 + rng.below(700)));
        assert_running(&mut submit);
        let victim = rng.below(s.nodes.len() as u64) as usize;
        match *fault {
            "SIGKILL node" => {
                s.nodes[victim].signal("KILL");
                let _ = s.nodes[victim].wait_exit(Duration::from_secs(5));
                s.nodes.remove(victim);
                s.add_node();
            }
            "SIGSTOP node past ack_wait" => {
                s.nodes[victim].signal("STOP");
                std::thread::sleep(Duration::from_millis(2500));
                s.nodes[victim].signal("CONT");
            }
            "SIGTERM node" => {
                s.nodes[victim].signal("TERM");
                let status = s.nodes[victim].wait_exit(Duration::from_secs(10));
                assert!(
                    status.is_some_and(|st| st.success()),
                    "graceful stop failed"
                );
                s.nodes.remove(victim);
                s.add_node();
            }
            "restart nats-server" => {
                s.secure.server.stop();
                std::thread::sleep(Duration::from_millis(500));
                s.secure.server.restart();
            }
            "cancel long tasks" => cancel_as_admin(&s, Some("alice"), first, &mut said),
            "cancel delayed tasks" => cancel_as_admin(&s, None, &doomed, &mut said),
            _ => {
                // Up to 20 short tasks whose results are kept by now.
                let done: Vec<String> = s
                    .read("RESULTS")
                    .iter()
                    .filter_map(|m| m.subject.strip_prefix("tenant.alice.results."))
                    .filter(|id| id.starts_with("mixc.") && !long_ids.iter().any(|l| l == id))
                    .take(20)
                    .map(str::to_string)
                    .collect();
                if !done.is_empty() {
                    cancel_as_admin(&s, Some("alice"), &done, &mut said);
                }
            }
        }
    }
    cancel_as_admin(&s, Some("alice"), rest, &mut said);
    let status = submit.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "the cancelled tasks fail: {}",
        s.submit_err()
    );
    // The last delayed task is due 7 s after the start: wait for its result.
    let expected: Vec<Expected> = (1..=tasks)
        .map(|n| {
            let id = fleet::contract::batch_task_id("mixc", n);
            (Some("alice"), id)
        })
        .chain(delayed.iter().map(|id| (None, id.clone())))
        .map(|(tenant, id)| {
            let subject = fleet::contract::in_tenant(tenant, &fleet::contract::default_reply(&id));
            let cancel = said.get(&subject).copied();
            Expected {
                id,
                subject,
                cancel,
            }
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let kept: std::collections::HashSet<String> = s
            .read("RESULTS")
            .iter()
            .map(|m| m.subject.to_string())
            .collect();
        if delayed
            .iter()
            .all(|id| kept.contains(&fleet::contract::default_reply(id)))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let lines = json_lines(&std::fs::read(&s.out).unwrap());
    let report = rt().block_on(async {
        let admin = s.secure.client(Role::Admin).await;
        check_cancels(admin, &expected, &never_acked(&lines)).await
    });
    let cancelled = said.values().filter(|c| **c == Cancel::Cancelled).count();
    println!(
        "checker, batch mixc and {} delayed tasks:\n{report}\nfaults and cancels: {plan:?}; {cancelled} cancelled, {} found finished; run took {:?}",
        delayed.len(),
        said.len() - cancelled,
        started.elapsed()
    );
    assert_eq!(report.lost, 0, "lost tasks:\n{report}");
    assert_eq!(report.duplicated, 0, "duplicated tasks:\n{report}");
    assert_eq!(report.wrong, 0, "tasks that ended wrongly:\n{report}");
    assert_eq!(report.unknown, 0, "tasks never acknowledged:\n{report}");
    assert_eq!(report.failed, 0, "failed tasks:\n{report}");
    assert_eq!(report.cancelled, cancelled, "{report}");
    assert_eq!(
        cancelled,
        long_ids.len() + doomed.len(),
        "every long task was cancelled"
    );
    assert_eq!(
        report.ok + report.cancelled,
        tasks as usize + delayed.len(),
        "{report}"
    );
    assert_eq!(
        s.state("DEAD").messages,
        0,
        "a cancelled task was dead-lettered"
    );
}
