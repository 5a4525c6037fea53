//! Time, each test against its own nats-server: a delayed task runs at its
//! time (not before, within a second after) with its submitter gone, and
//! is collected later with `fleet results`; with no node up it waits for
//! the first one; a recurring schedule fires once per occurrence across a
//! nats-server restart, shows in `fleet schedule list`, and stops when
//! removed; a tenant's connection that does not name its tenant, or whose
//! tenant has no schedule stream, is told what to do (tenants' schedules:
//! tests/security/tenant_time.rs).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use fleet_testkit::secure::{Role, Secure};
use fleet_testkit::*;

fn time(value: &serde_json::Value) -> SystemTime {
    let text = value.as_str().unwrap_or_else(|| panic!("a time: {value}"));
    humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn millis_after(later: SystemTime, earlier: SystemTime) -> i64 {
    match later.duration_since(earlier) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// `fleet submit … --no-wait --json`: the batch and the time of its tasks.
fn schedule_batch(server: &NatsServer, args: &[&str]) -> (String, SystemTime) {
    let mut all = vec!["submit", "--no-wait", "--json"];
    all.extend_from_slice(args);
    let out = fleet(server, &all, b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = json_lines(&out.stdout);
    assert!(!lines.is_empty(), "{}", text(&out.stderr));
    for l in &lines {
        assert_eq!(l["status"], "scheduled", "{l}");
    }
    let batch = lines[0]["batch"].as_str().unwrap().to_string();
    (batch, time(&lines[0]["at"]))
}

/// A delayed task starts no earlier than its time and within a second
/// after it, though its submitter exited long before; `fleet results`
/// says it is still scheduled before, and prints its result after.
#[test]
fn a_delayed_task_runs_on_time_and_is_collected_later() {
    let server = NatsServer::start();
    let _node = NodeProc::spawn(&server, "node1", &[]);
    let asked = SystemTime::now();
    let (batch, at) = schedule_batch(&server, &["echo", "--delay", "3s", "hello"]);
    assert!(
        at >= asked + Duration::from_secs(3),
        "rounded up, never early"
    );
    assert!(at < asked + Duration::from_secs(5));

    let early = fleet(&server, &["results", &batch], b"");
    if SystemTime::now() + Duration::from_millis(500) < at {
        assert_eq!(early.status.code(), Some(1), "{}", text(&early.stderr));
        let said = text(&early.stderr);
        assert!(
            said.contains("1 missing") && said.contains("still scheduled"),
            "{said}"
        );
    }

    let done = fleet(
        &server,
        &["results", &batch, "--wait", "10s", "--json"],
        b"",
    );
    assert!(done.status.success(), "{}", text(&done.stderr));
    let lines = json_lines(&done.stdout);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        (&lines[0]["id"], &lines[0]["status"], &lines[0]["result"]),
        (&format!("{batch}.1").into(), &"ok".into(), &"hello".into())
    );
    let started = time(&lines[0]["started"]);
    let late = millis_after(started, at);
    eprintln!("delayed task: started {late} ms after its time");
    assert!(late >= 0, "started {late} ms before its time");
    assert!(late < 1000, "started {late} ms after its time");
}

/// With no node up at its time, a delayed task is queued when due (not
/// before) and runs when the first node comes up.
#[test]
fn a_delayed_task_waits_for_the_first_node() {
    let server = NatsServer::start();
    let setup = fleet(&server, &["setup"], b"");
    assert!(setup.status.success(), "{}", text(&setup.stderr));
    let (batch, at) = schedule_batch(
        &server,
        &["echo", "--delay", "1s", "--batch", "early", "late"],
    );
    assert_eq!(batch, "early");
    rt().block_on(async {
        // Fired: queued in TASKS, at its time and not before.
        let url = server.url();
        let deadline = Instant::now() + Duration::from_secs(10);
        while stream_len(&url, "TASKS").await == 0 {
            assert!(Instant::now() < deadline, "the task was never queued");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(SystemTime::now() >= at, "queued before its time");
    });
    let waiting = fleet(&server, &["results", "early"], b"");
    assert_eq!(waiting.status.code(), Some(1));
    let said = text(&waiting.stderr);
    assert!(
        said.contains("1 missing") && !said.contains("still scheduled"),
        "{said}"
    );

    let node_up = SystemTime::now();
    let _node = NodeProc::spawn(&server, "node1", &[]);
    let done = fleet(
        &server,
        &["results", "early", "--wait", "15s", "--json"],
        b"",
    );
    assert!(done.status.success(), "{}", text(&done.stderr));
    let lines = json_lines(&done.stdout);
    assert_eq!((lines.len(), &lines[0]["result"]), (1, &"late".into()));
    let started = time(&lines[0]["started"]);
    assert!(started >= node_up, "ran when the node came up");
}

fn header<'a>(m: &'a async_nats::Message, name: &str) -> Option<&'a str> {
    m.headers.as_ref()?.get(name).map(|v| v.as_str())
}

/// Every firing of schedule `tick` (its `due.echo` copy in `SCHEDULES`),
/// by sequence, with the time the server stored it.
fn firing_times(url: &str) -> BTreeMap<u64, SystemTime> {
    rt().block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let stream = js.get_stream("SCHEDULES").await.unwrap();
        let mut out = BTreeMap::new();
        let last = stream.cached_info().state.last_sequence;
        for seq in 1..=last {
            if let Ok(m) = stream.get_raw_message(seq).await {
                let fired_by_tick = m.subject.as_str() == "due.echo"
                    && m.headers.get("Nats-Scheduler").map(|v| v.as_str())
                        == Some("sched.cron.tick");
                if fired_by_tick {
                    out.insert(seq, m.time.into());
                }
            }
        }
        out
    })
}

