//! Edge sites through leaf nodes (issue 13), from the shipped
//! `deploy/edge/central.conf` and `site.conf`, on hosts of their own
//! (network namespaces, fleet-testkit's `netns` and `edge`): the central
//! cluster of three servers (`central1`..`central3`, R3 streams) with two
//! central nodes on two more hosts backing the site up as overflow members
//! of its group, and a site host with the site's server (its own JetStream
//! domain, a leaf node of the centre), its one node and its submitter. The
//! site host's port on the switch is cut mid-batch: the leaf connection
//! dies without a word, as when a cable fails, both ends notice by their
//! pings, and it is made again once the port is back.
//!
//! The namespaces need root, `ip` and `curl`: without them the test fails,
//! saying so.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use fleet_testkit::checker::{check_from, Report};
use fleet_testkit::edge::{password, Edge, SITE};
use fleet_testkit::netns::{node_with_env, submit_on, Host};
use fleet_testkit::streams::stream_state_from;
use fleet_testkit::*;

/// Tasks wait undelivered in the site's group before the centre helps.
const OVERFLOW: &str = "4";

/// `fleet setup` at the site, as its admin.
const SETUP: [&str; 7] = [
    "setup",
    "--group",
    SITE,
    "--priority-group",
    "edge",
    "--ack-wait",
    "3s",
];
/// `fleet node` at the site (credentials and inbox prefix from the
/// environment and a flag the README leaves to the security section).
const NODE: [&str; 6] = [
    "node",
    "--group",
    SITE,
    "--dev-builtins",
    "--concurrency",
    "2",
];
/// What a central node adds to [`NODE`].
const OVERFLOW_NODE: [&str; 4] = ["--domain", SITE, "--overflow", OVERFLOW];
/// The batch submitted while the link is cut.
const SUBMIT_C: [&str; 7] = [
    "submit",
    "sleep",
    "--json",
    "--batch",
    "c",
    "--timeout",
    "60s",
];

/// The README's "Edge sites" shows these very commands.
#[test]
fn the_readme_shows_the_commands_this_test_runs() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = readme
        .split("## Edge sites")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a README section \"Edge sites\"");
    let central: Vec<&str> = NODE.iter().chain(&OVERFLOW_NODE).copied().collect();
    for args in [&SETUP[..], &NODE[..], &central[..], &SUBMIT_C[..]] {
        let line = format!("fleet {}", args.join(" "));
        assert!(section.contains(&line), "README, Edge sites: no `{line}`");
    }
}

/// A `fleet node` on `host` as the node user of `urls`' servers, its
/// metrics on its host's address; ready when this returns.
fn node(host: &Host, urls: &str, dir: &Path, name: &str, extra: &[&str]) -> NodeProc {
    let metrics = format!("{}:9100", host.addr);
    let mut args = vec!["--inbox-prefix", "_INBOX_node", "--metrics-addr", &metrics];
    args.extend_from_slice(&NODE[1..]);
    args.extend_from_slice(extra);
    let pass = password("node");
    let env = [("NATS_USER", "node"), ("NATS_PASSWORD", pass.as_str())];
    let mut node = node_with_env(host, urls, dir, name, &args, &env);
    node.wait_ready(Duration::from_secs(30));
    node
}

fn ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// `fleet submit KIND --batch BATCH` at the site, one task per line of
/// `payloads`; the JSON lines.
fn submit(edge: &Edge, kind: &str, batch: &str, payloads: &str) -> Vec<serde_json::Value> {
    let args = [
        "submit",
        kind,
        "--json",
        "--batch",
        batch,
        "--timeout",
        "60s",
    ];
    let out = ok(
        edge.fleet_at_site("admin", &args, payloads.as_bytes()),
        "fleet submit",
    );
    json_lines(&out.stdout)
}

/// Which node ran each task, by node name.
fn ran_on(lines: &[serde_json::Value], node: &str) -> usize {
    lines
        .iter()
        .filter(|l| l["node"].as_str() == Some(node))
        .count()
}

