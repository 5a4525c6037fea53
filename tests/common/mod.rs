//! Shared helpers for the integration tests: a real nats-server per test on a
//! free loopback port with a fresh store, `fleet` processes, and readers of
//! what NATS kept. Nothing here mocks anything.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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

/// The `fleet` binary under test.
pub fn fleet_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fleet"))
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A nats-server of this test's own: `nats.conf`, a free port, a fresh store.
/// Dropping it kills the server and deletes the store.
pub struct NatsServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    extra: Vec<String>,
    /// How many times this server was started (its log is appended to).
    starts: usize,
}

impl NatsServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts with extra command-line flags or a config file of the test's.
    pub fn start_with(extra: &[&str]) -> Self {
        let mut server = NatsServer {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            starts: 0,
        };
        server.spawn();
        server
    }

    /// Starts with `nats.conf` plus `sync_interval: always`.
    pub fn start_sync_always() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("sync.conf");
        let base = std::fs::read_to_string(root().join("nats.conf")).unwrap();
        let conf_text = base.replace("# sync_interval: always", "sync_interval: always");
        std::fs::write(&conf, conf_text).unwrap();
        let mut server = NatsServer {
            port: free_port(),
            dir,
            child: None,
            extra: vec![],
            starts: 0,
        };
        server.extra = vec!["-c".into(), conf.display().to_string()];
        server.spawn();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("jetstream")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn spawn(&mut self) {
        // A free port can be taken by another process before the server
        // binds it; a first start then tries another port. A restart keeps
        // its port (clients are connected there).
        for _ in 0..3 {
            self.spawn_once();
            if self.wait_ready() {
                return;
            }
            assert!(
                self.starts == 1,
                "nats-server lost its port on restart:\n{}",
                self.log_text()
            );
            let _ = self.child.take().map(|mut c| c.wait());
            self.starts = 0;
            self.port = free_port();
            let _ = std::fs::remove_file(self.log());
        }
        panic!("nats-server found no free port in three tries");
    }

    fn spawn_once(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        let mut cmd = Command::new(tool("nats-server"));
        if !self.extra.iter().any(|a| a == "-c") {
            cmd.arg("-c").arg(root().join("nats.conf"));
        }
        cmd.args(&self.extra)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-a")
            .arg("127.0.0.1")
            .arg("-sd")
            .arg(self.store())
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("starting nats-server"));
        self.starts += 1;
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// Waits until the latest start is ready; false if its port was taken.
    fn wait_ready(&mut self) -> bool {
        let start = Instant::now();
        loop {
            let text = self.log_text();
            if text.matches("Server is ready").count() >= self.starts {
                return true;
            }
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            if exited && text.contains("address already in use") {
                return false;
            }
            assert!(
                !exited && start.elapsed() < Duration::from_secs(20),
                "nats-server did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (SIGTERM, then waits).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "TERM");
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends a signal (`KILL`, `TERM`, `STOP`, `CONT`, `INT`) with the real `kill`.
pub fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} failed");
}

/// A `fleet node` process; killed when dropped.
pub struct NodeProc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl NodeProc {
    pub fn spawn(server: &NatsServer, name: &str, args: &[&str]) -> Self {
        let log = server.dir.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(fleet_bin())
            .args(["--nats-url", &server.url(), "node", "--name", name])
            .args(args)
            .env("RUST_LOG", "info,async_nats=warn")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("starting fleet node");
        let node = NodeProc {
            name: name.to_string(),
            child,
            log,
        };
        node.wait_for_log("node ready", Duration::from_secs(30));
        node
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_for_log(&self, needle: &str, limit: Duration) {
        let start = Instant::now();
        while !self.log_text().contains(needle) {
            assert!(
                start.elapsed() < limit,
                "node {} never logged {needle:?}:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: &str) {
        signal(&self.child, sig);
    }

    /// Waits for the process to exit, at most `limit`; returns its status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `fleet` command against `server`, its standard input from `stdin`.
pub fn fleet(server: &NatsServer, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(fleet_bin())
        .args(["--nats-url", &server.url()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting fleet");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    output
}

/// A `fleet submit` started in the background (for killing it mid-batch).
pub fn spawn_submit(
    server: &NatsServer,
    args: &[&str],
    stdin_file: &Path,
    stdout_file: &Path,
) -> Child {
    Command::new(fleet_bin())
        .args(["--nats-url", &server.url(), "submit"])
        .args(args)
        .stdin(std::fs::File::open(stdin_file).unwrap())
        .stdout(std::fs::File::create(stdout_file).unwrap())
        .stderr(std::fs::File::create(stdout_file.with_extension("err")).unwrap())
        .spawn()
        .expect("starting fleet submit")
}

/// Parses `fleet submit --json` output into (id -> line object).
pub fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A runtime for the tests that talk to NATS directly.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Every message of `stream` (subject, headers, payload), read with an
/// ordered consumer from the first.
pub async fn read_stream(url: &str, stream: &str) -> Vec<async_nats::Message> {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut s = js.get_stream(stream).await.unwrap();
    let total = s.info().await.unwrap().state.messages;
    let mut out = Vec::new();
    if total == 0 {
        return out;
    }
    let consumer = s
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    while let Some(msg) = messages.next().await {
        let msg = msg.unwrap();
        let pending = msg.info().unwrap().pending;
        out.push(msg.message.clone());
        if pending == 0 {
            break;
        }
    }
    out
}

/// How many results `RESULTS` keeps for each subject.
pub async fn results_per_subject(url: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for msg in read_stream(url, "RESULTS").await {
        *counts.entry(msg.subject.to_string()).or_insert(0) += 1;
    }
    counts
}

/// A stream's state: message count, first and last sequence.
pub async fn stream_state(url: &str, stream: &str) -> async_nats::jetstream::stream::State {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.get_stream(stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .clone()
}

/// Number of messages in a stream.
pub async fn stream_len(url: &str, stream: &str) -> u64 {
    stream_state(url, stream).await.messages
}

/// Lines `0..n` as submit input: `task-<i>`.
pub fn numbered_lines(n: usize) -> String {
    (0..n).map(|i| format!("task-{i}\n")).collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
pub mod checker;
