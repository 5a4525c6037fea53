//! The fault suite: real nats-server, real `fleet` processes, real signals,
//! all under least privilege: the shipped `deploy/secure/nats.conf`, the
//! streams made by admin, nodes as the node role, batches submitted by the
//! tenant alice. Each scenario runs a batch large enough to be mid-flight
//! when the fault hits, then the checker classifies every acknowledged task
//! from what `RESULTS` committed. A lost or duplicated task fails the test.

mod mixed;
mod recovery;
mod signals;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant, SystemTime};

use fleet_testkit::checker::{
    check_cancels, check_from, never_acked, not_ok, Cancel, Expected, Report,
};
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

    /// Waits until the submitter has printed `n` results: connected and
    /// submitting (a fixed wait was sometimes before it had connected on a
    /// busy machine, and a server stopped then fails its connect).
    fn wait_printed(&self, n: usize) {
        eventually(Duration::from_secs(30), "the first results printed", || {
            let out = std::fs::read(&self.out).unwrap_or_default();
            let printed = out.iter().filter(|b| **b == b'\n').count();
            (printed >= n).then_some(())
        });
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

    /// What `nats consumer report TASKS` says (for a failure's message).
    fn consumers(&self) -> String {
        let out = std::process::Command::new(tool("nats"))
            .args(["--server", &self.secure.server.url()])
            .args(Role::Admin.flags())
            .args(["consumer", "report", fleet::contract::TASKS_STREAM])
            .output()
            .expect("running nats");
        text(&out.stdout) + &text(&out.stderr)
    }

    /// The state of `stream`, read as admin.
    fn state(&self, stream: &str) -> async_nats::jetstream::stream::State {
        rt().block_on(async {
            stream_state_from(self.secure.client(Role::Admin).await, stream).await
        })
    }

    /// The checker's table, once `TASKS` is empty or 30 s have passed: a
    /// result reaches the submitter before its store is confirmed, and a
    /// node acks a task only after (see the partitions tests'
    /// `Site::check`). A `TASKS` that never empties is printed, with its
    /// consumers, and the check goes on: a task without a result is lost
    /// either way. (Once, in 9 runs of this suite, `server_restart_mid_batch`
    /// left tasks in `TASKS` for over a minute with every result in; why
    /// is open, and this print is there to tell.)
    fn check(&self) -> Report {
        let lines = json_lines(&std::fs::read(&self.out).unwrap());
        let drained = poll_until(
            Duration::from_secs(30),
            || self.state(fleet::contract::TASKS_STREAM),
            |state| state.messages == 0,
        );
        if let Err(state) = drained {
            println!(
                "TASKS still holds {} task(s) 30 s after the submitter ended: {state:?}\n{}",
                state.messages,
                self.consumers()
            );
        }
        let report = rt().block_on(async {
            let admin = self.secure.client(Role::Admin).await;
            check_from(admin, Some("alice"), &self.batch, self.tasks, &lines).await
        });
        println!(
            "checker, batch {}:\n{report}\nnot ok (first 10):\n{}",
            self.batch,
            not_ok(&lines, 10)
        );
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