/// A client as the admin of the servers at `urls` (the site or the centre).
async fn admin(urls: &str) -> async_nats::Client {
    let urls: Vec<async_nats::ServerAddr> = urls.split(',').map(|u| u.parse().unwrap()).collect();
    async_nats::ConnectOptions::with_user_and_password("admin".into(), password("admin"))
        .connect(urls)
        .await
        .expect("connecting as admin")
}

/// The checker's table for `batch` from the site's RESULTS.
fn check(edge: &Edge, batch: &str, tasks: u64, lines: &[serde_json::Value]) -> Report {
    let report = rt().block_on(async {
        check_from(admin(&edge.site.url()).await, None, batch, tasks, lines).await
    });
    println!("checker, batch {batch}:\n{report}");
    assert_eq!(
        (report.lost, report.duplicated, report.unknown),
        (0, 0, 0),
        "{report}"
    );
    assert_eq!(report.ok as u64, tasks, "{report}");
    report
}

/// 12 slow tasks at the site (its node has 2 slots): some run at the
/// site, the backlog at the centre; all kept once, at the site.
fn saturate(edge: &Edge, batch: &str) {
    let lines = submit(edge, "sleep", batch, &"600ms\n".repeat(12));
    let at_site = ran_on(&lines, "site-node");
    let at_centre = ran_on(&lines, "central-1") + ran_on(&lines, "central-2");
    println!("batch {batch}, saturated: {at_site} at the site, {at_centre} at the centre");
    assert!(at_site >= 2 && at_centre >= 2, "{lines:?}");
    check(edge, batch, 12, &lines);
}

/// Tasks the central nodes (metrics on `addrs`) are running, as their
/// `fleet_node_in_flight` says.
fn central_in_flight(addrs: &[SocketAddr]) -> f64 {
    addrs
        .iter()
        .map(|&addr| {
            let page =
                fleet_testkit::http::get(addr, "/metrics").expect("a central node's metrics");
            let samples = fleet_testkit::http::parse_metrics(&page.body);
            fleet_testkit::http::metric_sum(&samples, "fleet_node_in_flight", &[])
        })
        .sum()
}

