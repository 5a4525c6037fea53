//! `bin/dev`, the README's first command: it starts a server and three
//! nodes, runs its batch end to end, and stops everything on Ctrl-C; with
//! `--secure`, the same under the least-privilege roles and two tenants.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use fleet_testkit::*;

/// A running `bin/dev` and what it printed until it said the fleet is up.
struct Dev {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    seen: Vec<String>,
    lines: Receiver<String>,
}

fn start(args: &[&str]) -> Dev {
    let dir = tempfile::tempdir().unwrap();
    // bin/dev derives its monitoring port (+4000) and its three nodes'
    // metrics ports (+1001..+1003) from this one.
    let port = free_port_block(&[0, 1001, 1002, 1003, 4000]);
    // Ctrl-C is SIGINT. A shell started in the background inherits SIGINT
    // ignored and cannot trap it, so give bin/dev the default disposition,
    // as a terminal would.
    let mut child = Command::new("env")
        .arg("--default-signal=INT")
        .arg(root().join("bin/dev"))
        .args(args)
        .env("FLEET_DEV_PORT", port.to_string())
        .env("FLEET_DEV_DIR", dir.path())
        .env("FLEET_BIN", fleet_bin())
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read standard output on a thread, so bin/dev can always write to it.
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    while !seen
        .last()
        .is_some_and(|l: &String| l.contains("Press Ctrl-C"))
    {
        match lines.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => seen.push(line),
            Err(_) => {
                // Stuck, or it stopped: what it said on standard error says why.
                let _ = child.kill();
                let mut err = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
                }
                panic!(
                    "bin/dev did not get to Ctrl-C:\n{}\n-- stderr:\n{err}",
                    seen.join("\n")
                )
            }
        }
    }
    Dev {
        child,
        port,
        dir,
        seen,
        lines,
    }
}

impl Dev {
    fn task_lines(&self) -> Vec<&String> {
        self.seen
            .iter()
            .filter(|l| l.starts_with("task "))
            .collect()
    }

    /// The `nats` CLI against this fleet's server: its standard output.
    fn nats(&self, auth: &[&str], args: &[&str]) -> String {
        let out = Command::new(tool("nats"))
            .args(["--server", &format!("nats://127.0.0.1:{}", self.port)])
            .args(auth)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "nats {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap()
    }

    /// Ctrl-C: bin/dev stops the nodes (they drain) and the server, exits 0.
    fn stop(mut self) {
        signal(&self.child, "INT");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "bin/dev did not stop");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "bin/dev exited with {status:?}");
        let rest: Vec<String> =
            std::iter::from_fn(|| self.lines.recv_timeout(Duration::from_secs(5)).ok()).collect();
        assert!(rest.iter().any(|l| l == "== stopped"), "{rest:?}");
        assert!(
            TcpStream::connect(("127.0.0.1", self.port)).is_err(),
            "nats-server still listening"
        );
        for i in 1..=3 {
            let log = self.log(&format!("node{i}.log"));
            assert!(log.contains("stopped"), "node{i} did not drain:\n{log}");
            // Logs written to a file are plain text.
            assert!(
                !log.contains('\u{1b}'),
                "node{i}.log has escape codes:\n{log}"
            );
        }
    }
}

/// bin/dev runs its batch across the nodes, tells the user what to try, and
/// on SIGINT stops the nodes and the server and exits 0.
#[test]
fn bin_dev_runs_a_batch_and_stops_cleanly() {
    let dev = start(&[]);
    let out = dev.seen.join("\n");
    let task_lines = dev.task_lines();
    assert_eq!(task_lines.len(), 15, "{out}");
    // The sleep batch is spread over the nodes: 2 slots each, 12 tasks.
    let nodes: std::collections::HashSet<_> = task_lines
        .iter()
        .filter_map(|l| l.split(" on ").nth(1))
        .map(|r| r.split(' ').next().unwrap())
        .collect();
    assert!(nodes.len() >= 2, "{out}");
    assert!(out.contains(&sha256_hex(b"hello")), "{out}");
    assert!(TcpStream::connect(("127.0.0.1", dev.port)).is_ok());
    // The README's operator commands: every node in service discovery with
    // its kinds, the batch counted by kind, node1's metrics.
    let ls = dev.nats(&[], &["micro", "ls"]);
    for i in 1..=3 {
        assert!(
            ls.contains(&format!(
                "fleet node node{i} of group workers: echo, fail, sha256, sleep"
            )),
            "{ls}"
        );
    }
    let stats: serde_json::Value =
        serde_json::from_str(&dev.nats(&[], &["micro", "stats", "fleet", "--json"])).unwrap();
    let requests = |kind: &str| -> u64 {
        stats
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|node| node["endpoints"].as_array().unwrap())
            .filter(|e| e["name"] == kind)
            .map(|e| e["num_requests"].as_u64().unwrap())
            .sum()
    };
    assert_eq!((requests("sleep"), requests("sha256")), (12, 3), "{stats}");
    let metrics =
        http::get(([127, 0, 0, 1], dev.port + 1001).into(), "/metrics").expect("node1's metrics");
    assert!(
        metrics
            .body
            .contains("fleet_node_tasks_total{kind=\"sleep\",outcome=\"ok\"}"),
        "{}",
        metrics.body
    );
    dev.stop();
}

/// bin/dev --secure runs the fleet under the roles of deploy/secure: admin
/// sets up, nodes as the node role, two tenants share them, the reader
/// reads the status; not one permission violation.
#[test]
fn bin_dev_secure_runs_the_locked_down_fleet() {
    let dev = start(&["--secure"]);
    let out = dev.seen.join("\n");
    assert_eq!(dev.task_lines().len(), 9, "{out}");
    assert!(out.contains(&sha256_hex(b"hello")), "{out}");
    assert!(out.contains("group workers"), "no status: {out}");
    let server_log = dev.log("nats-server.log");
    let violations: Vec<_> = server_log
        .lines()
        .filter(|l| l.contains("Violation"))
        .collect();
    assert!(violations.is_empty(), "{violations:?}");
    let reader = [
        "--user",
        "reader",
        "--password",
        "reader-trial-password",
        "--inbox-prefix",
        "_INBOX_reader",
    ];
    let ls = dev.nats(&reader, &["micro", "ls"]);
    assert_eq!(ls.matches("fleet node node").count(), 3, "{ls}");
    dev.stop();
}
