//! Edge sites through leaf nodes (issue 13), from the shipped
//! `deploy/edge/central.conf` and `site.conf`: one central server (not the
//! R3 cluster: its start and `sync_interval: always` would take most of the
//! budget; the leaf-node block is the same on each of its servers) with two
//! central nodes backing the site up as overflow members of its group, and
//! a site server (its own JetStream domain, a leaf node of the centre) with
//! one node. The leaf connection runs through a TCP link the test cuts.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use fleet_testkit::checker::{check_from, Report};
use fleet_testkit::edge::{password, Edge, SITE};
use fleet_testkit::process::{fleet_at, spawn_submit_at};
use fleet_testkit::streams::stream_state_from;
use fleet_testkit::*;

/// Tasks wait undelivered in the site's group before the centre helps.
const OVERFLOW: &str = "4";

fn node(url: &str, dir: &Path, name: &str, extra: &[&str]) -> NodeProc {
    let mut args = vec![
        "--inbox-prefix",
        "_INBOX_node",
        "--group",
        SITE,
        "--dev-builtins",
        "--concurrency",
        "2",
    ];
    args.extend_from_slice(extra);
    let pass = password("node");
    let mut node = NodeProc::start(
        url,
        dir,
        name,
        &args,
        &[("NATS_USER", "node"), ("NATS_PASSWORD", &pass)],
    );
    node.wait_ready(Duration::from_secs(20));
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
    let url = edge.site_url_as("admin");
    let args = [
        "submit", kind, "--json", "--batch", batch, "--timeout", "60s",
    ];
    let out = ok(fleet_at(&url, &args, payloads.as_bytes()), "fleet submit");
    json_lines(&out.stdout)
}

/// Which node ran each task, by node name.
fn ran_on(lines: &[serde_json::Value], node: &str) -> usize {
    lines
        .iter()
        .filter(|l| l["node"].as_str() == Some(node))
        .count()
}

/// A client as the admin of `server` (the site or the centre).
async fn admin(server: &NatsServer) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password("admin".into(), password("admin"))
        .connect(server.url())
        .await
        .expect("connecting as admin")
}

/// The checker's table for `batch` from the site's RESULTS.
fn check(edge: &Edge, batch: &str, tasks: u64, lines: &[serde_json::Value]) -> Report {
    let report = rt().block_on(async {
        check_from(admin(&edge.site).await, None, batch, tasks, lines).await
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

/// Tasks of the site's group delivered and not yet acked.
fn site_in_flight(edge: &Edge) -> u64 {
    rt().block_on(async {
        let js = jetstream::new(admin(&edge.site).await);
        let mut consumer: jetstream::consumer::PullConsumer = js
            .get_consumer_from_stream(SITE, "TASKS")
            .await
            .expect("the site's group");
        consumer.info().await.map(|i| i.num_ack_pending as u64).unwrap_or(0)
    })
}

/// The site runs its tasks first; a backlog flows to the centre; with the
/// leaf link cut mid-batch the site keeps accepting and running its own
/// tasks, and after it returns every task has exactly one committed result
/// in the site's RESULTS, none in the centre's.
#[test]
fn an_edge_site_runs_first_overflows_to_the_centre_and_rides_out_a_cut_link() {
    let started = Instant::now();
    let edge = Edge::start();
    let site_admin = edge.site_url_as("admin");
    ok(
        fleet_at(
            &site_admin,
            &["setup", "--group", SITE, "--priority-group", "edge", "--ack-wait", "3s"],
            b"",
        ),
        "fleet setup at the site",
    );
    ok(
        fleet_at(&edge.central_url_as("admin"), &["setup"], b""),
        "fleet setup at the centre",
    );
    let site_dir = edge.site.dir.path();
    let central_dir = edge.central.dir.path();
    let _site_node = node(&edge.site.url(), site_dir, "site-node", &[]);
    let central = ["--domain", SITE, "--overflow", OVERFLOW];
    let _c1 = node(&edge.central.url(), central_dir, "central-1", &central);
    let _c2 = node(&edge.central.url(), central_dir, "central-2", &central);
    let _logs = LogsOnFailure {
        files: vec![
            ("site node".into(), site_dir.join("site-node.log")),
            ("central node 1".into(), central_dir.join("central-1.log")),
            ("central node 2".into(), central_dir.join("central-2.log")),
            ("site server".into(), edge.site.log()),
            ("central server".into(), edge.central.log()),
        ],
    };

    // (a) Fewer tasks than the overflow threshold: never a backlog of 4,
    // so the site's own node runs them all.
    let a = submit(&edge, "echo", "a", "1\n2\n3\n");
    assert_eq!(ran_on(&a, "site-node"), 3, "{a:?}");
    check(&edge, "a", 3, &a);

    // (b) The site's node (2 slots) saturated by 12 slow tasks: the backlog
    // flows to the centre.
    let b = submit(&edge, "sleep", "b", &"600ms\n".repeat(12));
    let at_site = ran_on(&b, "site-node");
    let at_centre = ran_on(&b, "central-1") + ran_on(&b, "central-2");
    println!("saturated: {at_site} at the site, {at_centre} at the centre");
    assert!(at_site >= 2 && at_centre >= 2, "{b:?}");
    check(&edge, "b", 12, &b);

    // (c) The link cut while central nodes hold tasks of a batch, for
    // longer than ack_wait (3s), then restored.
    let input = site_dir.join("c.in");
    std::fs::write(&input, "1s\n".repeat(12)).unwrap();
    let out = site_dir.join("c.jsonl");
    let args = ["sleep", "--json", "--batch", "c", "--timeout", "60s"];
    let mut c = KillOnDrop(spawn_submit_at(&site_admin, &args, &input, &out));
    eventually(Duration::from_secs(10), "central nodes holding tasks", || {
        (site_in_flight(&edge) > 2).then_some(())
    });
    edge.cut();
    let cut_at = Instant::now();
    // The site keeps accepting and running its own tasks meanwhile.
    let d = submit(&edge, "echo", "d", "x\ny\n");
    assert_eq!(ran_on(&d, "site-node"), 2, "{d:?}");
    assert!(!edge.linked(), "the batch ran with the link down");
    std::thread::sleep(Duration::from_secs(4).saturating_sub(cut_at.elapsed()));
    edge.restore();
    let status = c.0.wait().unwrap();
    let c_lines = json_lines(&std::fs::read(&out).unwrap());
    assert!(
        status.success(),
        "fleet submit c: {}",
        std::fs::read_to_string(out.with_extension("err")).unwrap_or_default()
    );
    check(&edge, "c", 12, &c_lines);
    check(&edge, "d", 2, &d);

    // Nothing of the site's landed in the centre's streams.
    rt().block_on(async {
        let central = admin(&edge.central).await;
        for stream in ["TASKS", "RESULTS", "DEAD"] {
            let state = stream_state_from(central.clone(), stream).await;
            assert_eq!(state.messages, 0, "central {stream}: {state:?}");
        }
    });
    println!("edge test took {:?}", started.elapsed());
}
