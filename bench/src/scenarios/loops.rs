//! The contestants that are not fleet, each on a fresh server: the
//! hand-written loop (`ceiling`, the reference of every ratio), the same
//! loop in Go on nats.go (`gopeer`), and apalis + apalis-nats.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _};

use super::{server, Bins, Run, Summary};
use crate::measure::{
    cpu_seconds, kill_measured, run_measured, spawn_logged, spawn_logged_to, tail, wait_for_log,
    wait_measured,
};

/// What `ceiling worker` says once it pulls.
pub(super) const CEILING_READY: &str = "ceiling worker ready";
/// What `gopeer worker` says once it pulls.
const GOPEER_READY: &str = "gopeer worker ready";
/// What `apalis-peer worker` says once its stream and consumer exist.
const APALIS_READY: &str = "apalis worker ready";

/// A worker/submitter pair with the ceiling's command line (`--nats-url URL
/// worker --mode M ...`, `--nats-url URL submit --mode M -n N --window W
/// --size S`, one JSON line out): the ceiling and gopeer.
struct Pair<'a> {
    /// The binary.
    bin: &'a Path,
    /// Its name in errors.
    name: &'a str,
    /// What its worker prints once it pulls.
    ready: &'a str,
    /// Worker flags beyond `--mode`.
    worker_args: &'a [&'a str],
}

/// How much work a pair is given.
#[derive(Debug, Clone, Copy)]
struct Work<'a> {
    mode: &'a str,
    tasks: usize,
    window: usize,
    size: usize,
    conf: Option<&'a Path>,
}

/// `ceiling worker` + `ceiling submit`.
pub fn ceiling(
    bins: &Bins,
    mode: &str,
    tasks: usize,
    window: usize,
    size: usize,
    handler: &str,
    conf: Option<&Path>,
) -> anyhow::Result<Run> {
    let pair = Pair {
        bin: &bins.ceiling,
        name: "ceiling",
        ready: CEILING_READY,
        worker_args: &["--handler", handler],
    };
    run_pair(
        &pair,
        Work {
            mode,
            tasks,
            window,
            size,
            conf,
        },
    )
}

/// `gopeer worker` + `gopeer submit`: the loop on nats.go, echo only.
pub fn gopeer(
    bins: &Bins,
    mode: &str,
    tasks: usize,
    window: usize,
    size: usize,
) -> anyhow::Result<Run> {
    let pair = Pair {
        bin: &bins.gopeer,
        name: "gopeer",
        ready: GOPEER_READY,
        worker_args: &[],
    };
    run_pair(
        &pair,
        Work {
            mode,
            tasks,
            window,
            size,
            conf: None,
        },
    )
}

/// Worker up and pulling, then the submitter run to its end; the worker is
/// killed after it (it never exits by itself).
fn run_pair(pair: &Pair<'_>, w: Work<'_>) -> anyhow::Result<Run> {
    let server = server(w.conf);
    let d = server.dir.path();
    let url = server.url();
    let worker_log = d.join("worker.log");
    let mut worker = Command::new(pair.bin);
    worker
        .args(["--nats-url", &url, "worker", "--mode", w.mode])
        .args(pair.worker_args);
    let mut worker = spawn_logged(worker, &worker_log)?;
    wait_for_log(
        &mut worker,
        &worker_log,
        pair.ready,
        Duration::from_secs(30),
    )
    .with_context(|| format!("{} worker", pair.name))?;
    let server_pid = server.pid().context("the server runs")?;
    let server0 = cpu_seconds(server_pid);
    let out = d.join("submit.json");
    let mut submit = Command::new(pair.bin);
    submit
        .args(["--nats-url", &url, "submit", "--mode", w.mode])
        .args(["-n", &w.tasks.to_string()])
        .args(["--window", &w.window.to_string()])
        .args(["--size", &w.size.to_string()])
        .stdout(std::fs::File::create(&out)?);
    let log = d.join("submit.log");
    let finished = run_measured(submit, &log, Duration::from_secs(300))?;
    if finished.code != 0 {
        bail!(
            "{} submit exited {}: {}",
            pair.name,
            finished.code,
            tail(&std::fs::read_to_string(&log)?)
        );
    }
    let server_cpu = cpu_seconds(server_pid) - server0;
    let (worker_cpu, worker_rss) = kill_measured(&mut worker)?;
    let summary = Summary::read(&out, &format!("{} submit", pair.name))?;
    Ok(Run {
        worker_cpu_s: Some(worker_cpu),
        server_cpu_s: Some(server_cpu),
        submit_cpu_s: Some(finished.cpu),
        worker_rss_mib: Some(worker_rss),
        submit_rss_mib: Some(finished.rss_mib),
        ..summary.run()
    })
}

/// apalis-nats end to end: its worker up, `tasks` 100-byte echo jobs pushed
/// (no window: apalis-nats has no results to wait for), and the worker's
/// own report once it has done them all. Its rate is the worker's: jobs
/// done per second between the 10th and the 90th percentile of job ends.
pub fn apalis(bins: &Bins, tasks: usize) -> anyhow::Result<Run> {
    let server = server(None);
    let d = server.dir.path();
    let url = server.url();
    let worker_log = d.join("worker.log");
    let report = d.join("worker.json");
    let mut worker = Command::new(&bins.apalis);
    worker
        .args(["--nats-url", &url, "worker", "--expect", &tasks.to_string()])
        .stdout(std::fs::File::create(&report)?);
    let mut worker = spawn_logged_to(worker, &worker_log)?;
    wait_for_log(
        &mut worker,
        &worker_log,
        APALIS_READY,
        Duration::from_secs(30),
    )
    .context("apalis worker")?;
    let server_pid = server.pid().context("the server runs")?;
    let server0 = cpu_seconds(server_pid);
    let mut push = Command::new(&bins.apalis);
    push.args(["--nats-url", &url, "push", "-n", &tasks.to_string()])
        .args(["--size", "100"])
        .stdout(std::process::Stdio::null());
    let log = d.join("push.log");
    let pushed = run_measured(push, &log, Duration::from_secs(300))?;
    if pushed.code != 0 {
        let _ = kill_measured(&mut worker);
        bail!(
            "apalis-peer push exited {}: {}",
            pushed.code,
            tail(&std::fs::read_to_string(&log)?)
        );
    }
    let done = wait_measured(&mut worker, Duration::from_secs(300))?;
    let server_cpu = cpu_seconds(server_pid) - server0;
    if done.code != 0 {
        bail!(
            "apalis-peer worker exited {}: {}",
            done.code,
            tail(&std::fs::read_to_string(&worker_log)?)
        );
    }
    let summary = Summary::read(&report, "apalis-peer worker")?;
    let lost = summary.expected.map(|e| (e - summary.tasks).max(0.0));
    if lost.is_some_and(|l| l > 0.0) {
        eprintln!("apalis-nats: {lost:?} of {tasks} pushed jobs never arrived");
    }
    Ok(Run {
        lost,
        worker_cpu_s: Some(done.cpu),
        server_cpu_s: Some(server_cpu),
        submit_cpu_s: Some(pushed.cpu),
        worker_rss_mib: Some(done.rss_mib),
        submit_rss_mib: Some(pushed.rss_mib),
        ..summary.run()
    })
}
