//! The table's rows, from the runs of one benchmark.
//!
//! Every figure is the median of its rounds (rounds are interleaved: each
//! runs every contestant of a comparison back to back), so one round slowed
//! by a neighbour on a shared machine moves nothing, where the best of the
//! rounds would reward a lucky one. Throughput is each run's steady rate
//! ([`Run::rate`]). The same median goes for memory and CPU.

mod bands;
mod cost;
mod hosts;
mod security;

use std::collections::BTreeMap;

use crate::config::{Counts, SLEEP_CONCURRENCY, SLEEP_TASK_S};
use crate::report::{row, Row, Target};
use crate::scenarios::Run;
use bands::{limit_rows, priority_rows};
use hosts::hosts_rows;
use security::security_rows;

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
    "echo_kept_w256_cluster3",
    "hosts_loopback_3node",
    "hosts_1host_3node",
    "hosts_2host_3node",
    "hosts_3host_3node",
    "security_off_kept_w256",
    "security_admin_kept_w256",
    "security_alice_kept_w256",
    "go_plain_w256",
    "go_kept_w256",
    "apalis_echo",
    "fleet_kept_vs_apalis",
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
    "prio_high_wait_p50",
    "prio_high_wait_p99",
    "prio_normal_wait_p50",
    "prio_normal_wait_p99",
    "prio_low_wait_p50",
    "prio_low_wait_p99",
    "prio_low_drain",
    "limit_concurrency_echo",
    "limit_rate_starts",
    "limit_rate_most_1s",
];

/// Every round of every scenario, by name, in the order the rounds ran.
pub type Runs = BTreeMap<String, Vec<Run>>;

/// The median of `values`; the mean of the middle two for an even count.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// What the row builders read.
struct Ctx<'a> {
    runs: &'a Runs,
    c: &'a Counts,
    cores: usize,
}

impl Ctx<'_> {
    /// The median over the rounds of scenario `name` of `key`, over the
    /// rounds that have it.
    fn median(&self, name: &str, key: impl Fn(&Run) -> Option<f64>) -> Option<f64> {
        median(self.runs.get(name)?.iter().filter_map(key).collect())
    }

    /// The largest of `key` over `name`'s rounds.
    fn most(&self, name: &str, key: impl Fn(&Run) -> Option<f64>) -> Option<f64> {
        self.runs.get(name)?.iter().filter_map(key).reduce(f64::max)
    }

    /// The median steady rate of scenario `name`.
    fn rate(&self, name: &str) -> Option<f64> {
        self.median(name, |r| Some(r.rate()))
    }

    /// "; rounds 1.18 1.25 1.22": the per-round ratios of the steady rates
    /// of `a` over `b`, which show how far the rounds agree; empty with one
    /// round, or when a round of either is missing.
    fn per_round(&self, a: &str, b: &str) -> String {
        let (Some(a), Some(b)) = (self.runs.get(a), self.runs.get(b)) else {
            return String::new();
        };
        if a.len() < 2 || a.len() != b.len() {
            return String::new();
        }
        let ratios: Vec<String> = a
            .iter()
            .zip(b)
            .map(|(a, b)| format!("{:.2}", a.rate() / b.rate()))
            .collect();
        format!("; rounds {}", ratios.join(" "))
    }

    /// The median per 100,000 tasks of the CPU seconds `cpu` of scenario `name`.
    fn per_100k(&self, name: &str, cpu: impl Fn(&Run) -> Option<f64>) -> Option<f64> {
        self.median(name, |r| Some(cpu(r)? / r.tasks * 100_000.0))
    }

    /// "; N duplicate results" when any round of `name` saw some.
    fn duplicates(&self, name: &str) -> String {
        match self.median(name, |r| Some(r.duplicates)) {
            Some(d) if d > 0.0 => format!("; {d} duplicate results (median)"),
            _ => String::new(),
        }
    }
}

