//! One measured run each, every one on servers of its own (the test kit's),
//! so no run sees another's streams.
//!
//! | module | what |
//! |---|---|
//! | [`loops`] | the hand-written loop (`ceiling`), its Go twin (`gopeer`), apalis-nats |
//! | [`fleet`] | fleet nodes plus `fleet submit`, on one server or a 3-server cluster; an idle node |
//! | [`hosts`] | the same with every process on a host of its own (network namespaces) |
//! | [`bands`] | priority bands behind a low flood; a rate limit |
//! | [`inputs`] | the payload files fed to `fleet submit` |
//!
//! and here: what a run measured ([`Run`]), the binaries ([`Bins`]), and the
//! `nats` CLI's own bench.

mod bands;
mod fleet;
mod hosts;
mod inputs;
mod loops;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::bail;
use fleet_testkit::{tool, NatsServer};
use serde::Serialize;

use crate::measure::{run_measured, tail};

pub use self::bands::{
    most_starts_within, percentile, priorities, rate_limit, steady_rate, BandWaits,
};
pub use self::fleet::{cluster, fleet, idle_rss, node_host, FleetRun};
pub use self::hosts::{host_names, hosts, hosts_order, hosts_unavailable, why_no_namespaces};
pub use self::inputs::{echo_line, hex_64k_line, lines_file};
pub use self::loops::{apalis, ceiling, gopeer};

/// The binaries under test, all in one directory.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `fleet`.
    pub fleet: PathBuf,
    /// `ceiling`: the hand-written loop.
    pub ceiling: PathBuf,
    /// `gopeer`: the loop in Go on nats.go (bench/peers/go).
    pub gopeer: PathBuf,
    /// `apalis-peer`: the echo on apalis + apalis-nats (bench/peers/apalis).
    pub apalis: PathBuf,
}

impl Bins {
    /// The binaries in `dir`; fails, saying how to build it, when one is missing.
    pub fn in_dir(dir: &Path) -> anyhow::Result<Bins> {
        let bins = Bins {
            fleet: dir.join("fleet"),
            ceiling: dir.join("ceiling"),
            gopeer: dir.join("gopeer"),
            apalis: dir.join("apalis-peer"),
        };
        for (bin, build) in [
            (&bins.fleet, "cargo build --release -p fleet-cli"),
            (&bins.ceiling, "cargo build --release -p fleet-bench"),
            (
                &bins.gopeer,
                "go -C bench/peers/go build -o <that dir>/gopeer . (bin/bench does)",
            ),
            (&bins.apalis, "cargo build --release -p fleet-bench-apalis"),
        ] {
            if !bin.is_file() {
                bail!("{} is missing: build it with {build}", bin.display());
            }
        }
        Ok(bins)
    }
}

/// Submit-to-result latency percentiles, µs.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

/// What one run measured; fields a scenario does not measure stay `None`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Run {
    /// Tasks run.
    pub tasks: f64,
    /// Seconds of the whole run, as the submitter (or apalis's worker) saw it.
    pub seconds: f64,
    /// tasks / seconds: the whole-run rate, start-up and tail included.
    pub tasks_per_s: f64,
    /// The rate between the 10th and the 90th percentile of task ends: what
    /// the table compares, since it leaves out each contestant's own warm-up
    /// (connecting, creating streams) and its tail.
    pub steady_tasks_per_s: f64,
    /// Latency percentiles.
    pub latency_us: Latency,
    /// Results that came twice.
    pub duplicates: f64,
    /// CPU seconds of fleet nodes (all of them).
    pub node_cpu_s: Option<f64>,
    /// CPU seconds of the loop's (or a peer's) worker.
    pub worker_cpu_s: Option<f64>,
    /// CPU seconds of the submitter (apalis: the pusher).
    pub submit_cpu_s: Option<f64>,
    /// CPU seconds of nats-server.
    pub server_cpu_s: Option<f64>,
    /// Peak RSS of the largest node, MiB.
    pub node_rss_mib: Option<f64>,
    /// Peak RSS of the loop's (or a peer's) worker, MiB.
    pub worker_rss_mib: Option<f64>,
    /// Peak RSS of the submitter, MiB.
    pub submit_rss_mib: Option<f64>,
    /// `nats bench js pub async`, msgs/s.
    pub js_pub_async: Option<f64>,
    /// `nats bench js consume`, msgs/s.
    pub js_consume: Option<f64>,
    /// Queue waits by priority band behind a low flood.
    pub bands: Option<BandWaits>,
    /// Starts per second under a rate limit, first start to last.
    pub starts_per_s: Option<f64>,
    /// Most starts within any one second under a rate limit.
    pub most_starts_1s: Option<f64>,
    /// Jobs pushed that never arrived (apalis-nats does not confirm its
    /// publishes); its rate is over the ones that did.
    pub lost: Option<f64>,
}

