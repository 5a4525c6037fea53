//! The cost rows: peak memory of nodes and submitters, and CPU seconds per
//! 100,000 tasks of node, submitter and server, beside the loop's.

use super::Ctx;
use crate::report::{row, Row, Target};
use crate::scenarios::Run;

const GROUP: &str = "cost";

/// A CPU-seconds figure of a run.
type Cpu = fn(&Run) -> Option<f64>;

/// (row id part, label, fleet's process, the loop's process, its label).
const CPUS: [(&str, &str, Cpu, Cpu, &str); 3] = [
    (
        "node",
        "node",
        |r| r.node_cpu_s,
        |r| r.worker_cpu_s,
        "loop worker",
    ),
    (
        "submit",
        "submit",
        |r| r.submit_cpu_s,
        |r| r.submit_cpu_s,
        "loop submit",
    ),
    (
        "server",
        "nats-server",
        |r| r.server_cpu_s,
        |r| r.server_cpu_s,
        "server",
    ),
];

pub(super) fn cost_rows(x: &Ctx<'_>, r: &mut Vec<Row>) {
    memory_rows(x, r);
    for (id, label, run, ceiling) in [
        (
            "kept",
            "kept".to_string(),
            "fleet_kept_w256_n1",
            "ceiling_kept_w256",
        ),
        (
            "ephemeral",
            "ephemeral".to_string(),
            "fleet_ephemeral_w256_n1",
            "ceiling_plain_w256",
        ),
        (
            "big",
            format!("{} ephemeral", x.c.big),
            "submit_big",
            "ceiling_plain_w256",
        ),
    ] {
        for (what, name, fleet_cpu, ceiling_cpu, ceiling_label) in CPUS {
            r.push(row(
                &format!("{what}_cpu_{id}"),
                GROUP,
                &format!("{name} CPU, {label}"),
                x.per_100k(run, fleet_cpu),
                "CPU s/100k",
                x.per_100k(ceiling, ceiling_cpu),
                Some(ceiling_label),
                None,
                String::new(),
            ));
        }
    }
}

fn memory_rows(x: &Ctx<'_>, r: &mut Vec<Row>) {
    r.push(row(
        "node_rss_idle",
        GROUP,
        "node peak RSS, idle",
        x.median("node_idle", |i| i.node_rss_mib),
        "MiB",
        x.median("node_idle", |i| i.worker_rss_mib),
        Some("loop worker"),
        Some(Target::ValueAtMost(10.0)),
        format!("VmHWM after {} s idle", x.c.idle_s),
    ));
    r.push(row(
        "node_rss_256_inflight",
        GROUP,
        "node peak RSS, 256 in flight",
        x.median("node_inflight", |i| i.node_rss_mib),
        "MiB",
        None,
        None,
        Some(Target::ValueAtMost(30.0)),
        format!(
            "{} x sleep {}, concurrency 256, window 256",
            x.c.inflight_tasks, x.c.inflight_sleep
        ),
    ));
    r.push(row(
        "node_rss_kept_w256",
        GROUP,
        "node peak RSS, echo kept w256",
        x.median("fleet_kept_w256_n1", |f| f.node_rss_mib),
        "MiB",
        x.median("ceiling_kept_w256", |c| c.worker_rss_mib),
        Some("loop worker"),
        None,
        String::new(),
    ));
    r.push(row(
        "submit_rss_big",
        GROUP,
        &format!("submit peak RSS, {} tasks", x.c.big),
        x.median("submit_big", |b| b.submit_rss_mib),
        "MiB",
        x.median("ceiling_plain_w256", |c| c.submit_rss_mib),
        Some("loop submit"),
        Some(Target::ValueAtMost(50.0)),
        format!(
            "echo, ephemeral, w256, stdin from a file; flat? {} tasks: {:.1} MiB",
            x.c.tput,
            x.median("fleet_ephemeral_w256_n1", |f| f.submit_rss_mib)
                .unwrap_or(0.0)
        ),
    ));
}