fn plural(nodes: usize) -> String {
    format!("{nodes} node{}", if nodes > 1 { "s" } else { "" })
}

/// The rows of the table, in [`ROWS`] order.
pub fn rows(runs: &Runs, c: &Counts, cores: usize) -> Vec<Row> {
    let x = Ctx { runs, c, cores };
    let mut r = Vec::new();
    server_rows(&x, &mut r);
    echo_rows(&x, &mut r);
    hosts_rows(&x, &mut r);
    security_rows(&x, &mut r);
    peer_rows(&x, &mut r);
    latency_rows(&x, &mut r);
    handler_rows(&x, &mut r);
    cost::cost_rows(&x, &mut r);
    durability_rows(&x, &mut r);
    priority_rows(&x, &mut r);
    limit_rows(&x, &mut r);
    r
}

fn server_rows(x: &Ctx<'_>, r: &mut Vec<Row>) {
    let g = "server (nats CLI)";
    r.push(row(
        "nats_bench_js_pub",
        g,
        "nats bench js pub async",
        x.median("nats_bench", |n| n.js_pub_async),
        "msgs/s",
        None,
        None,
        None,
        format!("{} x 100 B, file storage", x.c.nats_bench),
    ));
    r.push(row(
        "nats_bench_js_consume",
        g,
        "nats bench js consume",
        x.median("nats_bench", |n| n.js_consume),
        "msgs/s",
        None,
        None,
        None,
        "durable consumer, explicit acks".into(),
    ));
}

/// fleet at window 256 against the loop of the same mode, with 1, 2 and 4
/// nodes on one server, and with one node on a 3-server cluster.
fn echo_rows(x: &Ctx<'_>, r: &mut Vec<Row>) {
    let g = "echo, window 256 (steady tasks/s)";
    for nodes in [1, 2, 4] {
        let mut note = format!("{} tasks", if nodes == 1 { x.c.tput } else { x.c.multi });
        if nodes > 1 {
            note.push_str(&format!("; {nodes} nodes on {} cores", x.cores));
        }
        for (name, mode, target) in [
            ("ephemeral", "plain", Target::RatioAtLeast(1.2)),
            ("kept", "kept", Target::RatioAtLeast(1.0)),
        ] {
            let fleet = format!("fleet_{name}_w256_n{nodes}");
            let ceiling = format!("ceiling_{mode}_w256");
            let rounds = if nodes == 1 {
                x.per_round(&fleet, &ceiling)
            } else {
                String::new()
            };
            r.push(row(
                &format!("echo_{name}_w256_{nodes}node"),
                g,
                &format!("{name}, {}", plural(nodes)),
                x.rate(&fleet),
                "tasks/s",
                x.rate(&ceiling),
                Some(&format!("loop {mode}")),
                (nodes == 1).then_some(target),
                note.clone() + &rounds + &x.duplicates(&fleet),
            ));
        }
    }
    let one = x.rate("fleet_kept_w256_n1");
    let sync = x.rate("fleet_kept_sync");
    let cluster = x.rate("fleet_kept_w256_cluster3");
    r.push(row(
        "echo_kept_w256_cluster3",
        g,
        "kept, 1 node, 3-server cluster (R3)",
        cluster,
        "tasks/s",
        one,
        Some("fleet kept, 1 server"),
        None,
        format!(
            "{} tasks; deploy/cluster as shipped: TLS, encrypted at rest, sync_interval always; \
             x{:.2} of fleet kept on 1 server with sync always{}",
            x.c.cluster,
            cluster.zip(sync).map_or(0.0, |(c, s)| c / s),
            x.duplicates("fleet_kept_w256_cluster3")
        ),
    ));
}

