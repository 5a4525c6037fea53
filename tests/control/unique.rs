//! Unique tasks: one winner per key among racing submitters.

use super::*;

/// Two submitter processes race for one unique key at the same instant
/// (both wait for one file): exactly one task is published, the other is
/// refused (409) and told the id of the task that holds the key. Five such
/// races at once, five winners. When the holder ends the key is free
/// again; with `--unique-for` it stays taken that long after.
#[test]
fn racing_submitters_get_one_winner_per_unique_key() {
    let server = NatsServer::start();
    let _node = NodeProc::spawn(&server, "node1", &[]);
    let dir = server.dir.path();
    let go = dir.join("go");
    let mut racers = Vec::new();
    for key in 0..5 {
        for side in ["a", "b"] {
            let out = dir.join(format!("race-{key}-{side}.out"));
            let child = Command::new("sh")
                .arg("-c")
                .arg(r#"while [ ! -e "$1" ]; do sleep 0.005; done; exec "$2" --nats-url "$3" submit sleep 3s --json --unique "$4""#)
                .args(["race", go.to_str().unwrap(), fleet_bin().to_str().unwrap(), &server.url(), &format!("race-{key}")])
                .stdout(std::fs::File::create(&out).unwrap())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            racers.push((key, KillOnDrop(child), out));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&go, "").unwrap();
    let mut ended = Vec::new();
    for (key, mut child, out) in racers {
        let code = wait_exit(&mut child, Duration::from_secs(30));
        let line = json_lines(&std::fs::read(&out).unwrap()).remove(0);
        ended.push((key, code, line));
    }
    for key in 0..5 {
        let pair: Vec<_> = ended.iter().filter(|(k, ..)| *k == key).collect();
        let winners: Vec<_> = pair.iter().filter(|(_, code, _)| *code == 0).collect();
        let losers: Vec<_> = pair.iter().filter(|(_, code, _)| *code == 1).collect();
        assert_eq!(
            (winners.len(), losers.len()),
            (1, 1),
            "key race-{key}: {pair:?}"
        );
        let (winner, loser) = (&winners[0].2, &losers[0].2);
        assert_eq!(winner["status"], "ok");
        assert_eq!(
            (&loser["status"], &loser["code"]),
            (&"refused".into(), &409.into()),
            "{loser}"
        );
        let holder = winner["id"].as_str().unwrap();
        assert_eq!(
            loser["error"],
            format!("unique key sleep.race-{key} is held by task {holder}"),
        );
    }
    let kept = rt().block_on(stream_len(&server.url(), "RESULTS"));
    assert_eq!(kept, 5, "only the winners' tasks were published and run");

    // The holders ended: their keys are free again.
    eventually(Duration::from_secs(5), "the keys freed", || {
        (0..5)
            .all(|k| {
                !nats(
                    &server,
                    &["kv", "get", "fleet-unique", &format!("sleep.race-{k}")],
                )
                .status
                .success()
            })
            .then_some(())
    });
    let again = fleet_ok(
        &server,
        &["submit", "sleep", "10ms", "--json", "--unique", "race-0"],
        0,
    );
    assert_eq!(again[0]["status"], "ok");

    // --unique-for keeps the key taken after the task ended.
    let held = fleet_ok(
        &server,
        &[
            "submit",
            "echo",
            "a",
            "--json",
            "--unique",
            "hold",
            "--unique-for",
            "3s",
        ],
        0,
    );
    let ended_at = Instant::now();
    let refused = fleet_ok(
        &server,
        &["submit", "echo", "b", "--json", "--unique", "hold"],
        1,
    );
    assert_eq!(
        refused[0]["error"],
        format!(
            "unique key echo.hold is held by task {}",
            held[0]["id"].as_str().unwrap()
        )
    );
    eventually(Duration::from_secs(8), "the held key expired", || {
        (!nats(&server, &["kv", "get", "fleet-unique", "echo.hold"])
            .status
            .success())
        .then_some(())
    });
    let freed_after = ended_at.elapsed();
    assert!(
        freed_after >= Duration::from_secs(2),
        "freed after {freed_after:?}, not 3s"
    );
    fleet_ok(
        &server,
        &["submit", "echo", "c", "--json", "--unique", "hold"],
        0,
    );
}
