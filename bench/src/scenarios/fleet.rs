//! fleet's runs: `fleet setup`, nodes, then one `fleet submit` fed a file,
//! on a fresh server of the test kit (`nats.conf`, another config, or the
//! shipped least-privilege `deploy/secure/nats.conf` with its roles,
//! `fleet_testkit::secure`) or on a fresh three-server cluster
//! (`fleet_testkit::cluster`, the shipped deploy/cluster configs); and a
//! node left idle, for its memory.

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use fleet::contract::READY_SIGNAL;
use fleet_testkit::netns::Host;
use fleet_testkit::secure::{Role, Secure};
use fleet_testkit::NatsServer;

use super::{server, Bins, Run, Summary};
use crate::measure::{
    cpu_seconds, kill_measured, run_measured, spawn_logged, tail, wait_for_log, Finished,
};

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
    /// Least privilege: the shipped `deploy/secure/nats.conf` (`conf` is
    /// then ignored), streams made by admin, nodes as the node role (its
    /// inbox prefix), `fleet submit` as this role: admin in the FLEET
    /// account, or a tenant, whose tasks and results cross the imports.
    pub submitter: Option<Role>,
    /// How long the submitter may take.
    pub timeout: Duration,
    /// `fleet limit set` arguments (`echo --concurrency 64`), set after
    /// `fleet setup` and before the nodes start; none: no limit.
    pub limit: &'a [&'a str],
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
            submitter: None,
            timeout: Duration::from_secs(300),
            limit: &[],
        }
    }
}

/// Where the fleet processes connect, as whom, and where they run.
pub(super) struct Conn {
    /// `--server`: one URL, or all of a cluster's.
    urls: String,
    /// Global flags of the operator (`fleet setup`).
    admin: Vec<String>,
    /// Global flags of the submitter.
    submit: Vec<String>,
    /// Global flags of the nodes.
    node: Vec<String>,
    /// Whether nodes run the dev handlers (`sleep`, `fail`) too; not on the
    /// cluster, whose nodes run as deployed.
    dev_builtins: bool,
    /// Hosts (network namespaces) the processes run on; none: this
    /// machine's own network, as every row but the hosts rows.
    hosts: Option<Placement>,
}

/// Which host each process runs on.
pub(super) struct Placement {
    /// `fleet setup` and `fleet submit`.
    pub client: Host,
    /// The node hosts: node `i` (1-based) runs on [`node_host`]`(i, len)`.
    pub nodes: Vec<Host>,
}

impl Conn {
    /// Where `urls` is one server's, with no users, and the nodes run the
    /// dev handlers: the plain runs, on this machine or on `hosts`.
    pub(super) fn plain(urls: String, hosts: Option<Placement>) -> Conn {
        Conn {
            urls,
            admin: Vec::new(),
            submit: Vec::new(),
            node: Vec::new(),
            dev_builtins: true,
            hosts,
        }
    }

    /// `fleet`, on `host` when the processes are placed on hosts.
    fn fleet(&self, bins: &Bins, host: impl Fn(&Placement) -> &Host) -> Command {
        match &self.hosts {
            Some(p) => host(p).command(&bins.fleet),
            None => Command::new(&bins.fleet),
        }
    }
}

/// The index in `hosts` hosts of the host of node `i` (1-based): round
/// robin, so 3 nodes on 2 hosts are 2 and 1.
pub fn node_host(i: usize, hosts: usize) -> usize {
    (i - 1) % hosts.max(1)
}

