//! A slow and unreliable network between every client and the server
//! (issue 13, scenario 4): each client's link goes through a Toxiproxy
//! proxy of its own with 200 ms of latency each way for the whole run,
//! while links are stalled (no byte flows for a while, then the held bytes
//! go on) and reset (every connection on the link reset, and reconnects
//! refused with a reset for a moment) at random. Throughput drops;
//! correctness does not: the checker finds every task with exactly one
//! committed ok result.

use std::time::{Duration, Instant};

use fleet_testkit::checker::{check, not_ok};
use fleet_testkit::process::spawn_submit_at;
use fleet_testkit::rng::XorShift;
use fleet_testkit::toxiproxy::Toxiproxy;
use fleet_testkit::*;

const TASKS: u64 = 800;

#[test]
fn latency_stalls_and_resets_lose_and_duplicate_nothing() {
    let server = NatsServer::start();
    let dir = server.dir.path();
    let upstream = ([127, 0, 0, 1], server.port).into();
    let toxiproxy = Toxiproxy::start(dir);
    let links: Vec<_> = ["node1", "node2", "submit"]
        .iter()
        .map(|name| toxiproxy.proxy(name, upstream))
        .collect();
    for link in &links {
        toxiproxy.latency(link, 200);
    }

    // Made directly (admin's one-off); a short ack_wait, so a node whose
    // link is stalled past it has its tasks handed to the other, and its
    // late results meet the fence.
    let setup = fleet(&server, &["setup", "--ack-wait", "3s"], b"");
    assert!(setup.status.success(), "{}", text(&setup.stderr));
    let mut nodes: Vec<NodeProc> = links[..2]
        .iter()
        .map(|link| NodeProc::start(&link.url(), dir, &link.name, &[], &[]))
        .collect();
    for node in &mut nodes {
        node.wait_ready(Duration::from_secs(30));
    }

    let input = dir.join("input");
    let lines: String = (1..=TASKS).map(|n| format!("task {n}\n")).collect();
    std::fs::write(&input, lines).unwrap();
    let out = dir.join("out.jsonl");
    let args = ["echo", "--json", "--batch", "slow", "--timeout", "120s"];
    let began = Instant::now();
    let mut submit = spawn_submit_at(&links[2].url(), &args, &input, &out);

    // Faults on a random link while the batch runs.
    let mut rng = XorShift::from_env();
    let (mut stalls, mut resets) = (0, 0);
    // From half a second in, every 0.3-1 s: a batch that goes fast still
    // meets several faults.
    std::thread::sleep(Duration::from_millis(500));
    while submit.try_wait().unwrap().is_none() && began.elapsed() < Duration::from_secs(150) {
        let link = &links[rng.below(links.len() as u64) as usize];
        if rng.below(2) == 0 {
            let hold = Duration::from_millis(1_000 + rng.below(3_000));
            println!("stall {} for {hold:?}", link.name);
            toxiproxy.stall(link, hold);
            stalls += 1;
        } else {
            let hold = Duration::from_millis(100 + rng.below(900));
            println!("reset {} for {hold:?}", link.name);
            toxiproxy.reset(link, hold);
            resets += 1;
        }
        std::thread::sleep(Duration::from_millis(300 + rng.below(700)));
    }
    let status = submit.wait().unwrap();
    let took = began.elapsed();
    let err = std::fs::read_to_string(out.with_extension("err")).unwrap_or_default();
    // What went wrong, task by task: the submitter's lines that are not ok.
    let not_ok = not_ok(&json_lines(&std::fs::read(&out).unwrap_or_default()), 10);
    let err_tail: String = err
        .lines()
        .filter(|l| !l.contains("reconnecting") && !l.contains("IO error"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        status.success(),
        "fleet submit failed: {err_tail}\nnot ok (first 10):\n{not_ok}"
    );
    assert!(
        stalls + resets >= 3,
        "the batch ended after {stalls} stalls and {resets} resets: too early to prove anything"
    );

    let submitted = json_lines(&std::fs::read(&out).unwrap());
    let report = rt().block_on(check(&server.url(), "slow", TASKS, &submitted));
    println!(
        "checker, {TASKS} tasks in {took:?} ({:.0} tasks/s) through 200 ms links, {stalls} stalls, {resets} resets:\n{report}",
        TASKS as f64 / took.as_secs_f64()
    );
    assert_eq!(report.lost, 0, "lost:\n{report}");
    assert_eq!(report.duplicated, 0, "duplicated:\n{report}");
    assert_eq!(report.unknown, 0, "never acknowledged:\n{report}");
    assert_eq!(report.ok as u64, TASKS, "not every task ok:\n{report}");
}
