//! Scenario 5: the mixed run. Nodes on three hosts, the three-server R3
//! cluster (`sync_interval: always`), and faults at random while one batch
//! runs: node SIGKILL and SIGSTOP past `ack_wait`, a server SIGKILLed and
//! started again, node and server hosts cut off and healed. `bin/soak`
//! runs it with 100,000 tasks (`FLEET_SOAK_TASKS`); the test suite runs
//! 6,000. The seed is printed (`FLEET_FAULT_SEED` replays a run's faults).

use super::*;

/// Every kind of fault, one of each in random order; the full run goes
/// round them again until its batch ends.
const FAULTS: [&str; 5] = [
    "SIGKILL node",
    "SIGSTOP node past ack_wait",
    "cut node host",
    "SIGKILL server, start it again",
    "cut server host",
];

#[test]
fn mixed_faults_on_hosts() {
    let tasks: u64 = std::env::var("FLEET_SOAK_TASKS")
        .ok()
        .map(|v| v.parse().expect("FLEET_SOAK_TASKS is a number"))
        .unwrap_or(6000);
    let started = Instant::now();
    // Tasks of 100 ms on 3 × 16 slots: at most 480 tasks/s, so the faults
    // land while the batch runs.
    let lines = "100ms\n".repeat(tasks as usize);
    let node_args = ["--concurrency", "16", "--grace", "2s"];
    let mut site = Site::new("soak", &lines, "2s", &node_args);
    let mut submit = KillOnDrop(site.submit("sleep", &["--window", "512"]));
    let mut rng = fleet_testkit::rng::XorShift::from_env();
    site.wait_results(&mut submit.0, 100);
    let mut injected: Vec<String> = Vec::new();
    'run: loop {
        let mut plan = FAULTS.to_vec();
        rng.shuffle(&mut plan);
        for fault in plan {
            std::thread::sleep(Duration::from_millis(100 + rng.below(400)));
            if submit.0.try_wait().unwrap().is_some() {
                break 'run;
            }
            let what = inject(&mut site, fault, &mut rng, &node_args);
            eprintln!("{:?}: {what}", started.elapsed());
            injected.push(what);
        }
    }
    site.wait_ok(&mut submit.0, Duration::from_secs(600));
    let took = started.elapsed();
    let report = site.check(0);
    let version = std::process::Command::new(tool("nats-server"))
        .arg("--version")
        .output()
        .map(|o| text(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!(
        "{tasks} tasks, {version}, run took {took:?}; {} faults injected:\n  {}",
        injected.len(),
        injected.join("\n  ")
    );
    assert!(
        injected.len() >= FAULTS.len(),
        "the batch ended before every kind of fault was injected: make it longer"
    );
    assert_nothing_lost(&report, site.tasks);
}

/// Injects `fault` into a host picked at random; says what it did.
fn inject(
    site: &mut Site,
    fault: &str,
    rng: &mut fleet_testkit::rng::XorShift,
    node_args: &[&str],
) -> String {
    let n = rng.below(site.nodes.len() as u64) as usize;
    let s = rng.below(3) as usize;
    match fault {
        "SIGKILL node" => {
            let mut node = site.nodes.remove(n);
            let name = node.name.clone();
            node.signal("KILL");
            let _ = node.wait_exit(Duration::from_secs(5));
            drop(node);
            site.start_node(&name, node_args);
            format!("{fault}: {name}, started again")
        }
        "SIGSTOP node past ack_wait" => {
            let node = &site.nodes[n];
            node.signal("STOP");
            std::thread::sleep(Duration::from_millis(2500));
            node.signal("CONT");
            format!("{fault}: {} stopped 2.5 s", node.name)
        }
        "cut node host" => {
            let host = site.nodes[n].name.clone();
            site.net.cut(&host);
            std::thread::sleep(Duration::from_millis(3000));
            site.net.heal(&host);
            format!("{fault}: {host} cut off 3 s")
        }
        "SIGKILL server, start it again" => {
            let server = &mut site.cluster.servers[s];
            server.kill();
            std::thread::sleep(Duration::from_millis(1000));
            server.start();
            let name = server.name.clone();
            // One server down at a time: the next fault waits for quorum.
            site.cluster.wait_formed(Duration::from_secs(60));
            format!("{fault}: {name} down 1 s")
        }
        _ => {
            let host = site.cluster.servers[s].host.name.clone();
            site.net.cut(&host);
            std::thread::sleep(Duration::from_millis(3000));
            site.net.heal(&host);
            site.cluster.wait_formed(Duration::from_secs(60));
            format!(
                "{fault}: {host} ({}) cut off 3 s",
                site.cluster.servers[s].name
            )
        }
    }
}