/// The results of `tick`'s occurrences: subject, `Task-Id`, `Task-Started`.
fn occurrence_results(url: &str) -> Vec<(String, String, SystemTime)> {
    rt().block_on(read_stream(url, "RESULTS"))
        .iter()
        .filter(|m| m.subject.starts_with("results.sched.tick."))
        .map(|m| {
            let started = header(m, "Task-Started").expect("Task-Started");
            (
                m.subject.to_string(),
                header(m, "Task-Id").unwrap_or_default().to_string(),
                humantime::parse_rfc3339(started).unwrap(),
            )
        })
        .collect()
}

/// `fleet schedule add … --every 2s --catch-up 2s` with three nodes: each
/// firing runs once (one result, one id), firings are 2 s apart and go on
/// across a nats-server restart (the runs missed while it was down fire
/// once, at startup, and that run is past its window: `408 expired`);
/// `fleet schedule list` shows the next and last run; after `fleet
/// schedule remove` it fires no more.
#[test]
fn a_schedule_fires_once_per_occurrence_across_a_restart_until_removed() {
    let mut server = NatsServer::start();
    let url = server.url();
    let _nodes: Vec<NodeProc> = (1..=3)
        .map(|i| NodeProc::spawn(&server, &format!("node{i}"), &[]))
        .collect();
    let added = fleet(
        &server,
        &[
            "schedule",
            "add",
            "tick",
            "--every",
            "2s",
            "--catch-up",
            "2s",
            "echo",
            "ping",
        ],
        b"",
    );
    assert!(added.status.success(), "{}", text(&added.stderr));
    assert!(
        text(&added.stdout).contains("@every 2s"),
        "{}",
        text(&added.stdout)
    );

    eventually(Duration::from_secs(15), "three occurrences ran", || {
        (occurrence_results(&url).len() >= 3).then_some(())
    });
    let listed = fleet(&server, &["schedule", "list", "--json"], b"");
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let lines = json_lines(&listed.stdout);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let tick = &lines[0];
    assert_eq!(
        (&tick["name"], &tick["kind"], &tick["pattern"]),
        (&"tick".into(), &"echo".into(), &"@every 2s".into())
    );
    assert_eq!(tick["last_run"]["status"], "ok", "{tick}");
    let last_started = time(&tick["last_run"]["started"]);
    let next = time(&tick["next_run"]);
    assert!(next > last_started, "{tick}");
    assert!(next < SystemTime::now() + Duration::from_secs(3), "{tick}");

    // Down for more than two runs' times: they are missed, not lost.
    let down_at = SystemTime::now();
    server.restart_after(Duration::from_secs(5));
    let restarted = SystemTime::now();
    eventually(
        Duration::from_secs(30),
        "two occurrences after the restart",
        || {
            let after = occurrence_results(&url)
                .iter()
                .filter(|(_, _, started)| *started > restarted)
                .count();
            (after >= 2).then_some(())
        },
    );

    let removed = fleet(&server, &["schedule", "remove", "tick"], b"");
    assert!(removed.status.success(), "{}", text(&removed.stderr));
    let fired = firing_times(&url);
    // Two intervals and a half: a schedule still there would fire twice.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(firing_times(&url), fired, "no firing after the removal");
    let again = fleet(&server, &["schedule", "remove", "tick"], b"");
    assert_eq!(again.status.code(), Some(1), "an unknown name");
    assert!(text(&again.stderr).contains("no schedule named"));

    // Every firing ran exactly once: one result each, under its own id.
    let results = eventually(Duration::from_secs(10), "a result for every firing", || {
        let r = occurrence_results(&url);
        (r.len() >= fired.len()).then_some(r)
    });
    assert_eq!(results.len(), fired.len(), "one result per firing");
    let ids: HashSet<&str> = results.iter().map(|(_, id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), results.len(), "no occurrence id twice");
    for (subject, id, started) in &results {
        assert_eq!(subject, &format!("results.{id}"));
        let seq: u64 = id.rsplit('.').next().unwrap().parse().unwrap();
        let at = fired
            .get(&seq)
            .unwrap_or_else(|| panic!("{id} is no firing of tick"));
        assert!(
            *started >= *at - Duration::from_millis(5),
            "{id} started before it fired"
        );
    }
    // Firings every 2 s, one catch-up at the restart at most.
    let times: Vec<SystemTime> = fired.values().copied().collect();
    let gaps: Vec<i64> = times.windows(2).map(|w| millis_after(w[1], w[0])).collect();
    let regular = gaps.iter().filter(|g| (1500..=2500).contains(*g)).count();
    assert!(regular + 2 >= gaps.len(), "firings 2 s apart: {gaps:?}");
    assert!(
        gaps.iter().all(|g| *g >= 900),
        "never twice at once: {gaps:?}"
    );
    let at_startup = times
        .iter()
        .filter(|t| **t > down_at && **t <= restarted + Duration::from_secs(1))
        .count();
    assert_eq!(
        at_startup, 1,
        "the missed runs fire once, at startup: {gaps:?}"
    );
    // With --catch-up 2s, that one run ends 408 expired: the first run it
    // stands for was due (the firing before says when) at least 3 s
    // before it. Every other run ran.
    let startup = fired
        .iter()
        .find(|(_, t)| **t > down_at && **t <= restarted + Duration::from_secs(1))
        .map(|(seq, _)| *seq);
    for (id, code, _) in coded_results(&url, "sched.tick.") {
        let seq: u64 = id.rsplit('.').next().unwrap().parse().unwrap();
        let wanted = (Some(seq) == startup).then_some("408");
        assert_eq!(
            code.as_deref(),
            wanted,
            "{id} (the run at startup: {startup:?})"
        );
    }
    assert!(fired.len() >= 5, "{gaps:?}");
    eprintln!("firings {} apart (ms): {gaps:?}", fired.len());
}