/// The Go loop and apalis-nats against the hand-written loop, and fleet
/// kept against apalis-nats.
fn peer_rows(x: &Ctx<'_>, r: &mut Vec<Row>) {
    let g = "peers, echo (steady tasks/s, ratio to the loop)";
    for mode in ["plain", "kept"] {
        let go = format!("go_{mode}_w256");
        let ceiling = format!("ceiling_{mode}_w256");
        r.push(row(
            &go,
            g,
            &format!("Go nats.go loop, {mode}, window 256"),
            x.rate(&go),
            "tasks/s",
            x.rate(&ceiling),
            Some(&format!("loop {mode}")),
            None,
            format!("{} tasks; bench/peers/go", x.c.tput) + &x.per_round(&go, &ceiling),
        ));
    }
    r.push(row(
        "apalis_echo",
        g,
        "apalis-nats, 1 worker",
        x.rate("apalis_echo"),
        "tasks/s",
        x.rate("ceiling_plain_w256"),
        Some("loop plain"),
        None,
        format!(
            "{} jobs pushed with no window, rate from the worker's job ends; keeps no results{}",
            x.c.tput,
            match x.most("apalis_echo", |r| r.lost) {
                Some(lost) if lost > 0.0 => format!(
                    "; up to {lost:.0} jobs never arrived in a round (publishes not confirmed)"
                ),
                _ => String::new(),
            }
        ) + &x.per_round("apalis_echo", "ceiling_plain_w256"),
    ));
    r.push(row(
        "fleet_kept_vs_apalis",
        g,
        "fleet kept, 1 node, vs apalis-nats",
        x.rate("fleet_kept_w256_n1"),
        "tasks/s",
        x.rate("apalis_echo"),
        Some("apalis-nats"),
        Some(Target::RatioAtLeast(1.25)),
        "fleet keeps every result; apalis-nats keeps none".to_string()
            + &x.per_round("fleet_kept_w256_n1", "apalis_echo"),
    ));
}

/// Window 1: submit-to-result latency, fleet against the loop.
fn latency_rows(x: &Ctx<'_>, r: &mut Vec<Row>) {
    let g = "echo, window 1 (latency)";
    for (name, mode) in [("ephemeral", "plain"), ("kept", "kept")] {
        let fleet = format!("fleet_{name}_w1");
        let ceiling = format!("ceiling_{mode}_w1");
        for (q, label, target) in [
            ("p50", "p50", Some(Target::RatioAtMost(1.1))),
            ("p99", "p99", None),
            ("p999", "p99.9", None),
        ] {
            let pick = |run: &Run| {
                Some(match q {
                    "p50" => run.latency_us.p50,
                    "p99" => run.latency_us.p99,
                    _ => run.latency_us.p999,
                })
            };
            r.push(row(
                &format!("echo_{name}_w1_{q}"),
                g,
                &format!("{name} {label}"),
                x.median(&fleet, pick),
                "us",
                x.median(&ceiling, pick),
                Some(&format!("loop {mode}")),
                target,
                format!("{} tasks, 1 node", x.c.lat),
            ));
        }
    }
}

