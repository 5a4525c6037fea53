//! Scenario 3: the submitter's host cut off and restored mid-batch.

use super::*;

/// The submitter loses its link for 5 s mid-batch. It notices (pings
/// unanswered), keeps trying its servers, and once the link is back
/// resends what JetStream never confirmed: each task carries
/// `Nats-Msg-Id: <batch>.<n>`, so a task that was stored before the cut is
/// not stored again. `TASKS` has stored exactly one message per task (its
/// last sequence), no node's result was refused by the fence (nothing ran
/// twice), and every task has exactly one result.
#[test]
fn submitter_host_cut_off_and_restored_mid_batch() {
    let started = Instant::now();
    let lines = "20ms\n".repeat(3000);
    // ack_wait well past any task: a task runs twice only if enqueued twice.
    let site = Site::new("subcut", &lines, "30s", &["--concurrency", "8"]);
    let mut submit = KillOnDrop(site.submit("sleep", &["--window", "256"]));
    site.wait_results(&mut submit.0, 300);
    site.net.cut("sub");
    let at_cut = site.results_so_far().len();
    std::thread::sleep(Duration::from_secs(5));
    site.net.heal("sub");
    assert!(
        submit.0.try_wait().unwrap().is_none(),
        "the batch ended during the cut: make it longer"
    );
    eprintln!("submitter cut off for 5 s with {at_cut} results in");
    site.wait_ok(&mut submit.0, Duration::from_secs(90));
    let report = site.check(0);
    let refused: f64 = ["n1", "n2", "n3"].iter().map(|n| site.refused(n)).sum();
    let stored = site.stored("TASKS", 0);
    println!(
        "TASKS stored {stored} messages for {} tasks; results refused by the fence: {refused}; run took {:?}",
        site.tasks,
        started.elapsed()
    );
    assert_nothing_lost(&report, site.tasks);
    assert_eq!(stored, site.tasks, "a task was enqueued twice (or never)");
    assert_eq!(refused, 0.0, "a task ran twice");
}
