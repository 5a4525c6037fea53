//! The fault suite: real nats-server, real `fleet` processes, real signals,
//! all under least privilege: the shipped `deploy/secure/nats.conf`, the
//! streams made by admin, nodes as the node role, batches submitted by the
//! tenant alice. Each scenario runs a batch large enough to be mid-flight
//! when the fault hits, then the checker classifies every acknowledged task
//! from what `RESULTS` committed. A lost or duplicated task fails the test.

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use fleet_testkit::checker::{check_from, Report};
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
