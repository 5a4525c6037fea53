//! A node killed, stopped past its ack wait, or stopped gracefully;
//! the server restarted mid-batch.

use super::*;

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
    s.wait_printed(1);
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
    s.wait_printed(1);
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
