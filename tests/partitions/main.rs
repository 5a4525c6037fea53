//! Hosts and partitions: a three-server R3 cluster (`sync_interval:
//! always`) and `fleet` processes each on a host of its own (Linux network
//! namespaces on one switch, fleet-testkit's `netns`), links cut and healed
//! mid-batch. Every client is given the URLs of all three servers. The
//! checker classifies every task from what `RESULTS` committed: 0 lost, 0
//! duplicated, every task acknowledged.
//!
//! The namespaces need root and `ip`: without them the test fails, saying so.

mod node_cut;
mod server_cut;
mod soak;
mod submitter_cut;

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use fleet_testkit::checker::{check, Report};
use fleet_testkit::netns::{fleet_on, node_on, submit_on, Net, NetCluster};
use fleet_testkit::*;

/// Client flags every scenario gives: a dead connection is noticed within
/// about 3 s (a ping a second, two unanswered), not 3 minutes.
const PING: [&str; 2] = ["--ping-interval", "1s"];

/// A network of six hosts (`s1`..`s3` servers, `n1`..`n3` nodes) and one
/// submitter host (`sub`), a cluster on the servers, the streams made with
/// three replicas, and one node a node host.
struct Site {
    // Fields drop in this order: logs shown first, then processes stopped,
    // then the namespaces deleted.
    _logs: LogsOnFailure,
    nodes: Vec<NodeProc>,
    cluster: NetCluster,
    work: tempfile::TempDir,
    batch: String,
    tasks: u64,
    input: PathBuf,
    out: PathBuf,
    net: Net,
}

impl Site {
    /// `node_args`: flags of every node; `ack_wait` the group's.
    fn new(batch: &str, lines: &str, ack_wait: &str, node_args: &[&str]) -> Site {
        let mut site = Site::without_nodes(batch, lines, ack_wait);
        for i in 1..=3 {
            site.start_node(&format!("n{i}"), node_args);
        }
        for node in &mut site.nodes {
            node.wait_ready(Duration::from_secs(30));
        }
        site
    }

    /// [`Site::new`] with no node started yet.
    fn without_nodes(batch: &str, lines: &str, ack_wait: &str) -> Site {
        let net = Net::new(&["s1", "s2", "s3", "n1", "n2", "n3", "sub"]);
        let cluster = NetCluster::start(&net, &["s1", "s2", "s3"]);
        let work = tempfile::tempdir().unwrap();
        let urls = cluster.urls();
        let setup = fleet_on(
            net.host("sub"),
            &urls,
            &["setup", "--replicas", "3", "--ack-wait", ack_wait],
        );
        assert!(
            setup.status.success(),
            "fleet setup: {}",
            text(&setup.stderr)
        );
        let input = work.path().join("input");
        std::fs::write(&input, lines).unwrap();
        let out = work.path().join("out.jsonl");
        let mut files = cluster.logs();
        files.push(("submit stderr".into(), out.with_extension("err")));
        Site {
            nodes: Vec::new(),
            batch: batch.to_string(),
            tasks: lines.lines().count() as u64,
            input,
            out,
            _logs: LogsOnFailure { files },
            work,
            cluster,
            net,
        }
    }

    /// The index of the server a client named `name` is connected to,
    /// among those that answer.
    fn server_of(&self, name: &str) -> Option<usize> {
        self.cluster.servers.iter().position(|s| {
            s.monitor("/connz?limit=1024").is_some_and(|c| {
                c["connections"]
                    .as_array()
                    .is_some_and(|all| all.iter().any(|c| c["name"] == name))
            })
        })
    }

    /// What server `via` says of `stream` (waiting up to 30 s for an answer).
    fn stream_info(&self, stream: &str, via: usize) -> async_nats::jetstream::stream::Info {
        let url = self.cluster.servers[via].url();
        rt().block_on(async {
            let client = async_nats::connect(url).await.expect("connecting");
            let js = async_nats::jetstream::new(client);
            let limit = Instant::now() + Duration::from_secs(30);
            fleet_testkit::cluster::stream_info_when(&js, stream, limit, |_| true).await
        })
    }

    /// The leader of `stream`, asked through server `via`.
    fn leader(&self, stream: &str, via: usize) -> String {
        let info = self.stream_info(stream, via);
        info.cluster.and_then(|c| c.leader).expect("a leader")
    }

    /// How many messages `stream` ever stored (its last sequence), asked
    /// through server `via`.
    fn stored(&self, stream: &str, via: usize) -> u64 {
        self.stream_info(stream, via).state.last_sequence
    }