impl Run {
    /// The figure throughput rows compare: the steady rate, or the
    /// whole-run rate when the run had no steady phase to measure. That is
    /// when the contestant gave none, or when its 10th-to-90th percentile
    /// span is under a quarter of the run: then 80% of the tasks ended in
    /// one burst (a tiny run, one fsync batch of `sync_interval: always`),
    /// and tasks over that span is a burst size, not a rate. A run with a
    /// steady phase spends most of its time in that span (about 0.8 of it,
    /// less its warm-up).
    pub fn rate(&self) -> f64 {
        let steady = self.steady_tasks_per_s;
        if steady > 0.0 && 0.8 * self.tasks / steady >= 0.25 * self.seconds {
            steady
        } else {
            self.tasks_per_s
        }
    }
}

/// What a submitter (the loop's, gopeer's, `fleet submit --summary-json`)
/// or apalis's worker printed as its summary.
#[derive(Debug, serde::Deserialize)]
struct Summary {
    tasks: f64,
    seconds: f64,
    #[serde(default)]
    steady_tasks_per_s: f64,
    #[serde(default)]
    latency_us: Latency,
    #[serde(default)]
    ok: Option<f64>,
    #[serde(default)]
    duplicates: f64,
    /// What a peer expected to run, when it may run fewer.
    #[serde(default)]
    expected: Option<f64>,
}

impl Summary {
    /// Parses the summary in `path`; `who` names it in the error.
    fn read(path: &Path, who: &str) -> anyhow::Result<Summary> {
        let text = std::fs::read_to_string(path)?;
        match serde_json::from_str::<Summary>(text.trim()) {
            Ok(s) if s.seconds > 0.0 => Ok(s),
            Ok(s) => bail!("{who}: a summary with no time: {s:?}"),
            Err(err) => bail!("{who}: not a summary ({err}): {}", tail(&text)),
        }
    }

    /// The run's figures, without what processes cost.
    fn run(&self) -> Run {
        Run {
            tasks: self.tasks,
            seconds: self.seconds,
            tasks_per_s: self.tasks / self.seconds,
            steady_tasks_per_s: self.steady_tasks_per_s,
            latency_us: self.latency_us,
            duplicates: self.duplicates,
            ..Default::default()
        }
    }
}

/// A fresh server from `nats.conf`, or from `conf`.
fn server(conf: Option<&Path>) -> NatsServer {
    match conf {
        Some(conf) => NatsServer::start_with(&["-c", &conf.display().to_string()]),
        None => NatsServer::start(),
    }
}

/// The server's own figures: `nats bench js pub async` then `js consume` of
/// what it published (100-byte messages, file storage).
pub fn nats_bench(msgs: usize) -> anyhow::Result<Run> {
    let server = NatsServer::start();
    let d = server.dir.path();
    let url = server.url();
    let common = [
        "--msgs",
        &msgs.to_string(),
        "--size",
        "100",
        "--no-progress",
        "--server",
        &url,
        "--no-context",
    ]
    .map(str::to_string);
    let mut figures = Vec::new();
    for (name, args) in [
        (
            "js_pub_async",
            vec![
                "bench",
                "js",
                "pub",
                "async",
                "benchmark.subject",
                "--create",
                "--purge",
            ],
        ),
        ("js_consume", vec!["bench", "js", "consume"]),
    ] {
        let out = d.join(format!("{name}.out"));
        let log = d.join(format!("{name}.log"));
        let mut cmd = Command::new(tool("nats"));
        cmd.args(&args)
            .args(&common)
            .stdout(std::fs::File::create(&out)?);
        let finished = run_measured(cmd, &log, Duration::from_secs(180))?;
        let text = std::fs::read_to_string(&out)? + &std::fs::read_to_string(&log)?;
        let rate = text
            .split("stats:")
            .nth(1)
            .and_then(|rest| rest.split("msgs/sec").next())
            .map(|n| n.trim().replace(',', ""))
            .and_then(|n| n.parse::<f64>().ok());
        match (finished.code, rate) {
            (0, Some(rate)) => figures.push(rate),
            _ => bail!(
                "nats bench {name} failed ({}):\n{}",
                finished.code,
                tail(&text)
            ),
        }
    }
    Ok(Run {
        js_pub_async: Some(figures[0]),
        js_consume: Some(figures[1]),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(tasks: f64, seconds: f64, steady: f64) -> Run {
        Run {
            tasks,
            seconds,
            tasks_per_s: tasks / seconds,
            steady_tasks_per_s: steady,
            ..Default::default()
        }
    }

    #[test]
    fn the_rate_is_the_steady_one_unless_the_run_had_no_steady_phase() {
        // 100,000 tasks in 5 s, the middle 80% at 25,000/s (3.2 s of 5).
        assert_eq!(run(100_000.0, 5.0, 25_000.0).rate(), 25_000.0);
        // None given: the whole run.
        assert_eq!(run(1_000.0, 0.5, 0.0).rate(), 2_000.0);
        // 300 tasks in 0.47 s, 240 of them ending within 1 ms: a burst.
        assert_eq!(run(300.0, 0.5, 240_000.0).rate(), 600.0);
    }
}
