//! Priorities and limits at bench scale, read from the `Task-Started` and
//! `Task-Finished` times results carry (`fleet submit --json`).
//!
//! - [`priorities`]: the starvation test. A flood of `low` sleep
//!   tasks, submitted with a window as large as the flood so the queue
//!   really backs up, runs on [`PRIO_NODES`] nodes; once the low band's
//!   backlog shows in `fleet status`, a batch of `high` tasks is submitted,
//!   then (once it is done) a batch of `normal` ones. A task's queue wait
//!   is its `Task-Started` minus the moment its band's `fleet submit`
//!   began (as tests/control/priority.rs reads it): the submitter publishes
//!   a whole batch within its window at once, so that is its wait in the
//!   queue plus at most the batch's own publishing.
//! - [`rate_limit`]: `fleet limit set sleep --rate R/s`, starts read from
//!   the results.
//!
//! The concurrency-limit runs are plain fleet runs with a limit set
//! ([`super::FleetRun::limit`]).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _};
use fleet_testkit::NatsServer;
use serde::Serialize;

use super::fleet::{limit_set, setup, start_nodes, stop_nodes, Conn};
use super::hosts::Killed;
use super::{Bins, FleetRun, Run};
use crate::config::{PRIO_CONCURRENCY, PRIO_NODES, PRIO_SLEEP, RATE_NODES};
use crate::measure::{run_measured, tail, wait_measured};

/// Queue waits by band (ms) behind a low flood, and the flood's drain.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct BandWaits {
    /// `high`: median and 99th percentile.
    pub high_p50_ms: f64,
    /// See `high_p50_ms`.
    pub high_p99_ms: f64,
    /// `normal`, submitted once the high batch is done.
    pub normal_p50_ms: f64,
    /// See `normal_p50_ms`.
    pub normal_p99_ms: f64,
    /// `low`: the flood itself, from the moment its submit began.
    pub low_p50_ms: f64,
    /// See `low_p50_ms`.
    pub low_p99_ms: f64,
    /// From the flood's submit to its last task's end, seconds.
    pub drain_s: f64,
    /// Low tasks that finished while the high batch ran (first high start
    /// to last high end): the low band was not starved.
    pub low_during_high: f64,
}

/// The `q`-quantile (0..=1) of ascending `sorted` by nearest rank; 0 when empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Most of `starts` within any `window` that opens at one of them.
pub fn most_starts_within(starts: &[SystemTime], window: Duration) -> usize {
    let mut sorted = starts.to_vec();
    sorted.sort();
    let mut most = 0;
    let mut end = 0;
    for (i, t) in sorted.iter().enumerate() {
        while end < sorted.len() && sorted[end] < *t + window {
            end += 1;
        }
        most = most.max(end - i);
    }
    most
}

/// Tasks per second between the 10th and the 90th percentile of `ends` (as
/// the submitters measure it); 0 when that span is empty.
pub fn steady_rate(ends: &[SystemTime]) -> f64 {
    let mut sorted = ends.to_vec();
    sorted.sort();
    if sorted.len() < 2 {
        return 0.0;
    }
    let at = |q: f64| sorted[((q * (sorted.len() - 1) as f64).round()) as usize];
    let span = at(0.9)
        .duration_since(at(0.1))
        .unwrap_or_default()
        .as_secs_f64();
    if span > 0.0 {
        0.8 * sorted.len() as f64 / span
    } else {
        0.0
    }
}

/// (started, finished) of every task of a `fleet submit --json` output;
/// fails unless each of `expected` tasks came back ok.
fn spans(out: &Path, expected: usize) -> anyhow::Result<Vec<(SystemTime, SystemTime)>> {
    let text = std::fs::read_to_string(out)?;
    let mut spans = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        if v["status"] != "ok" {
            bail!("a task did not end ok: {line}");
        }
        let time = |key: &str| -> anyhow::Result<SystemTime> {
            let s = v[key]
                .as_str()
                .with_context(|| format!("no {key}: {line}"))?;
            Ok(humantime::parse_rfc3339(s)?)
        };
        spans.push((time("started")?, time("finished")?));
    }
    if spans.len() != expected {
        bail!("{} results of {expected} in {}", spans.len(), out.display());
    }
    Ok(spans)
}

/// `fleet submit sleep --json ARGS` fed `lines` copies of `payload`, its
/// results to `dir/NAME.out`, its log to `dir/NAME.log`.
fn submit_cmd(
    bins: &Bins,
    url: &str,
    dir: &Path,
    name: &str,
    args: &[&str],
    payload: &str,
    lines: usize,
) -> anyhow::Result<Command> {
    let input = dir.join(format!("{name}.in"));
    std::fs::write(&input, format!("{payload}\n").repeat(lines))?;
    let mut cmd = Command::new(&bins.fleet);
    cmd.args([
        "--server",
        url,
        "submit",
        "sleep",
        "--json",
        "--no-progress",
    ])
    .args(["--batch", name])
    .args(args)
    .stdin(std::fs::File::open(&input)?)
    .stdout(std::fs::File::create(dir.join(format!("{name}.out")))?);
    Ok(cmd)
}

