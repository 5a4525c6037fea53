//! One measured run each, every one on a nats-server of its own (the test
//! kit's), so no run sees another's streams: the ceiling pair, fleet nodes
//! plus `fleet submit`, an idle node, and the `nats` CLI's own bench.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _};
use fleet::contract::READY_SIGNAL;
use fleet_testkit::{tool, NatsServer};
use serde::Serialize;

use crate::measure::{cpu_seconds, kill_measured, run_measured, spawn_logged, tail, wait_for_log};

/// What `ceiling worker` says once it pulls.
const CEILING_READY: &str = "ceiling worker ready";

/// The binaries under test.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `fleet`.
    pub fleet: PathBuf,
    /// `ceiling`.
    pub ceiling: PathBuf,
}

impl Bins {
    /// The binaries in `dir`; fails when one is missing.
    pub fn in_dir(dir: &Path) -> anyhow::Result<Bins> {
        let bins = Bins {
            fleet: dir.join("fleet"),
            ceiling: dir.join("ceiling"),
        };
        for b in [&bins.fleet, &bins.ceiling] {
            if !b.is_file() {
                bail!(
                    "{} is missing: build with cargo build --release --workspace",
                    b.display()
                );
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
    /// Seconds the submitter measured.
    pub seconds: f64,
    /// tasks / seconds.
    pub tasks_per_s: f64,
    /// Latency percentiles.
    pub latency_us: Latency,
    /// Results that came twice.
    pub duplicates: f64,
    /// CPU seconds of fleet nodes (all of them).
    pub node_cpu_s: Option<f64>,
    /// CPU seconds of the ceiling worker.
    pub worker_cpu_s: Option<f64>,
    /// CPU seconds of the submitter.
    pub submit_cpu_s: Option<f64>,
    /// CPU seconds of nats-server.
    pub server_cpu_s: Option<f64>,
    /// Peak RSS of the largest node, MiB.
    pub node_rss_mib: Option<f64>,
    /// Peak RSS of the ceiling worker, MiB.
    pub worker_rss_mib: Option<f64>,
    /// Peak RSS of the submitter, MiB.
    pub submit_rss_mib: Option<f64>,
    /// `nats bench js pub async`, msgs/s.
    pub js_pub_async: Option<f64>,
    /// `nats bench js consume`, msgs/s.
    pub js_consume: Option<f64>,
}

fn server(conf: Option<&Path>) -> NatsServer {
    match conf {
        Some(conf) => NatsServer::start_with(&["-c", &conf.display().to_string()]),
        None => NatsServer::start(),
    }
}

/// What a ceiling or fleet submitter printed as its summary.
#[derive(Debug, serde::Deserialize)]
struct SubmitSummary {
    tasks: f64,
    seconds: f64,
    latency_us: Latency,
    #[serde(default)]
    ok: Option<f64>,
    #[serde(default)]
    duplicates: f64,
}

/// `ceiling worker` + `ceiling submit`.
#[allow(clippy::too_many_arguments)]
pub fn ceiling(
    bins: &Bins,
    mode: &str,
    tasks: usize,
    window: usize,
    size: usize,
    handler: &str,
    conf: Option<&Path>,
) -> anyhow::Result<Run> {
    let server = server(conf);
    let d = server.dir.path();
    let url = server.url();
    let worker_log = d.join("worker.log");
    let mut worker = Command::new(&bins.ceiling);
    worker.args([
        "--nats-url",
        &url,
        "worker",
        "--mode",
        mode,
        "--handler",
        handler,
    ]);
    let mut worker = spawn_logged(worker, &worker_log)?;
    wait_for_log(
        &mut worker,
        &worker_log,
        CEILING_READY,
        Duration::from_secs(30),
    )
    .context("ceiling worker")?;
    let server_pid = server.pid().context("the server runs")?;
    let server0 = cpu_seconds(server_pid);
    let out = d.join("submit.json");
    let mut submit = Command::new(&bins.ceiling);
    submit
        .args(["--nats-url", &url, "submit", "--mode", mode])
        .args([
            "-n",
            &tasks.to_string(),
            "--window",
            &window.to_string(),
            "--size",
            &size.to_string(),
        ])
        .stdout(std::fs::File::create(&out)?);
    let log = d.join("submit.log");
    let finished = run_measured(submit, &log, Duration::from_secs(300))?;
    if finished.code != 0 {
        bail!(
            "ceiling submit exited {}: {}",
            finished.code,
            tail(&std::fs::read_to_string(&log)?)
        );
    }
    let server_cpu = cpu_seconds(server_pid) - server0;
    let (worker_cpu, worker_rss) = kill_measured(&mut worker)?;
    let summary: SubmitSummary =
        serde_json::from_str(&std::fs::read_to_string(&out)?).context("the ceiling's summary")?;
    Ok(Run {
        tasks: summary.tasks,
        seconds: summary.seconds,
        tasks_per_s: summary.tasks / summary.seconds,
        latency_us: summary.latency_us,
        worker_cpu_s: Some(worker_cpu),
        server_cpu_s: Some(server_cpu),
        submit_cpu_s: Some(finished.cpu),
        worker_rss_mib: Some(worker_rss),
        submit_rss_mib: Some(finished.rss_mib),
        ..Default::default()
    })
}

/// How a fleet run is set up.
#[derive(Debug, Clone)]
pub struct FleetRun<'a> {
    /// Task kind.
    pub kind: &'a str,
    /// Input file, one payload per line.
    pub input: &'a Path,
    /// `--window`.
    pub window: usize,
    /// Node processes.
    pub nodes: usize,
    /// `--concurrency` of each node.
    pub concurrency: usize,
    /// `--ephemeral`.
    pub ephemeral: bool,
    /// A server config other than `nats.conf`.
    pub conf: Option<&'a Path>,
    /// How long the submitter may take.
    pub timeout: Duration,
}

impl<'a> FleetRun<'a> {
    /// `kind` fed `input` with `window`, one node at default flags.
    pub fn new(kind: &'a str, input: &'a Path, window: usize) -> Self {
        FleetRun {
            kind,
            input,
            window,
            nodes: 1,
            concurrency: fleet::contract::DEFAULT_CONCURRENCY,
            ephemeral: false,
            conf: None,
            timeout: Duration::from_secs(300),
        }
    }
}

/// `fleet setup` on `url`: streams and the default group, as an operator
/// makes them once.
fn setup(bins: &Bins, url: &str) -> anyhow::Result<()> {
    let out = Command::new(&bins.fleet)
        .args(["--server", url, "setup"])
        .output()?;
    if !out.status.success() {
        bail!(
            "fleet setup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// `nodes` fleet nodes and one `fleet submit` fed the input on stdin.
pub fn fleet(bins: &Bins, run: &FleetRun<'_>) -> anyhow::Result<Run> {
    let server = server(run.conf);
    let d = server.dir.path();
    let url = server.url();
    setup(bins, &url)?;
    let mut nodes = Vec::new();
    for i in 1..=run.nodes {
        let log = d.join(format!("node{i}.log"));
        let mut cmd = Command::new(&bins.fleet);
        cmd.args([
            "--server",
            &url,
            "node",
            "--name",
            &format!("node{i}"),
            "--dev-builtins",
        ])
        .args(["--concurrency", &run.concurrency.to_string()])
        .env("RUST_LOG", "info,async_nats=warn");
        nodes.push((spawn_logged(cmd, &log)?, log));
    }
    for (node, log) in &mut nodes {
        wait_for_log(node, log, READY_SIGNAL, Duration::from_secs(30)).context("fleet node")?;
    }
    let server_pid = server.pid().context("the server runs")?;
    let server0 = cpu_seconds(server_pid);
    let summary_path = d.join("summary.json");
    let mut submit = Command::new(&bins.fleet);
    submit
        .args([
            "--nats-url",
            &url,
            "submit",
            run.kind,
            "--window",
            &run.window.to_string(),
            "--no-progress",
        ])
        .arg("--summary-json")
        .arg(&summary_path)
        .stdin(std::fs::File::open(run.input)?)
        .stdout(std::process::Stdio::null());
    if run.ephemeral {
        submit.arg("--ephemeral");
    }
    let log = d.join("submit.log");
    let finished = run_measured(submit, &log, run.timeout)?;
    let server_cpu = cpu_seconds(server_pid) - server0;
    let mut node_cpu = 0.0;
    let mut node_rss: f64 = 0.0;
    for (node, _) in &mut nodes {
        let (cpu, rss) = kill_measured(node)?;
        node_cpu += cpu;
        node_rss = node_rss.max(rss);
    }
    if finished.code != 0 || !summary_path.exists() {
        bail!(
            "fleet submit {} exited {}: {}",
            run.kind,
            finished.code,
            tail(&std::fs::read_to_string(&log)?)
        );
    }
    let summary: SubmitSummary = serde_json::from_str(&std::fs::read_to_string(&summary_path)?)?;
    if summary.ok != Some(summary.tasks) || summary.seconds <= 0.0 {
        bail!("fleet submit {}: not every task ok: {summary:?}", run.kind);
    }
    Ok(Run {
        tasks: summary.tasks,
        seconds: summary.seconds,
        tasks_per_s: summary.tasks / summary.seconds,
        latency_us: summary.latency_us,
        duplicates: summary.duplicates,
        node_cpu_s: Some(node_cpu),
        server_cpu_s: Some(server_cpu),
        submit_cpu_s: Some(finished.cpu),
        node_rss_mib: Some(node_rss),
        submit_rss_mib: Some(finished.rss_mib),
        ..Default::default()
    })
}

/// Peak RSS of a node that started, bound its group and sat idle for
/// `idle`; then the same for a ceiling worker.
pub fn idle_rss(bins: &Bins, idle: Duration) -> anyhow::Result<Run> {
    let server = NatsServer::start();
    let d = server.dir.path();
    let url = server.url();
    setup(bins, &url)?;
    let log = d.join("node.log");
    let mut node = Command::new(&bins.fleet);
    node.args(["--server", &url, "node", "--name", "idle"]);
    let mut node = spawn_logged(node, &log)?;
    wait_for_log(&mut node, &log, READY_SIGNAL, Duration::from_secs(30))?;
    std::thread::sleep(idle);
    let (_, node_rss) = kill_measured(&mut node)?;
    let log = d.join("worker.log");
    let mut worker = Command::new(&bins.ceiling);
    worker.args(["--nats-url", &url, "worker"]);
    let mut worker = spawn_logged(worker, &log)?;
    wait_for_log(&mut worker, &log, CEILING_READY, Duration::from_secs(30))?;
    std::thread::sleep(idle);
    let (_, worker_rss) = kill_measured(&mut worker)?;
    Ok(Run {
        node_rss_mib: Some(node_rss),
        worker_rss_mib: Some(worker_rss),
        ..Default::default()
    })
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

/// A file of `count` lines `line(i)` (no newline in them), written in
/// chunks so a million lines never sit in memory; reused when present.
pub fn lines_file(
    dir: &Path,
    name: &str,
    count: usize,
    line: impl Fn(usize) -> Vec<u8>,
) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{name}-{count}.txt"));
    if path.exists() {
        return Ok(path);
    }
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
    for i in 0..count {
        file.write_all(&line(i))?;
        file.write_all(b"\n")?;
    }
    file.flush()?;
    Ok(path)
}

/// 100 bytes of ASCII.
pub fn echo_line(i: usize) -> Vec<u8> {
    let mut line = format!("{i:08}").into_bytes();
    line.resize(100, b'x');
    line
}

/// 64 KiB of hex text, different for every line.
pub fn hex_64k_line(i: usize) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut out = Vec::with_capacity(64 * 1024);
    let mut block = Sha256::digest(i.to_le_bytes()).to_vec();
    while out.len() < 64 * 1024 {
        out.extend_from_slice(hex::encode(&block).as_bytes());
        block = Sha256::digest(&block).to_vec();
    }
    out.truncate(64 * 1024);
    out
}
