//! Deadlines, result lifetimes, unique tasks, pause and resume, as users
//! see them: each test against its own nats-server, real `fleet` and `nats`
//! processes, checks on exit codes, printed statuses, what RESULTS and the
//! `fleet-unique` bucket hold, and when tasks started.

mod deadline;
mod pause;
mod priority;
mod unique;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use fleet_testkit::http::{get, metric_sum, parse_metrics, request};
use fleet_testkit::secure::{Role, Secure};
use fleet_testkit::*;

/// A node of a development fleet with extra flags and environment, ready.
fn node(server: &NatsServer, args: &[&str], env: &[(&str, &str)]) -> NodeProc {
    let mut all = vec!["--create", "--dev-builtins"];
    all.extend_from_slice(args);
    let mut node = NodeProc::start(&server.url(), server.dir.path(), "node1", &all, env);
    node.wait_ready(Duration::from_secs(30));
    node
}

/// `fleet status --json`'s group `name`.
fn group(server: &NatsServer, name: &str) -> serde_json::Value {
    let out = fleet(server, &["status", "--json"], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    status["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
        .unwrap_or_else(|| panic!("no group {name}: {status}"))
        .clone()
}

/// Runs `fleet` and checks its exit code; returns its JSON lines (with
/// `--json`).
fn fleet_ok(server: &NatsServer, args: &[&str], code: i32) -> Vec<serde_json::Value> {
    let out = fleet(server, args, b"");
    assert_eq!(
        out.status.code(),
        Some(code),
        "fleet {args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    if args.contains(&"--json") {
        json_lines(&out.stdout)
    } else {
        Vec::new()
    }
}

fn rfc3339(value: &serde_json::Value) -> SystemTime {
    humantime::parse_rfc3339(value.as_str().unwrap_or_else(|| panic!("no time: {value}"))).unwrap()
}

/// A background `fleet submit` of `lines`, its output in `dir/<name>.out`.
fn submit_in_background(
    server: &NatsServer,
    dir: &Path,
    name: &str,
    args: &[&str],
    lines: &str,
) -> (KillOnDrop, std::path::PathBuf) {
    let input = dir.join(format!("{name}.in"));
    std::fs::write(&input, lines).unwrap();
    let out = dir.join(format!("{name}.out"));
    (KillOnDrop(spawn_submit(server, args, &input, &out)), out)
}

fn wait_exit(child: &mut KillOnDrop, limit: Duration) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(
            start.elapsed() < limit,
            "fleet submit still runs after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
