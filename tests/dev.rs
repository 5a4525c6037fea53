//! `bin/dev`, the README's first command: it starts a server and three
//! nodes, runs its batch end to end, and stops everything on Ctrl-C.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleet_testkit::*;

/// bin/dev runs its batch across the nodes, tells the user what to try, and
/// on SIGINT stops the nodes and the server and exits 0.
#[test]
fn bin_dev_runs_a_batch_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Ctrl-C is SIGINT. A shell started in the background inherits SIGINT
    // ignored and cannot trap it, so give bin/dev the default disposition,
    // as a terminal would.
    let mut dev = Command::new("env")
        .arg("--default-signal=INT")
        .arg(root().join("bin/dev"))
        .env("FLEET_DEV_PORT", port.to_string())
        .env("FLEET_DEV_DIR", dir.path())
        .env("FLEET_BIN", fleet_bin())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read standard output on a thread, so bin/dev can always write to it.
    let stdout = BufReader::new(dev.stdout.take().unwrap());
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
            Err(_) => panic!("bin/dev is stuck:\n{}", seen.join("\n")),
        }
    }
    let out = seen.join("\n");
    let task_lines: Vec<_> = seen.iter().filter(|l| l.starts_with("task ")).collect();
    assert_eq!(task_lines.len(), 15, "{out}");
    // The sleep batch is spread over the nodes: 2 slots each, 12 tasks.
    let nodes: std::collections::HashSet<_> = task_lines
        .iter()
        .filter_map(|l| l.split(" on ").nth(1))
        .map(|r| r.split(' ').next().unwrap())
        .collect();
    assert!(nodes.len() >= 2, "{out}");
    assert!(out.contains(&sha256_hex(b"hello")), "{out}");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());

    // Ctrl-C.
    signal(&dev, "INT");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = dev.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "bin/dev did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "bin/dev exited with {status:?}");
    let rest: Vec<String> =
        std::iter::from_fn(|| lines.recv_timeout(Duration::from_secs(5)).ok()).collect();
    assert!(rest.iter().any(|l| l == "== stopped"), "{rest:?}");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nats-server still listening"
    );
    for i in 1..=3 {
        let log = std::fs::read_to_string(dir.path().join(format!("node{i}.log"))).unwrap();
        assert!(log.contains("stopped"), "node{i} did not drain:\n{log}");
    }
}