/// Starts `cmd` (its standard input and output set) with standard error to `log`.
fn spawn_fed(mut cmd: Command, log: &Path) -> anyhow::Result<std::process::Child> {
    cmd.stderr(std::fs::File::create(log)?);
    cmd.spawn().context("starting fleet submit")
}

/// Tasks of `band` waiting in the default group, from `fleet status --json`.
fn pending(bins: &Bins, url: &str, band: &str) -> anyhow::Result<u64> {
    let out = Command::new(&bins.fleet)
        .args(["--server", url, "status", "--json"])
        .stderr(Stdio::null())
        .output()?;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "fleet status --json: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    let group = status["groups"]
        .as_array()
        .and_then(|gs| {
            gs.iter()
                .find(|g| g["name"] == fleet::contract::DEFAULT_GROUP)
        })
        .context("no default group in fleet status")?;
    Ok(group["bands"]
        .as_array()
        .and_then(|bs| bs.iter().find(|b| b["priority"] == band))
        .and_then(|b| b["pending"].as_u64())
        .unwrap_or(0))
}

/// Milliseconds from `began` to each start, ascending.
fn waits_ms(spans: &[(SystemTime, SystemTime)], began: SystemTime) -> Vec<f64> {
    let mut waits: Vec<f64> = spans
        .iter()
        .map(|(s, _)| s.duration_since(began).unwrap_or_default().as_secs_f64() * 1e3)
        .collect();
    waits.sort_by(f64::total_cmp);
    waits
}

