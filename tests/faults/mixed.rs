//! Many faults in one run: twenty thousand tasks; then delayed tasks
//! and cancels among them.

use super::*;

/// Scenario 7: Mixed: kills, pauses, graceful stops and a server restart at random
/// moments during one run of 20,000 tasks. Prints the checker's table.
#[test]
fn mixed_faults_twenty_thousand_tasks() {
    let args = ["--concurrency", "32", "--ack-wait", "2s", "--grace", "5s"];
    let mut s = Scenario::new(4, &args, "mixed", &"50ms\n".repeat(20_000));
    let started = Instant::now();
    let mut submit = s.submit("sleep", &["--window", "256"]);
    s.wait_printed(1);
    let mut rng = fleet_testkit::rng::XorShift::from_env();
    let mut plan = vec![
        "SIGKILL node",
        "SIGSTOP node past ack_wait",
        "SIGTERM node",
        "restart nats-server",
        "SIGKILL node",
        "SIGSTOP node past ack_wait",
    ];
    rng.shuffle(&mut plan);
    let mut injected = Vec::new();
    for fault in plan {
        std::thread::sleep(Duration::from_millis(300 + rng.below(700)));
        if submit.try_wait().unwrap().is_some() {
            break;
        }
        let victim = rng.below(s.nodes.len() as u64) as usize;
        if !node_fault(&mut s, victim, fault) {
            restart_server(&mut s);
        }
        injected.push(fault);
    }
    wait_ok(&mut submit, &s);
    std::thread::sleep(Duration::from_millis(1000));
    let report = s.check();
    println!(
        "faults injected: {injected:?}; run took {:?}",
        started.elapsed()
    );
    assert!(
        injected.len() >= 4,
        "the batch ended before the faults were injected: {injected:?}"
    );
    assert_nothing_lost(&report, s.tasks);
}

/// Injects `fault` into node `victim` if it is a node fault (a node killed
/// or stopped is replaced by a new one); false for any other fault.
fn node_fault(s: &mut Scenario, victim: usize, fault: &str) -> bool {
    match fault {
        "SIGKILL node" => {
            s.nodes[victim].signal("KILL");
            let _ = s.nodes[victim].wait_exit(Duration::from_secs(5));
            s.nodes.remove(victim);
            s.add_node();
        }
        "SIGSTOP node past ack_wait" => {
            s.nodes[victim].signal("STOP");
            std::thread::sleep(Duration::from_millis(2500));
            s.nodes[victim].signal("CONT");
        }
        "SIGTERM node" => {
            s.nodes[victim].signal("TERM");
            let status = s.nodes[victim].wait_exit(Duration::from_secs(10));
            assert!(
                status.is_some_and(|st| st.success()),
                "graceful stop failed"
            );
            s.nodes.remove(victim);
            s.add_node();
        }
        _ => return false,
    }
    true
}

/// Stops the server and starts it again on the same store.
fn restart_server(s: &mut Scenario) {
    s.secure.server.stop();
    std::thread::sleep(Duration::from_millis(500));
    s.secure.server.restart();
}