/// The site runs its tasks first; a backlog flows to the centre; with the
/// leaf link cut mid-batch the site keeps accepting and running its own
/// tasks, and after it returns every task has exactly one committed result
/// in the site's RESULTS, none in the centre's.
#[test]
fn an_edge_site_runs_first_overflows_to_the_centre_and_rides_out_a_cut_link() {
    let started = Instant::now();
    let edge = Edge::start();
    println!("hosts and servers up in {:?}", started.elapsed());
    ok(
        edge.fleet_at_site("admin", &SETUP, b""),
        "fleet setup at the site",
    );
    println!("site set up at {:?}", started.elapsed());
    ok(
        edge.fleet_at_centre("admin", &["setup", "--replicas", "3"]),
        "fleet setup at the centre",
    );
    println!("centre set up at {:?}", started.elapsed());
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let mut _logs = LogsOnFailure {
        files: edge.central.logs(),
    };
    _logs.files.push(("site server".into(), edge.site.log()));
    for name in ["site-node", "central-1", "central-2"] {
        _logs
            .files
            .push((name.into(), dir.join(format!("{name}.log"))));
    }
    _logs.files.push(("submit c".into(), dir.join("c.err")));
    let site_host = edge.net.host("site");
    let _site_node = node(site_host, &edge.site.url(), dir, "site-node", &[]);
    println!("site node up at {:?}", started.elapsed());

    let urls = edge.central_urls();
    let _c1 = node(edge.net.host("n1"), &urls, dir, "central-1", &OVERFLOW_NODE);
    let _c2 = node(edge.net.host("n2"), &urls, dir, "central-2", &OVERFLOW_NODE);
    let metrics: Vec<SocketAddr> = ["n1", "n2"]
        .iter()
        .map(|h| (edge.net.host(h).addr, 9100).into())
        .collect();
    println!("streams and nodes up at {:?}", started.elapsed());

    // (a) Fewer tasks than the overflow threshold: never a backlog of 4,
    // so the site's own node runs them all.
    let a = submit(&edge, "echo", "a", "1\n2\n3\n");
    assert_eq!(ran_on(&a, "site-node"), 3, "{a:?}");
    check(&edge, "a", 3, &a);

    // (b) The site's node (2 slots) saturated by 12 slow tasks: the backlog
    // flows to the centre.
    saturate(&edge, "b");

    // (c) The link cut while a central node runs a task of a batch, for
    // longer than ack_wait (3s), then restored. The cut comes as soon as a
    // central node starts one (its `fleet_node_in_flight` leaves 0): the
    // site's own count of tasks in flight would also count tasks still on
    // their way to a central node, which the cut may catch before any
    // central node starts one.
    eventually(Duration::from_secs(10), "central nodes idle", || {
        (central_in_flight(&metrics) == 0.0).then_some(())
    });
    let input = dir.join("c.in");
    std::fs::write(&input, "1s\n".repeat(12)).unwrap();
    let out = dir.join("c.jsonl");
    let site_admin = edge.site_url_as("admin");
    let mut c = KillOnDrop(submit_on(
        site_host,
        &site_admin,
        &SUBMIT_C[1..],
        &input,
        &out,
    ));
    eventually(
        Duration::from_secs(10),
        "a central node running a task of c",
        || (central_in_flight(&metrics) > 0.0).then_some(()),
    );
    edge.cut();
    let cut_at = Instant::now();
    // The site keeps accepting and running its own tasks meanwhile.
    let d = submit(&edge, "echo", "d", "x\ny\n");
    assert_eq!(ran_on(&d, "site-node"), 2, "{d:?}");
    assert!(edge.is_cut(), "the batch ran with the link down");
    // Both ends close the dead connection (pings unanswered), so nothing
    // sent into it arrives after the heal; the cut outlasts ack_wait.
    edge.wait_dropped();
    let dropped_after = cut_at.elapsed();
    std::thread::sleep(Duration::from_secs(4).saturating_sub(cut_at.elapsed()));
    let cut_for = cut_at.elapsed();
    edge.restore();
    println!(
        "link cut for {cut_for:?} (dropped by both ends after {dropped_after:?}), leaf back after {:?}",
        cut_at.elapsed()
    );
    let status = c.0.wait().unwrap();
    let c_lines = json_lines(&std::fs::read(&out).unwrap());
    assert!(
        status.success(),
        "fleet submit c: {}",
        std::fs::read_to_string(out.with_extension("err")).unwrap_or_default()
    );
    check(&edge, "c", 12, &c_lines);
    check(&edge, "d", 2, &d);
    // A central node ran a task of c when the link dropped: it could not
    // keep its result (its publish meets no site, or times out), and the
    // site ran that task again: the kept result is a later attempt's.
    eventually(
        Duration::from_secs(15),
        "a central node's result not kept",
        || {
            (_c1.log_text() + &_c2.log_text())
                .contains("could not keep the result")
                .then_some(())
        },
    );
    assert!(
        c_lines.iter().any(|l| l["attempt"].as_u64() > Some(1)),
        "no task of c ran twice: {c_lines:?}"
    );
    println!(
        "batch c: {} at the site, {} at the centre",
        ran_on(&c_lines, "site-node"),
        ran_on(&c_lines, "central-1") + ran_on(&c_lines, "central-2")
    );

    // (e) After the link is back, the centre takes the overflow again.
    saturate(&edge, "e");

    // Nothing of the site's landed in the centre's streams.
    rt().block_on(async {
        let central = admin(&edge.central_urls()).await;
        for stream in ["TASKS", "RESULTS", "DEAD"] {
            let state = stream_state_from(central.clone(), stream).await;
            assert_eq!(state.messages, 0, "central {stream}: {state:?}");
        }
    });
    println!("edge test took {:?}", started.elapsed());
}