/// `fleet setup` (plus `extra`): streams and the default group, as an
/// operator makes them once.
pub(super) fn setup(bins: &Bins, conn: &Conn, extra: &[&str]) -> anyhow::Result<()> {
    let out = conn
        .fleet(bins, |p| &p.client)
        .args(["--server", &conn.urls])
        .args(&conn.admin)
        .arg("setup")
        .args(extra)
        .output()?;
    if !out.status.success() {
        bail!(
            "fleet setup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// `fleet limit set ARGS`, as the operator.
pub(super) fn limit_set(bins: &Bins, conn: &Conn, args: &[&str]) -> anyhow::Result<()> {
    let out = conn
        .fleet(bins, |p| &p.client)
        .args(["--server", &conn.urls])
        .args(&conn.admin)
        .args(["limit", "set"])
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!(
            "fleet limit set {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// `run.nodes` nodes, each ready (bound and pulling) when this returns;
/// when one fails, those started are killed.
pub(super) fn start_nodes(
    bins: &Bins,
    conn: &Conn,
    run: &FleetRun<'_>,
    dir: &Path,
) -> anyhow::Result<Vec<Child>> {
    let mut nodes = Vec::new();
    for i in 1..=run.nodes {
        match start_node(bins, conn, run, dir, i) {
            Ok(node) => nodes.push(node),
            Err(err) => {
                for mut node in nodes {
                    let _ = node.kill();
                    let _ = node.wait();
                }
                return Err(err);
            }
        }
    }
    Ok(nodes)
}

/// Node `i` (1-based), ready.
fn start_node(
    bins: &Bins,
    conn: &Conn,
    run: &FleetRun<'_>,
    dir: &Path,
    i: usize,
) -> anyhow::Result<Child> {
    let log = dir.join(format!("node{i}.log"));
    let mut cmd = conn.fleet(bins, |p| &p.nodes[node_host(i, p.nodes.len())]);
    cmd.args(["--server", &conn.urls])
        .args(&conn.node)
        .args(["node", "--name", &format!("node{i}")])
        .args(["--concurrency", &run.concurrency.to_string()])
        .env("RUST_LOG", "info,async_nats=warn");
    if conn.dev_builtins {
        cmd.arg("--dev-builtins");
    }
    let mut node = spawn_logged(cmd, &log)?;
    if let Err(err) = wait_for_log(&mut node, &log, READY_SIGNAL, Duration::from_secs(30)) {
        let _ = node.kill();
        let _ = node.wait();
        return Err(err.context(format!("fleet node{i}")));
    }
    Ok(node)
}

/// Kills the nodes; their CPU seconds (summed) and the largest peak RSS.
pub(super) fn stop_nodes(nodes: &mut [Child]) -> anyhow::Result<(f64, f64)> {
    let (mut cpu, mut rss) = (0.0, 0.0_f64);
    for node in nodes {
        let (c, r) = kill_measured(node)?;
        cpu += c;
        rss = rss.max(r);
    }
    Ok((cpu, rss))
}

/// One `fleet submit` fed `run.input`, to its end; fails unless every task
/// came back ok.
pub(super) fn submit(
    bins: &Bins,
    conn: &Conn,
    run: &FleetRun<'_>,
    dir: &Path,
) -> anyhow::Result<(Finished, Summary)> {
    let summary_path = dir.join("summary.json");
    let mut cmd = conn.fleet(bins, |p| &p.client);
    cmd.args(["--server", &conn.urls])
        .args(&conn.submit)
        .args(["submit", run.kind, "--no-progress"])
        .args(["--window", &run.window.to_string()])
        .arg("--summary-json")
        .arg(&summary_path)
        .stdin(std::fs::File::open(run.input)?)
        .stdout(std::process::Stdio::null());
    if run.ephemeral {
        cmd.arg("--ephemeral");
    }
    let log = dir.join("submit.log");
    let finished = run_measured(cmd, &log, run.timeout)?;
    if finished.code != 0 || !summary_path.exists() {
        bail!(
            "fleet submit {} exited {}: {}",
            run.kind,
            finished.code,
            tail(&std::fs::read_to_string(&log)?)
        );
    }
    let summary = Summary::read(&summary_path, "fleet submit")?;
    if summary.ok != Some(summary.tasks) {
        bail!("fleet submit {}: not every task ok: {summary:?}", run.kind);
    }
    Ok((finished, summary))
}

/// `run.nodes` fleet nodes and one `fleet submit`, on a fresh server: one
/// from `nats.conf` (or `run.conf`) with no users, or, with
/// `run.submitter`, the shipped least-privilege setup with its roles, which
/// fails the run when the server logged a permission violation.
pub fn fleet(bins: &Bins, run: &FleetRun<'_>) -> anyhow::Result<Run> {
    let server = match run.submitter {
        Some(_) => Secure::start().server,
        None => server(run.conf),
    };
    // Under least privilege every process connects as its role; with no
    // users, as nobody.
    let as_role = |role: Role| run.submitter.map(|_| role.flags()).unwrap_or_default();
    let conn = Conn {
        urls: server.url(),
        admin: as_role(Role::Admin),
        submit: run.submitter.map(Role::flags).unwrap_or_default(),
        node: as_role(Role::Node),
        dev_builtins: true,
        hosts: None,
    };
    let d = server.dir.path();
    setup(bins, &conn, &[])?;
    if !run.limit.is_empty() {
        limit_set(bins, &conn, run.limit)?;
    }
    let mut nodes = start_nodes(bins, &conn, run, d)?;
    let server_pid = server.pid().context("the server runs")?;
    let measured = submit_measured(bins, &conn, run, d, server_pid, &mut nodes)?;
    let violations = server.violations();
    if !violations.is_empty() {
        bail!(
            "{} permission violation(s) in the server's log, the first: {}",
            violations.len(),
            violations[0]
        );
    }
    Ok(measured)
}

/// Submits the batch to running `nodes`, then stops them: the run's
/// figures with what the server (`server_pid`), the nodes and the
/// submitter cost.
pub(super) fn submit_measured(
    bins: &Bins,
    conn: &Conn,
    run: &FleetRun<'_>,
    d: &Path,
    server_pid: u32,
    nodes: &mut [Child],
) -> anyhow::Result<Run> {
    let server0 = cpu_seconds(server_pid);
    let submitted = submit(bins, conn, run, d);
    let server_cpu = cpu_seconds(server_pid) - server0;
    let (node_cpu, node_rss) = stop_nodes(nodes)?;
    let (finished, summary) = submitted?;
    Ok(Run {
        node_cpu_s: Some(node_cpu),
        server_cpu_s: Some(server_cpu),
        submit_cpu_s: Some(finished.cpu),
        node_rss_mib: Some(node_rss),
        submit_rss_mib: Some(finished.rss_mib),
        ..summary.run()
    })
}

/// fleet on a fresh three-server cluster as deploy/cluster ships it (TLS,
/// mutual-TLS routes, encryption at rest, `sync_interval: always`, users
/// from accounts.conf): `fleet setup --replicas 3` as admin, `run.nodes`
/// nodes as the node role, `fleet submit` as admin, every process given
/// all three URLs. `run.conf` is ignored: the cluster has its own.
pub fn cluster(bins: &Bins, run: &FleetRun<'_>) -> anyhow::Result<Run> {
    // The test kit panics when a cluster cannot form (its callers are
    // tests); here that is one failed scenario, not the end of the bench.
    let cluster = std::panic::catch_unwind(fleet_testkit::run_cluster).map_err(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        anyhow!("the 3-server cluster did not start: {}", tail(&why))
    })?;
    let conn = Conn {
        urls: cluster.urls(),
        admin: cluster.flags("admin"),
        submit: cluster.flags("admin"),
        node: cluster.flags("node"),
        dev_builtins: false,
        hosts: None,
    };
    let d = cluster.dir.path();
    setup(bins, &conn, &["--replicas", "3"])?;
    let mut nodes = start_nodes(bins, &conn, run, d)?;
    let submitted = submit(bins, &conn, run, d);
    let (node_cpu, node_rss) = stop_nodes(&mut nodes)?;
    let (finished, summary) = submitted.map_err(|err| {
        let logs: String = cluster
            .servers
            .iter()
            .map(|s| format!("\n--- {} ---\n{}", s.name, tail(&s.log_text())))
            .collect();
        err.context(format!("on the cluster; server logs:{logs}"))
    })?;
    Ok(Run {
        node_cpu_s: Some(node_cpu),
        submit_cpu_s: Some(finished.cpu),
        node_rss_mib: Some(node_rss),
        submit_rss_mib: Some(finished.rss_mib),
        ..summary.run()
    })
}

/// Peak RSS of a node that started, bound its group and sat idle for
/// `idle`; then the same for a ceiling worker.
pub fn idle_rss(bins: &Bins, idle: Duration) -> anyhow::Result<Run> {
    let server = NatsServer::start();
    let d = server.dir.path();
    let url = server.url();
    let conn = Conn {
        dev_builtins: false,
        ..Conn::plain(url.clone(), None)
    };
    setup(bins, &conn, &[])?;
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
    wait_for_log(
        &mut worker,
        &log,
        super::loops::CEILING_READY,
        Duration::from_secs(30),
    )?;
    std::thread::sleep(idle);
    let (_, worker_rss) = kill_measured(&mut worker)?;
    Ok(Run {
        node_rss_mib: Some(node_rss),
        worker_rss_mib: Some(worker_rss),
        ..Default::default()
    })
}