/// Publishes, as admin, delayed tasks of kind `sleep` (id, payload, due
/// time) as raw schedules held by `SCHEDULES` until they are due.
fn publish_delayed(s: &Scenario, tasks: &[(String, &str, SystemTime)]) {
    rt().block_on(async {
        let js = async_nats::jetstream::new(s.secure.client(Role::Admin).await);
        for (id, payload, at) in tasks {
            let mut headers = async_nats::HeaderMap::new();
            let at = humantime::format_rfc3339_seconds(*at).to_string();
            headers.insert("Nats-Schedule", format!("@at {at}").as_str());
            headers.insert("Nats-Schedule-Target", "due.sleep");
            headers.insert("Nats-TTL", "never");
            headers.insert("Task-Id", id.as_str());
            let subject = fleet::contract::delayed_subject(id);
            js.publish_with_headers(subject, headers, payload.to_string().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    });
}

/// `fleet cancel --json` as admin (for `tenant`'s tasks); what it said of
/// each, by the subject the task's result is kept on.
fn cancel_as_admin(
    s: &Scenario,
    tenant: Option<&str>,
    ids: &[String],
    said: &mut HashMap<String, Cancel>,
) {
    let mut args = vec!["cancel", "--json"];
    if let Some(t) = tenant {
        args.extend(["--for-tenant", t]);
    }
    args.extend(ids.iter().map(String::as_str));
    let out = s.secure.fleet(Role::Admin, &args, b"");
    assert!(out.status.success(), "fleet cancel: {}", text(&out.stderr));
    for line in json_lines(&out.stdout) {
        let (id, cancel) = Cancel::from_line(&line).expect("a line per task");
        let subject = fleet::contract::in_tenant(tenant, &fleet::contract::default_reply(&id));
        said.insert(subject, cancel);
    }
}

/// Scenario 8: Mixed, with time and control: delayed tasks (raw schedules,
/// fired by the server) come due among node kills, a pause past
/// `ack_wait`, a graceful stop and a server restart, and cancellations land
/// at random moments: of long tasks queued or running, of delayed tasks
/// before or after they fire, of tasks already finished. Every task ends
/// with exactly one kept result; a cancelled one with `499` unless `fleet
/// cancel` found it finished; none lost, none duplicated.
#[test]
fn mixed_faults_with_delays_and_cancels() {
    // A short grace: a stopping node's minute-long tasks are handed back
    // after it, not finished.
    let args = ["--concurrency", "32", "--ack-wait", "2s", "--grace", "2s"];
    // Every 400th task sleeps a minute: it can only end by being cancelled,
    // so the batch cannot end before the last cancel.
    let tasks = 6000u64;
    let long = |n: u64| n.is_multiple_of(400);
    let lines: String = (1..=tasks)
        .map(|n| if long(n) { "60s\n" } else { "50ms\n" })
        .collect();
    let mut s = Scenario::new(4, &args, "mixc", &lines);
    let started = Instant::now();
    let mut rng = fleet_testkit::rng::XorShift::from_env();
    // 40 delayed tasks of the fleet account, due 2 to 7 s from now; every
    // fourth sleeps a minute and will be cancelled.
    let now = SystemTime::now();
    let delayed: Vec<String> = (1..=40).map(|n| format!("dly.{n}")).collect();
    let doomed: Vec<String> = delayed.iter().step_by(4).cloned().collect();
    let schedules: Vec<_> = delayed
        .iter()
        .map(|id| {
            let payload = if doomed.contains(id) { "60s" } else { "50ms" };
            (
                id.clone(),
                payload,
                now + Duration::from_secs(2 + rng.below(6)),
            )
        })
        .collect();
    publish_delayed(&s, &schedules);
    let mut submit = s.submit("sleep", &["--window", "256"]);
    let long_ids: Vec<String> = (1..=tasks)
        .filter(|n| long(*n))
        .map(|n| fleet::contract::batch_task_id("mixc", n))
        .collect();
    let (first, rest) = long_ids.split_at(long_ids.len() / 2);
    let mut said: HashMap<String, Cancel> = HashMap::new();
    let mut plan = vec![
        "SIGKILL node",
        "SIGSTOP node past ack_wait",
        "SIGTERM node",
        "restart nats-server",
        "cancel long tasks",
        "cancel delayed tasks",
        "cancel finished tasks",
    ];
    rng.shuffle(&mut plan);
    for fault in &plan {
        std::thread::sleep(Duration::from_millis(300 + rng.below(700)));
        assert_running(&mut submit);
        let victim = rng.below(s.nodes.len() as u64) as usize;
        if node_fault(&mut s, victim, fault) {
            continue;
        }
        match *fault {
            "restart nats-server" => restart_server(&mut s),
            "cancel long tasks" => cancel_as_admin(&s, Some("alice"), first, &mut said),
            "cancel delayed tasks" => cancel_as_admin(&s, None, &doomed, &mut said),
            _ => {
                // Up to 20 short tasks whose results are kept by now.
                let done: Vec<String> = s
                    .read("RESULTS")
                    .iter()
                    .filter_map(|m| m.subject.strip_prefix("tenant.alice.results."))
                    .filter(|id| id.starts_with("mixc.") && !long_ids.iter().any(|l| l == id))
                    .take(20)
                    .map(str::to_string)
                    .collect();
                if !done.is_empty() {
                    cancel_as_admin(&s, Some("alice"), &done, &mut said);
                }
            }
        }
    }
    cancel_as_admin(&s, Some("alice"), rest, &mut said);
    let status = submit.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "the cancelled tasks fail: {}",
        s.submit_err()
    );
    // The last delayed task is due 7 s after the start: wait for its result.
    let expected: Vec<Expected> = (1..=tasks)
        .map(|n| {
            let id = fleet::contract::batch_task_id("mixc", n);
            (Some("alice"), id)
        })
        .chain(delayed.iter().map(|id| (None, id.clone())))
        .map(|(tenant, id)| {
            let subject = fleet::contract::in_tenant(tenant, &fleet::contract::default_reply(&id));
            let cancel = said.get(&subject).copied();
            Expected {
                id,
                subject,
                cancel,
            }
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let kept: std::collections::HashSet<String> = s
            .read("RESULTS")
            .iter()
            .map(|m| m.subject.to_string())
            .collect();
        if delayed
            .iter()
            .all(|id| kept.contains(&fleet::contract::default_reply(id)))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let lines = json_lines(&std::fs::read(&s.out).unwrap());
    let report = rt().block_on(async {
        let admin = s.secure.client(Role::Admin).await;
        check_cancels(admin, &expected, &never_acked(&lines)).await
    });
    let cancelled = said.values().filter(|c| **c == Cancel::Cancelled).count();
    println!(
        "checker, batch mixc and {} delayed tasks:\n{report}\nnot ok (first 10):\n{}\nfaults and cancels: {plan:?}; {cancelled} cancelled, {} found finished; run took {:?}",
        delayed.len(),
        not_ok(
            &lines
                .iter()
                .filter(|l| l["code"] != 499)
                .cloned()
                .collect::<Vec<_>>(),
            10
        ),
        said.len() - cancelled,
        started.elapsed()
    );
    assert_eq!(report.lost, 0, "lost tasks:\n{report}");
    assert_eq!(report.duplicated, 0, "duplicated tasks:\n{report}");
    assert_eq!(report.wrong, 0, "tasks that ended wrongly:\n{report}");
    assert_eq!(report.unknown, 0, "tasks never acknowledged:\n{report}");
    assert_eq!(report.failed, 0, "failed tasks:\n{report}");
    assert_eq!(report.cancelled, cancelled, "{report}");
    assert_eq!(
        cancelled,
        long_ids.len() + doomed.len(),
        "every long task was cancelled"
    );
    assert_eq!(
        report.ok + report.cancelled,
        tasks as usize + delayed.len(),
        "{report}"
    );
    assert_eq!(
        s.state("DEAD").messages,
        0,
        "a cancelled task was dead-lettered"
    );
}
