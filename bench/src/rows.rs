//! The table's rows, from the runs of one benchmark.

use std::collections::BTreeMap;

use crate::config::{Counts, SLEEP_CONCURRENCY, SLEEP_TASK_S};
use crate::report::{row, Row, Target};
use crate::scenarios::Run;

/// Every row `bin/bench` reports, in order; `bench/tests/smoke.rs` checks
/// that each is there with a figure.
pub const ROWS: &[&str] = &[
    "nats_bench_js_pub",
    "nats_bench_js_consume",
    "echo_ephemeral_w256_1node",
    "echo_kept_w256_1node",
    "echo_ephemeral_w256_2node",
    "echo_kept_w256_2node",
    "echo_ephemeral_w256_4node",
    "echo_kept_w256_4node",
    "echo_ephemeral_w1_p50",
    "echo_ephemeral_w1_p99",
    "echo_ephemeral_w1_p999",
    "echo_kept_w1_p50",
    "echo_kept_w1_p99",
    "echo_kept_w1_p999",
    "sha256_64k",
    "sleep10ms_1node",
    "sleep10ms_2node",
    "sleep10ms_4node",
    "node_rss_idle",
    "node_rss_256_inflight",
    "node_rss_kept_w256",
    "submit_rss_big",
    "node_cpu_kept",
    "submit_cpu_kept",
    "server_cpu_kept",
    "node_cpu_ephemeral",
    "submit_cpu_ephemeral",
    "server_cpu_ephemeral",
    "node_cpu_big",
    "submit_cpu_big",
    "server_cpu_big",
    "echo_kept_w256_sync",
    "echo_kept_w256_sync_c256",
];

/// Every round of every scenario, by name.
pub type Runs = BTreeMap<String, Vec<Run>>;

/// The best round of a scenario by throughput (noise only ever slows a run down).
fn best<'a>(runs: &'a Runs, name: &str) -> Option<&'a Run> {
    runs.get(name)?
        .iter()
        .max_by(|a, b| a.tasks_per_s.total_cmp(&b.tasks_per_s))
}

/// The best round of a scenario by the lowest `key`.
fn lowest<'a>(runs: &'a Runs, name: &str, key: impl Fn(&Run) -> f64) -> Option<&'a Run> {
    runs.get(name)?
        .iter()
        .min_by(|a, b| key(a).total_cmp(&key(b)))
}

fn plural(nodes: usize) -> String {
    format!("{nodes} node{}", if nodes > 1 { "s" } else { "" })
}

fn duplicates(run: Option<&Run>) -> String {
    match run {
        Some(r) if r.duplicates > 0.0 => format!("; {} duplicate results", r.duplicates),
        _ => String::new(),
    }
}

fn per_100k(run: Option<&Run>, cpu: impl Fn(&Run) -> Option<f64>) -> Option<f64> {
    let run = run?;
    Some(cpu(run)? / run.tasks * 100_000.0)
}

