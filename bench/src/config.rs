//! How much each scenario does in a full and in a quick run.

use serde::Serialize;

/// Counts of one run of the benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct Counts {
    /// Interleaved rounds of every comparison; the table shows medians.
    pub rounds: usize,
    /// Tasks (apalis: jobs) of the echo window-256 runs with one worker:
    /// fleet, the loop, gopeer and apalis alike.
    pub tput: usize,
    /// Tasks of the window-1 latency runs.
    pub lat: usize,
    /// Tasks of the runs with 2 and 4 nodes.
    pub multi: usize,
    /// Tasks of the run on a 3-server cluster.
    pub cluster: usize,
    /// Tasks of each hosts run: [`HOSTS_NODES`] nodes on 1, 2 and 3 hosts
    /// (network namespaces), and the same on loopback.
    pub hosts: usize,
    /// Tasks of the sha256 64 KiB runs.
    pub sha: usize,
    /// Seconds of sleep-10ms work per run (times the ideal rate).
    pub sleep_s: f64,
    /// Seconds a node sits idle before its RSS is read.
    pub idle_s: f64,
    /// Sleep tasks of the in-flight RSS run.
    pub inflight_tasks: usize,
    /// How long each of those sleeps.
    pub inflight_sleep: &'static str,
    /// Tasks of the big submitter-memory run.
    pub big: usize,
    /// Tasks of the `sync_interval: always` runs.
    pub sync: usize,
    /// Messages of `nats bench`.
    pub nats_bench: usize,
    /// `low` sleep tasks of the priorities flood.
    pub prio_low: usize,
    /// `high` (then `normal`) sleep tasks submitted behind the flood.
    pub prio_high: usize,
    /// Echo tasks of the concurrency-limit runs (with and without).
    pub limit_tasks: usize,
    /// `--rate` of the rate-limit run, starts per second.
    pub rate_per_s: u32,
    /// Sleep tasks of the rate-limit run.
    pub rate_tasks: usize,
}

/// A full run: about ten minutes on 2 cores. 100,000 tasks for the one-node
/// echo comparison, as issue 9 measured it.
pub const FULL: Counts = Counts {
    rounds: 3,
    tput: 100_000,
    lat: 2_000,
    multi: 40_000,
    cluster: 20_000,
    hosts: 60_000,
    sha: 2_000,
    sleep_s: 2.0,
    idle_s: 3.0,
    inflight_tasks: 768,
    inflight_sleep: "1s",
    big: 1_000_000,
    sync: 5_000,
    nats_bench: 100_000,
    prio_low: 5_000,
    prio_high: 50,
    limit_tasks: 5_000,
    rate_per_s: 100,
    rate_tasks: 500,
};

/// A quick run: every scenario with tiny counts, seconds. Proves the
/// benchmark works; measures nothing.
pub const QUICK: Counts = Counts {
    rounds: 1,
    tput: 5_000,
    lat: 100,
    multi: 1_000,
    cluster: 500,
    hosts: 1_000,
    sha: 20,
    sleep_s: 0.2,
    idle_s: 1.0,
    inflight_tasks: 256,
    inflight_sleep: "500ms",
    big: 20_000,
    sync: 300,
    nats_bench: 5_000,
    prio_low: 2_000,
    prio_high: 20,
    limit_tasks: 300,
    rate_per_s: 50,
    rate_tasks: 50,
};

/// Slots per node in the sleep runs.
pub const SLEEP_CONCURRENCY: usize = 64;
/// How long one sleep task takes.
pub const SLEEP_TASK_S: f64 = 0.010;

/// Nodes of the hosts runs, spread over 1, 2 and 3 node hosts.
pub const HOSTS_NODES: usize = 3;

/// Nodes of the priorities runs (the starvation test).
pub const PRIO_NODES: usize = 3;
/// Slots per node in the priorities runs.
pub const PRIO_CONCURRENCY: usize = 8;
/// How long each task of the priorities runs sleeps.
pub const PRIO_SLEEP: &str = "20ms";
/// [`PRIO_SLEEP`] in seconds.
pub const PRIO_SLEEP_S: f64 = 0.020;
/// `fleet limit set echo --concurrency` of the concurrency-limit run: as
/// many permits as the node has slots, so the limit only costs, never binds.
pub const LIMIT_CONCURRENCY: u32 = 64;
/// Nodes of the rate-limit run.
pub const RATE_NODES: usize = 2;
