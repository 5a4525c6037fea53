//! A poison task dead-lettered and replayed; a submitter killed and
//! run again.

use super::*;

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
    // Killed once it has printed some results (not after a fixed time: on a
    // busy machine 700 ms was sometimes before the first).
    s.wait_printed(50);
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