/// The starvation scenario: `low` flood tasks, then `high` high ones, then
/// `high` normal ones, on [`PRIO_NODES`] nodes of [`PRIO_CONCURRENCY`]
/// slots at the default weights; every task sleeps [`PRIO_SLEEP`]. Fails
/// when the flood drained before a batch behind it was done (the figures
/// would then not be waits behind a flood).
pub fn priorities(bins: &Bins, low: usize, high: usize) -> anyhow::Result<Run> {
    let server = NatsServer::start();
    let url = server.url();
    let d = server.dir.path();
    let conn = Conn::plain(url.clone(), None);
    setup(bins, &conn, &[])?;
    let none = d.join("none");
    let run = FleetRun {
        nodes: PRIO_NODES,
        concurrency: PRIO_CONCURRENCY,
        ..FleetRun::new("sleep", &none, 0)
    };
    let mut nodes = Killed(start_nodes(bins, &conn, &run, d)?);
    let window = low.to_string();
    let flood = submit_cmd(
        bins,
        &url,
        d,
        "low",
        &[
            "--priority",
            "low",
            "--window",
            &window,
            "--timeout",
            "600s",
        ],
        PRIO_SLEEP,
        low,
    )?;
    let flood_began = SystemTime::now();
    let mut flood = Killed(vec![spawn_fed(flood, &d.join("low.log"))?]);
    // The backlog must really be there before the batches behind it come.
    let waited = Instant::now();
    while pending(bins, &url, "low")? < (low / 4) as u64 {
        if let Some(status) = flood.0[0].try_wait()? {
            bail!("the low flood ended ({status}) before its backlog showed");
        }
        if waited.elapsed() > Duration::from_secs(60) {
            bail!("the low flood's backlog did not reach {} in 60 s", low / 4);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut began = Vec::new();
    for band in ["high", "normal"] {
        let cmd = submit_cmd(
            bins,
            &url,
            d,
            band,
            &["--priority", band, "--timeout", "120s"],
            PRIO_SLEEP,
            high,
        )?;
        began.push(SystemTime::now());
        let log = d.join(format!("{band}.log"));
        let done = run_measured(cmd, &log, Duration::from_secs(180))?;
        if done.code != 0 {
            bail!(
                "fleet submit --priority {band} exited {}: {}",
                done.code,
                tail(&std::fs::read_to_string(&log)?)
            );
        }
    }
    let done = wait_measured(&mut flood.0[0], Duration::from_secs(900))?;
    if done.code != 0 {
        bail!(
            "the low flood's submit exited {}: {}",
            done.code,
            tail(&std::fs::read_to_string(d.join("low.log"))?)
        );
    }
    stop_nodes(&mut nodes.0)?;
    let low_spans = spans(&d.join("low.out"), low)?;
    let high_spans = spans(&d.join("high.out"), high)?;
    let normal_spans = spans(&d.join("normal.out"), high)?;
    let drained = low_spans.iter().map(|s| s.1).max().context("no low task")?;
    for (band, spans) in [("high", &high_spans), ("normal", &normal_spans)] {
        if spans.iter().any(|s| s.1 >= drained) {
            bail!("the low flood drained before the {band} batch was done: make it larger");
        }
    }
    let high_first = high_spans.iter().map(|s| s.0).min().unwrap_or(drained);
    let high_last = high_spans.iter().map(|s| s.1).max().unwrap_or(drained);
    let (hw, nw, lw) = (
        waits_ms(&high_spans, began[0]),
        waits_ms(&normal_spans, began[1]),
        waits_ms(&low_spans, flood_began),
    );
    let drain_s = drained.duration_since(flood_began)?.as_secs_f64();
    let tasks = (low + 2 * high) as f64;
    let ends: Vec<SystemTime> = low_spans.iter().map(|s| s.1).collect();
    Ok(Run {
        tasks,
        seconds: drain_s,
        tasks_per_s: tasks / drain_s,
        steady_tasks_per_s: steady_rate(&ends),
        bands: Some(BandWaits {
            high_p50_ms: percentile(&hw, 0.5),
            high_p99_ms: percentile(&hw, 0.99),
            normal_p50_ms: percentile(&nw, 0.5),
            normal_p99_ms: percentile(&nw, 0.99),
            low_p50_ms: percentile(&lw, 0.5),
            low_p99_ms: percentile(&lw, 0.99),
            drain_s,
            low_during_high: low_spans
                .iter()
                .filter(|s| s.1 >= high_first && s.1 <= high_last)
                .count() as f64,
        }),
        ..Default::default()
    })
}

/// `fleet limit set sleep --rate R/s`, then `tasks` sleep 10ms tasks on
/// [`RATE_NODES`] nodes: the starts per second over the run (first start
/// to last) and the most in any one second.
pub fn rate_limit(bins: &Bins, per_s: u32, tasks: usize) -> anyhow::Result<Run> {
    let server = NatsServer::start();
    let url = server.url();
    let d = server.dir.path();
    let conn = Conn::plain(url.clone(), None);
    setup(bins, &conn, &[])?;
    limit_set(bins, &conn, &["sleep", "--rate", &format!("{per_s}/s")])?;
    let none = d.join("none");
    let run = FleetRun {
        nodes: RATE_NODES,
        ..FleetRun::new("sleep", &none, 0)
    };
    let mut nodes = Killed(start_nodes(bins, &conn, &run, d)?);
    let cmd = submit_cmd(bins, &url, d, "rate", &["--timeout", "600s"], "10ms", tasks)?;
    let log = d.join("rate.log");
    let done = run_measured(cmd, &log, Duration::from_secs(900))?;
    stop_nodes(&mut nodes.0)?;
    if done.code != 0 {
        bail!(
            "fleet submit under --rate exited {}: {}",
            done.code,
            tail(&std::fs::read_to_string(&log)?)
        );
    }
    let spans = spans(&d.join("rate.out"), tasks)?;
    let starts: Vec<SystemTime> = spans.iter().map(|s| s.0).collect();
    let first = starts.iter().min().context("no start")?;
    let last = starts.iter().max().context("no start")?;
    let span = last.duration_since(*first)?.as_secs_f64();
    let starts_per_s = if span > 0.0 {
        (tasks - 1) as f64 / span
    } else {
        0.0
    };
    Ok(Run {
        tasks: tasks as f64,
        seconds: done.wall,
        tasks_per_s: tasks as f64 / done.wall,
        steady_tasks_per_s: starts_per_s,
        starts_per_s: Some(starts_per_s),
        most_starts_1s: Some(most_starts_within(&starts, Duration::from_secs(1)) as f64),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        let fifty: Vec<f64> = (1..=50).map(f64::from).collect();
        // 99 % of 50 is 49.5: the 50th, the slowest.
        assert_eq!(percentile(&fifty, 0.99), 50.0);
        assert_eq!(percentile(&[7.0], 0.5), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn most_starts_in_a_window_that_opens_at_a_start() {
        let starts: Vec<SystemTime> = [0, 100, 900, 999, 1000, 1500, 1999].map(at).to_vec();
        // [900, 1900) holds 900, 999, 1000, 1500.
        assert_eq!(most_starts_within(&starts, Duration::from_secs(1)), 4);
        assert_eq!(most_starts_within(&[], Duration::from_secs(1)), 0);
        assert_eq!(most_starts_within(&[at(5)], Duration::from_secs(1)), 1);
    }

    #[test]
    fn the_steady_rate_spans_the_middle_of_the_ends() {
        // 101 ends, one every 10 ms: 100 per second.
        let ends: Vec<SystemTime> = (0..=100).map(|i| at(i * 10)).collect();
        let rate = steady_rate(&ends);
        assert!((rate - 101.0).abs() < 1.5, "{rate}");
        assert_eq!(steady_rate(&[at(1)]), 0.0);
        assert_eq!(steady_rate(&[at(1), at(1), at(1)]), 0.0);
    }

    #[test]
    fn waits_count_from_the_submit_and_come_sorted() {
        let spans = [(at(300), at(320)), (at(120), at(140)), (at(50), at(70))];
        assert_eq!(waits_ms(&spans, at(100)), [0.0, 20.0, 200.0]);
    }
}