fn handler_rows(x: &Ctx<'_>, r: &mut Vec<Row>) {
    let g = "handlers";
    let mib = |name: &str| x.median(name, |r| Some(r.rate() * 64.0 / 1024.0));
    r.push(row(
        "sha256_64k",
        g,
        "sha256, 64 KiB payloads",
        mib("fleet_sha256"),
        "MiB/s",
        mib("ceiling_sha256"),
        Some("loop kept sha256"),
        None,
        format!("{} tasks, 1 node, kept", x.c.sha),
    ));
    for nodes in [1, 2, 4] {
        let ideal = nodes as f64 * SLEEP_CONCURRENCY as f64 / SLEEP_TASK_S;
        r.push(row(
            &format!("sleep10ms_{nodes}node"),
            g,
            &format!("sleep 10ms, {}", plural(nodes)),
            x.rate(&format!("fleet_sleep_n{nodes}")),
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
}

/// `sync_interval: always`: fleet kept against the loop kept, both paying
/// an fsync per acknowledgement.
fn durability_rows(x: &Ctx<'_>, r: &mut Vec<Row>) {
    let g = "durability: sync_interval always";
    let ceiling = x.rate("ceiling_kept_sync");
    let price = |name: &str, of: &str| x.rate(name).zip(x.rate(of)).map(|(a, b)| a / b);
    for (id, name, label, target) in [
        (
            "echo_kept_w256_sync",
            "fleet_kept_sync",
            "kept, 1 node",
            Some(Target::RatioAtLeast(3.0)),
        ),
        (
            "echo_kept_w256_sync_c256",
            "fleet_kept_sync_c256",
            "kept, 1 node, concurrency 256",
            None,
        ),
    ] {
        let mut note = format!("{} tasks", x.c.sync) + &x.duplicates(name);
        if let (Some(f), Some(c)) = (
            price(name, "fleet_kept_w256_n1"),
            price("ceiling_kept_sync", "ceiling_kept_w256"),
        ) {
            note.push_str(&format!("; price: fleet x{f:.2}, loop x{c:.2} of default"));
        }
        if target.is_some() {
            note.push_str(&x.per_round(name, "ceiling_kept_sync"));
        }
        r.push(row(
            id,
            g,
            label,
            x.rate(name),
            "tasks/s",
            ceiling,
            Some("loop kept"),
            target,
            note,
        ));
    }
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

    #[test]
    fn the_median_ignores_one_slow_round() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![30.0, 5.0, 31.0]), Some(30.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    fn echo(steady: f64, whole: f64) -> Run {
        Run {
            tasks: 1000.0,
            seconds: 1000.0 / whole,
            tasks_per_s: whole,
            steady_tasks_per_s: steady,
            ..Default::default()
        }
    }

    #[test]
    fn least_privilege_rows_are_held_to_fleet_kept_with_auth_off() {
        let mut runs = Runs::new();
        runs.insert("fleet_kept_w256_n1".into(), vec![echo(100.0, 90.0)]);
        runs.insert(
            "fleet_kept_w256_n1_secure_admin".into(),
            vec![echo(95.0, 85.0)],
        );
        runs.insert(
            "fleet_kept_w256_n1_secure_alice".into(),
            vec![echo(80.0, 70.0)],
        );
        let rows = rows(&runs, &crate::config::QUICK, 2);
        let find = |id: &str| rows.iter().find(|r| r.id == id).unwrap();
        let off = find("security_off_kept_w256");
        assert_eq!((off.value, off.ratio), (Some(100.0), None));
        for (id, ratio) in [
            ("security_admin_kept_w256", 0.95),
            ("security_alice_kept_w256", 0.80),
        ] {
            let on = find(id);
            assert_eq!(on.ceiling, Some(100.0), "{id}");
            assert!((on.ratio.unwrap() - ratio).abs() < 1e-9, "{id}: {on:?}");
            assert_eq!(on.group, off.group);
        }
    }

    #[test]
    fn throughput_rows_compare_medians_of_steady_rates() {
        let mut runs = Runs::new();
        runs.insert(
            "fleet_kept_w256_n1".into(),
            vec![echo(120.0, 90.0), echo(10.0, 9.0), echo(130.0, 99.0)],
        );
        runs.insert(
            "ceiling_kept_w256".into(),
            vec![echo(100.0, 80.0), echo(100.0, 80.0), echo(0.0, 100.0)],
        );
        let rows = rows(&runs, &crate::config::QUICK, 2);
        let kept = rows
            .iter()
            .find(|r| r.id == "echo_kept_w256_1node")
            .unwrap();
        assert_eq!((kept.value, kept.ceiling), (Some(120.0), Some(100.0)));
        assert_eq!(kept.pass, Some(true));
        assert!(kept.note.contains("rounds 1.20 0.10 1.30"), "{}", kept.note);
    }
}