/// Tasks the group `workers` has handed out and not had acked.
fn ack_pending(url: &str) -> usize {
    rt().block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
        let stream = js.get_stream("TASKS").await.unwrap();
        let mut consumer: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer("workers").await.unwrap();
        consumer.info().await.unwrap().num_ack_pending
    })
}

/// Every result kept under `results.<prefix>…`: its `Task-Id`, its error
/// code (`None` when ok) and its `Task-Started`.
fn coded_results(url: &str, prefix: &str) -> Vec<(String, Option<String>, SystemTime)> {
    rt().block_on(read_stream(url, "RESULTS"))
        .iter()
        .filter(|m| m.subject.starts_with(&format!("results.{prefix}")))
        .map(|m| {
            let started = header(m, "Task-Started").expect("Task-Started");
            (
                header(m, "Task-Id").unwrap_or_default().to_string(),
                header(m, "Nats-Service-Error-Code").map(str::to_string),
                humantime::parse_rfc3339(started).unwrap(),
            )
        })
        .collect()
}

/// `--catch-up 2s`: with no node up, the runs that waited in the queue
/// longer than 2 s end `408 expired` without running, the ones after run;
/// and the window never cuts a started task short: a task (here from the
/// `nats` CLI, `Task-Catch-Up: 1s`) whose node is SIGKILLed after its
/// window is still queued, and ends with exactly one result.
#[test]
fn a_catch_up_window_expires_stale_runs_and_never_drops_a_started_one() {
    let server = NatsServer::start();
    let url = server.url();
    let setup = fleet(&server, &["setup", "--ack-wait", "2s"], b"");
    assert!(setup.status.success(), "{}", text(&setup.stderr));
    let add = [
        "schedule",
        "add",
        "tick",
        "--every",
        "1s",
        "--catch-up",
        "2s",
        "echo",
        "ping",
    ];
    let added = fleet(&server, &add, b"");
    assert!(added.status.success(), "{}", text(&added.stderr));
    let listed = fleet(&server, &["schedule", "list", "--json"], b"");
    assert_eq!(
        json_lines(&listed.stdout)[0]["catch_up"],
        "2s",
        "{}",
        text(&listed.stdout)
    );

    // No node up: firings wait in the queue.
    eventually(Duration::from_secs(15), "five firings queued", || {
        (firing_times(&url).len() >= 5).then_some(())
    });
    let node1 = NodeProc::spawn(&server, "node1", &["--ack-wait", "2s"]);
    let up = SystemTime::now();
    eventually(
        Duration::from_secs(15),
        "two runs after the node came up",
        || {
            let ran = coded_results(&url, "sched.tick.")
                .into_iter()
                .filter(|(_, code, started)| code.is_none() && *started > up)
                .count();
            (ran >= 2).then_some(())
        },
    );
    let removed = fleet(&server, &["schedule", "remove", "tick"], b"");
    assert!(removed.status.success(), "{}", text(&removed.stderr));
    let fired = firing_times(&url);
    let results = eventually(Duration::from_secs(10), "a result for every firing", || {
        let r = coded_results(&url, "sched.tick.");
        (r.len() >= fired.len()).then_some(r)
    });
    assert_eq!(results.len(), fired.len(), "one result per firing");
    let (mut expired, mut ran) = (0, 0);
    for (id, code, started) in &results {
        let seq: u64 = id.rsplit('.').next().unwrap().parse().unwrap();
        let waited = millis_after(*started, fired[&seq]);
        match code.as_deref() {
            Some("408") => {
                expired += 1;
                assert!(waited > 1900, "{id} expired after {waited} ms in the queue");
            }
            None => {
                ran += 1;
                assert!(waited < 2500, "{id} ran after {waited} ms in the queue");
            }
            other => panic!("{id}: unexpected code {other:?}"),
        }
    }
    assert!(expired >= 2 && ran >= 2, "{expired} expired, {ran} ran");

    // Started within its window, its node killed after it: the task is
    // still queued, redelivered after ack_wait and answered, once.
    let published = nats(
        &server,
        &[
            "req",
            "tasks.sleep",
            "3s",
            "-H",
            "Task-Id:slow",
            "-H",
            "Task-Catch-Up:1s",
        ],
    );
    assert!(published.status.success(), "{}", text(&published.stderr));
    eventually(Duration::from_secs(5), "node1 runs the slow task", || {
        (ack_pending(&url) == 1).then_some(())
    });
    std::thread::sleep(Duration::from_millis(1500));
    node1.signal("KILL");
    let _node2 = NodeProc::spawn(&server, "node2", &["--ack-wait", "2s"]);
    let slow = eventually(Duration::from_secs(15), "the slow task's result", || {
        let r = coded_results(&url, "slow");
        (!r.is_empty()).then_some(r)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(coded_results(&url, "slow").len(), 1, "exactly one result");
    assert_eq!(
        slow[0].1.as_deref(),
        Some("408"),
        "past its window when redelivered"
    );
}

/// A tenant's connection that does not name its tenant, or whose tenant
/// has no schedule stream (`fleet setup` without `--tenant`), is refused
/// with an error saying what to do (exit 2); nothing is stored.
#[test]
fn a_tenant_is_told_what_it_needs_to_schedule() {
    let fleet = Secure::start();
    fleet.setup(&[]);
    let delayed = fleet.fleet(Role::Alice, &["submit", "echo", "--delay", "1s", "x"], b"");
    assert_eq!(delayed.status.code(), Some(2), "{}", text(&delayed.stderr));
    assert!(
        text(&delayed.stderr).contains("--tenant"),
        "{}",
        text(&delayed.stderr)
    );
    let args = ["submit", "echo", "--delay", "1s", "--tenant", "alice", "x"];
    let unset = fleet.fleet(Role::Alice, &args, b"");
    assert_eq!(unset.status.code(), Some(2), "{}", text(&unset.stderr));
    assert!(
        text(&unset.stderr).contains("fleet setup --tenant alice"),
        "{}",
        text(&unset.stderr)
    );
    let add = fleet.fleet(
        Role::Alice,
        &["schedule", "add", "t", "--every", "5s", "echo"],
        b"",
    );
    assert_eq!(add.status.code(), Some(2), "{}", text(&add.stderr));
    let admin = fleet.fleet(Role::Admin, &["schedule", "list"], b"");
    assert!(admin.status.success(), "{}", text(&admin.stderr));
    assert!(admin.stdout.is_empty(), "{}", text(&admin.stdout));
}
