//! `fleet` processes: nodes, one-shot commands, background submitters; and
//! the real `kill` for signals.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use fleet::contract::READY_SIGNAL;

pub use crate::os::{signal, signal_pid};
use crate::server::NatsServer;
use crate::{fleet_bin, tool};

/// A `fleet node` process; killed when dropped.
#[derive(Debug)]
pub struct NodeProc {
    /// Its `--name`.
    pub name: String,
    /// The process.
    pub child: Child,
    /// Its standard error.
    pub log: PathBuf,
}

impl NodeProc {
    /// A node of a development fleet against `server` (`--create
    /// --dev-builtins`: it makes the streams and its group when missing, and
    /// runs `sleep` and `fail`), ready (bound and pulling) when this returns.
    pub fn spawn(server: &NatsServer, name: &str, args: &[&str]) -> Self {
        let mut all = vec!["--create", "--dev-builtins"];
        all.extend_from_slice(args);
        let mut node = Self::start(&server.url(), server.dir.path(), name, &all, &[]);
        node.wait_ready(Duration::from_secs(30));
        node
    }

    /// Starts a node against `urls` (comma-separated) with its log in `dir`
    /// and extra environment; does not wait for it to be ready.
    pub fn start(urls: &str, dir: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_as(Command::new(fleet_bin()), urls, dir, name, args, env)
    }

    /// [`NodeProc::start`] with `command` as the `fleet` to run (one run
    /// in a network namespace, say); not waited for.
    pub fn start_as(
        mut command: Command,
        urls: &str,
        dir: &Path,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("the node's log file");
        let child = command
            .args(["--nats-url", urls, "node", "--name", name])
            .args(args)
            .env("RUST_LOG", "info,async_nats=warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("starting fleet node");
        NodeProc {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// What the node has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the node says it is ready; panics (with its log) if it
    /// exits first or takes longer than `limit`.
    pub fn wait_ready(&mut self, limit: Duration) {
        self.wait_for_log(READY_SIGNAL, limit);
    }

    /// Waits until the log contains `needle`; panics (with the log) if the
    /// node exits first or `limit` passes.
    pub fn wait_for_log(&mut self, needle: &str, limit: Duration) {
        let start = Instant::now();
        while !self.log_text().contains(needle) {
            if let Some(status) = self.child.try_wait().expect("polling the node") {
                panic!(
                    "node {} exited ({status}) before logging {needle:?}:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            assert!(
                start.elapsed() < limit,
                "node {} never logged {needle:?} in {limit:?}:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal to the node.
    pub fn signal(&self, sig: &str) {
        signal(&self.child, sig);
    }

    /// Waits for the process to exit, at most `limit`; returns its status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("polling the node") {
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
    fleet_at(&server.url(), args, stdin)
}

/// The real `nats` CLI against `server`, run to its end.
pub fn nats(server: &NatsServer, args: &[&str]) -> Output {
    Command::new(tool("nats"))
        .args(["--server", &server.url()])
        .args(args)
        .output()
        .expect("running nats")
}

/// A `fleet` command against `urls`, its standard input from `stdin`.
pub fn fleet_at(urls: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(fleet_bin())
        .args(["--nats-url", urls])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting fleet");
    let mut input = child.stdin.take().expect("stdin is piped");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let output = child.wait_with_output().expect("waiting for fleet");
    writer.join().expect("the stdin writer");
    output
}

/// A `fleet submit` started in the background (for killing it mid-batch):
/// standard input from `stdin_file`, output to `stdout_file` and its
/// `.err` sibling.
pub fn spawn_submit(
    server: &NatsServer,
    args: &[&str],
    stdin_file: &Path,
    stdout_file: &Path,
) -> Child {
    spawn_submit_at(&server.url(), args, stdin_file, stdout_file)
}

/// [`spawn_submit`] against `urls`.
pub fn spawn_submit_at(urls: &str, args: &[&str], stdin_file: &Path, stdout_file: &Path) -> Child {
    Command::new(fleet_bin())
        .args(["--nats-url", urls, "submit"])
        .args(args)
        .stdin(std::fs::File::open(stdin_file).expect("the submit input"))
        .stdout(std::fs::File::create(stdout_file).expect("the submit output"))
        .stderr(
            std::fs::File::create(stdout_file.with_extension("err")).expect("the submit stderr"),
        )
        .spawn()
        .expect("starting fleet submit")
}

/// A child process killed when dropped (a submitter, if the test fails).
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Prints the tail of every log (servers, nodes, submit) when the test fails.
#[derive(Debug, Default)]
pub struct LogsOnFailure {
    /// (what, file) pairs.
    pub files: Vec<(String, PathBuf)>,
}

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (what, file) in &self.files {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            eprintln!("===== {what}: {} =====\n{tail}", file.display());
        }
    }
}

/// Runs `cmd` (its output piped) to its end, or kills it after `limit`;
/// returns what it printed either way (a killed process has no exit code).
pub fn output_within(mut cmd: Command, limit: Duration) -> Output {
    use std::io::Read;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting a command");
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let out = read(Box::new(child.stdout.take().expect("piped")));
    let err = read(Box::new(child.stderr.take().expect("piped")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("polling a command") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            break child.wait().expect("reaping a command");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}