    /// Moves `stream`'s leadership to server `name` (`nats stream cluster
    /// step-down --preferred`), and waits until it is there.
    fn make_leader(&self, stream: &str, name: &str) {
        let via = self.cluster.index_of(name).expect("one of ours");
        for _ in 0..10 {
            if self.leader(stream, via) == name {
                return;
            }
            let out = std::process::Command::new(tool("nats"))
                .args(["--server", &self.cluster.servers[via].url()])
                .args([
                    "stream",
                    "cluster",
                    "step-down",
                    stream,
                    "--preferred",
                    name,
                ])
                .output()
                .expect("running nats");
            eprintln!(
                "nats stream cluster step-down: {}{}",
                text(&out.stdout),
                text(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("{stream}'s leadership never moved to {name}");
    }

    /// Starts a node on `host` (named as its host), metrics on its address.
    fn start_node(&mut self, host: &str, args: &[&str]) {
        let h = self.net.host(host);
        let metrics = format!("{}:9100", h.addr);
        let mut all = vec!["--dev-builtins", "--metrics-addr", &metrics];
        all.extend_from_slice(&PING);
        all.extend_from_slice(args);
        let node = node_on(h, &self.cluster.urls(), self.work.path(), host, &all);
        self._logs.files.push((host.to_string(), node.log.clone()));
        self.nodes.push(node);
    }

    /// `fleet submit KIND --json --batch <batch>` from the submitter host.
    fn submit(&self, kind: &str, extra: &[&str]) -> Child {
        let mut args = vec![kind, "--json", "--batch", &self.batch, "--timeout", "120s"];
        args.extend_from_slice(&PING);
        args.extend_from_slice(extra);
        submit_on(
            self.net.host("sub"),
            &self.cluster.urls(),
            &args,
            &self.input,
            &self.out,
        )
    }

    /// Lines of results the submitter has printed so far.
    fn results_so_far(&self) -> Vec<serde_json::Value> {
        json_lines(&std::fs::read(&self.out).unwrap_or_default())
    }

    /// Waits until `n` results are printed (the batch is in flight).
    fn wait_results(&self, submit: &mut Child, n: usize) {
        eventually(Duration::from_secs(30), "the first results", || {
            assert!(
                submit.try_wait().unwrap().is_none(),
                "submit ended early: {}",
                self.submit_err()
            );
            (self.results_so_far().len() >= n).then_some(())
        });
    }

    fn submit_err(&self) -> String {
        std::fs::read_to_string(self.out.with_extension("err")).unwrap_or_default()
    }

    /// Waits for the submitter, which must succeed.
    fn wait_ok(&self, submit: &mut Child, limit: Duration) {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = submit.try_wait().unwrap() {
                break status;
            }
            assert!(
                started.elapsed() < limit,
                "submit still running after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        if !status.success() {
            panic!(
                "fleet submit failed: {}\nfailed tasks (first 10):\n{}",
                self.submit_err(),
                fleet_testkit::checker::not_ok(&self.results_so_far(), 10)
            );
        }
    }

    /// The checker's table, read through `server` (a reachable one).
    ///
    /// Once `TASKS` is empty, or a minute has passed: the submitter counts
    /// a task done when its result's message reaches it, which can be
    /// before `RESULTS` stored it (the store waits for a stream leader
    /// after a server was cut off), while a node acks a task only once its
    /// result is stored. So an empty `TASKS` means every result that will
    /// be kept is kept. (Read at once, the last 6 tasks of a soak run whose
    /// final fault cut a server off counted as lost.) A `TASKS` that never
    /// empties is printed and the check goes on: a task without a result
    /// is lost either way.
    fn check(&self, server: usize) -> Report {
        let lines = self.results_so_far();
        let url = self.cluster.servers[server].url();
        let drained = poll_until(
            Duration::from_secs(60),
            || {
                self.stream_info(fleet::contract::TASKS_STREAM, server)
                    .state
            },
            |state| state.messages == 0,
        );
        if let Err(state) = drained {
            println!(
                "TASKS still holds {} task(s) a minute after the submitter ended: {state:?}",
                state.messages
            );
        }
        let report = rt().block_on(check(&url, &self.batch, self.tasks, &lines));
        println!("checker, batch {}:\n{report}", self.batch);
        report
    }

    /// A node's `fleet_node_results_refused` (the fence's refusals).
    fn refused(&self, host: &str) -> f64 {
        let addr = (self.net.host(host).addr, 9100).into();
        let page = fleet_testkit::http::get(addr, "/metrics").expect("the node's metrics");
        let samples = fleet_testkit::http::parse_metrics(&page.body);
        let name = "fleet_node_results_refused_total";
        assert!(
            samples.keys().any(|k| k.starts_with(name)),
            "{host} serves no {name}"
        );
        fleet_testkit::http::metric_sum(&samples, name, &[])
    }
}

/// 0 lost, 0 duplicated, every task acknowledged and ok.
fn assert_nothing_lost(report: &Report, tasks: u64) {
    assert_eq!(report.lost, 0, "lost tasks:\n{report}");
    assert_eq!(report.duplicated, 0, "duplicated tasks:\n{report}");
    assert_eq!(report.unknown, 0, "tasks never acknowledged:\n{report}");
    assert_eq!(report.ok as u64, tasks, "not every task ok:\n{report}");
}