/// The rows of the table, in [`ROWS`] order.
pub fn rows(runs: &Runs, c: &Counts, cores: usize) -> Vec<Row> {
    let mut r = Vec::new();
    let nb = runs.get("nats_bench").and_then(|v| {
        v.iter().max_by(|a, b| {
            a.js_pub_async
                .unwrap_or(0.0)
                .total_cmp(&b.js_pub_async.unwrap_or(0.0))
        })
    });
    let g = "server (nats CLI)";
    r.push(row(
        "nats_bench_js_pub",
        g,
        "nats bench js pub async",
        nb.and_then(|n| n.js_pub_async),
        "msgs/s",
        None,
        None,
        None,
        format!("{} x 100 B, file storage", c.nats_bench),
    ));
    r.push(row(
        "nats_bench_js_consume",
        g,
        "nats bench js consume",
        nb.and_then(|n| n.js_consume),
        "msgs/s",
        None,
        None,
        None,
        "durable consumer, explicit acks".into(),
    ));

    let g = "echo, window 256";
    let (cp, ck) = (
        best(runs, "ceiling_plain_w256"),
        best(runs, "ceiling_kept_w256"),
    );
    for nodes in [1, 2, 4] {
        let target = (nodes == 1).then_some(Target::RatioAtLeast(0.90));
        let mut note = format!("{} tasks", if nodes == 1 { c.tput } else { c.multi });
        if nodes > 1 {
            note.push_str(&format!("; {nodes} nodes on {cores} cores"));
        }
        for (name, ceil, ceil_label) in [("ephemeral", cp, "plain"), ("kept", ck, "kept")] {
            let f = best(runs, &format!("fleet_{name}_w256_n{nodes}"));
            r.push(row(
                &format!("echo_{name}_w256_{nodes}node"),
                g,
                &format!("{name}, {}", plural(nodes)),
                f.map(|f| f.tasks_per_s),
                "tasks/s",
                ceil.map(|c| c.tasks_per_s),
                Some(ceil_label),
                target,
                note.clone() + &duplicates(f),
            ));
        }
    }

    let g = "echo, window 1 (latency)";
    for (name, mode) in [("ephemeral", "plain"), ("kept", "kept")] {
        let f = lowest(runs, &format!("fleet_{name}_w1"), |r| r.latency_us.p50);
        let ceil = lowest(runs, &format!("ceiling_{mode}_w1"), |r| r.latency_us.p50);
        for (q, label, target) in [
            ("p50", "p50", Some(Target::RatioAtMost(1.2))),
            ("p99", "p99", None),
            ("p999", "p99.9", None),
        ] {
            let pick = |run: &Run| match q {
                "p50" => run.latency_us.p50,
                "p99" => run.latency_us.p99,
                _ => run.latency_us.p999,
            };
            r.push(row(
                &format!("echo_{name}_w1_{q}"),
                g,
                &format!("{name} {label}"),
                f.map(pick),
                "us",
                ceil.map(pick),
                Some(mode),
                target,
                format!("{} tasks, 1 node", c.lat),
            ));
        }
    }

    let g = "handlers";
    let mib = |run: Option<&Run>| run.map(|r| r.tasks * 64.0 / 1024.0 / r.seconds);
    r.push(row(
        "sha256_64k",
        g,
        "sha256, 64 KiB payloads",
        mib(best(runs, "fleet_sha256")),
        "MiB/s",
        mib(best(runs, "ceiling_sha256")),
        Some("kept sha256"),
        None,
        format!("{} tasks, 1 node, kept", c.sha),
    ));
    for nodes in [1, 2, 4] {
        let ideal = nodes as f64 * SLEEP_CONCURRENCY as f64 / SLEEP_TASK_S;
        r.push(row(
            &format!("sleep10ms_{nodes}node"),
            g,
            &format!("sleep 10ms, {}", plural(nodes)),
            best(runs, &format!("fleet_sleep_n{nodes}")).map(|f| f.tasks_per_s),
            "tasks/s",
            Some(ideal),
            Some("ideal"),
            None,
            format!(
                "ideal = {nodes} x {SLEEP_CONCURRENCY} / 10 ms; window {}",
                2 * nodes * SLEEP_CONCURRENCY
            ),
        ));
    }

    let g = "cost";
    let idle = lowest(runs, "node_idle", |r| r.node_rss_mib.unwrap_or(f64::MAX));
    r.push(row(
        "node_rss_idle",
        g,
        "node peak RSS, idle",
        idle.and_then(|i| i.node_rss_mib),
        "MiB",
        idle.and_then(|i| i.worker_rss_mib),
        Some("worker"),
        Some(Target::ValueAtMost(10.0)),
        format!("VmHWM after {} s idle", c.idle_s),
    ));
    r.push(row(
        "node_rss_256_inflight",
        g,
        "node peak RSS, 256 in flight",
        best(runs, "node_inflight").and_then(|i| i.node_rss_mib),
        "MiB",
        None,
        None,
        Some(Target::ValueAtMost(30.0)),
        format!(
            "{} x sleep {}, concurrency 256, window 256",
            c.inflight_tasks, c.inflight_sleep
        ),
    ));
    let (fk, fe) = (
        best(runs, "fleet_kept_w256_n1"),
        best(runs, "fleet_ephemeral_w256_n1"),
    );
    r.push(row(
        "node_rss_kept_w256",
        g,
        "node peak RSS, echo kept w256",
        fk.and_then(|f| f.node_rss_mib),
        "MiB",
        ck.and_then(|c| c.worker_rss_mib),
        Some("worker"),
        None,
        String::new(),
    ));
    let big = best(runs, "submit_big");
    r.push(row(
        "submit_rss_big",
        g,
        &format!("submit peak RSS, {} tasks", c.big),
        big.and_then(|b| b.submit_rss_mib),
        "MiB",
        cp.and_then(|c| c.submit_rss_mib),
        Some("ceiling submit"),
        Some(Target::ValueAtMost(50.0)),
        format!(
            "echo, ephemeral, w256, stdin from a file; flat? {} tasks: {:.1} MiB",
            c.tput,
            fe.and_then(|f| f.submit_rss_mib).unwrap_or(0.0)
        ),
    ));
    for (id, label, run, ceil) in [
        ("kept", "kept".to_string(), fk, ck),
        ("ephemeral", "ephemeral".to_string(), fe, cp),
        ("big", format!("{} ephemeral", c.big), big, cp),
    ] {
        r.push(row(
            &format!("node_cpu_{id}"),
            g,
            &format!("node CPU, {label}"),
            per_100k(run, |r| r.node_cpu_s),
            "CPU s/100k",
            per_100k(ceil, |r| r.worker_cpu_s),
            Some("worker"),
            None,
            String::new(),
        ));
        r.push(row(
            &format!("submit_cpu_{id}"),
            g,
            &format!("submit CPU, {label}"),
            per_100k(run, |r| r.submit_cpu_s),
            "CPU s/100k",
            per_100k(ceil, |r| r.submit_cpu_s),
            Some("submit"),
            None,
            String::new(),
        ));
        r.push(row(
            &format!("server_cpu_{id}"),
            g,
            &format!("nats-server CPU, {label}"),
            per_100k(run, |r| r.server_cpu_s),
            "CPU s/100k",
            per_100k(ceil, |r| r.server_cpu_s),
            Some("server"),
            None,
            String::new(),
        ));
    }

    let g = "durability: sync_interval always";
    let cs = best(runs, "ceiling_kept_sync");
    for (id, name, label) in [
        ("echo_kept_w256_sync", "fleet_kept_sync", "kept, 1 node"),
        (
            "echo_kept_w256_sync_c256",
            "fleet_kept_sync_c256",
            "kept, 1 node, concurrency 256",
        ),
    ] {
        let f = best(runs, name);
        let mut note = format!("{} tasks", c.sync) + &duplicates(f);
        if let (Some(f), Some(fk), Some(cs), Some(ck)) = (f, fk, cs, ck) {
            note.push_str(&format!(
                "; price: fleet x{:.2}, ceiling x{:.2} of default",
                f.tasks_per_s / fk.tasks_per_s,
                cs.tasks_per_s / ck.tasks_per_s
            ));
        }
        r.push(row(
            id,
            g,
            label,
            f.map(|f| f.tasks_per_s),
            "tasks/s",
            cs.map(|c| c.tasks_per_s),
            Some("kept"),
            None,
            note,
        ));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_come_in_the_order_rows_lists_even_with_no_runs() {
        let rows = rows(&Runs::new(), &crate::config::QUICK, 2);
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ROWS);
        assert!(rows.iter().all(|r| r.value.is_none()));
    }
}
