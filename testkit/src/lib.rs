//! fleet's one test harness, used by the integration tests (`tests/`) and by
//! the benchmark (`bench/`): real nats-servers on free loopback ports with
//! fresh stores, three-server clusters from the shipped configs, `fleet`
//! processes, signals, readers of what NATS kept, and the fault checker.
//! Nothing here mocks anything.
//!
//! | module | what |
//! |---|---|
//! | [`auth`] | certificates, nkeys and operator credentials, made per test |
//! | [`server`] | one nats-server of a test's own: start, stop, restart |
//! | [`cluster`] | three servers from `deploy/cluster/n*.conf` on loopback |
//! | [`edge`] | the central cluster and an edge site from `deploy/edge/*.conf`, on hosts of a [`netns`] network |
//! | [`netns`] | hosts as network namespaces on one switch; cutting and healing links; a cluster and `fleet` processes on them |
//! | [`process`] | `fleet node` and `fleet submit` processes |
//! | [`os`] | signals, with the real `kill` |
//! | [`streams`] | what a stream holds, read with an ordered consumer |
//! | [`spans`] | when tasks ran: most at once, most starts in a window |
//! | [`checker`] | classifies every task from what `RESULTS` committed |
//! | [`secure`] | the shipped least-privilege config and its roles |
//! | [`rng`] | a seeded random source whose seed is printed, to replay a run |
//! | [`browser`] | headless Chromium over the DevTools protocol, for pages |
//! | [`http`] | plain HTTP requests to a local address, and Prometheus text read back |
//! | [`toxiproxy`] | Toxiproxy between clients and a server: latency, stalls, resets per link |

pub mod auth;
pub mod browser;
pub mod checker;
pub mod cluster;
pub mod edge;
pub mod http;
pub mod netns;
pub mod os;
pub mod process;
pub mod rng;
pub mod secure;
pub mod server;
pub mod spans;
pub mod streams;
pub mod toxiproxy;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use cluster::{run_cluster, Cluster};
pub use process::{fleet, nats, signal, spawn_submit, KillOnDrop, LogsOnFailure, NodeProc};
pub use server::NatsServer;
pub use streams::{read_stream, results_per_subject, stream_len, stream_state};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives in the repository")
        .to_path_buf()
}

/// A tool from `.tools/bin` (bin/setup) or PATH; panics with what to do.
pub fn tool(name: &str) -> PathBuf {
    let local = root().join(".tools/bin").join(name);
    if local.exists() {
        return local;
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!("{name} not found in .tools/bin or on PATH: run bin/setup");
}

/// The `fleet` binary under test: `FLEET_BIN`, or the one built beside the
/// running executable (`target/<profile>/fleet`, next to `deps/`).
pub fn fleet_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("FLEET_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the running executable");
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join("fleet");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "no fleet binary beside {}: build it (cargo build -p fleet-cli, or bin/test) or set FLEET_BIN",
        exe.display()
    );
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("binding a loopback port")
        .local_addr()
        .expect("a bound address")
        .port()
}

/// A base port `b` such that `b + o` is free on loopback for every offset
/// `o`, for a program that derives its ports from one (`bin/dev`: server,
/// monitoring and each node's metrics). Chosen below the kernel's ephemeral
/// range (32768 and up here), where [`free_port`]'s ports and every
/// outgoing connection's local port live: a derived port there could be
/// taken by a connection between this check and its use.
pub fn free_port_block(offsets: &[u16]) -> u16 {
    let span = offsets.iter().copied().max().unwrap_or(0);
    let low = 10_000u16;
    let high = 32_000u16.saturating_sub(span);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .subsec_nanos();
    let mut pick =
        crate::rng::XorShift::seeded(u64::from(nanos) ^ u64::from(std::process::id()) << 32);
    for _ in 0..1000 {
        let base = low + pick.below(u64::from(high - low)) as u16;
        let free = offsets
            .iter()
            .all(|o| TcpListener::bind(("127.0.0.1", base + o)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no block of free loopback ports at offsets {offsets:?} below {high}");
}

/// A free TCP address on loopback.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Polls `check` every 50 ms until it returns `Some`, and returns that;
/// panics with `what` after `limit`.
pub fn eventually<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads with `read` every 200 ms until `done` holds of what it read, for
/// at most `limit`: `Ok` with that, or `Err` with the last thing read.
/// For a wait that must not fail a test by itself (the caller says what
/// it found).
pub fn poll_until<T>(
    limit: Duration,
    mut read: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> Result<T, T> {
    let deadline = Instant::now() + limit;
    loop {
        let found = read();
        if done(&found) {
            return Ok(found);
        }
        if Instant::now() >= deadline {
            return Err(found);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Bytes as text, lossily.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A runtime for the tests that talk to NATS directly.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Parses `fleet submit --json` output into one value per line.
pub fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

/// Lines `0..n` as submit input: `task-<i>`.
pub fn numbered_lines(n: usize) -> String {
    (0..n).map(|i| format!("task-{i}\n")).collect()
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
