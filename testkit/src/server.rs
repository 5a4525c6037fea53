//! One nats-server of a test's own: `nats.conf` (or a config of the test's),
//! a free loopback port, a fresh store. Dropping it kills the server and
//! deletes the store.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::os::signal;
use crate::{free_port, root, tool};

/// A running nats-server.
#[derive(Debug)]
pub struct NatsServer {
    /// Its client port on 127.0.0.1.
    pub port: u16,
    /// Its monitoring port on 127.0.0.1.
    pub http_port: u16,
    /// Its directory: store, log, and whatever the test puts there.
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    extra: Vec<String>,
    /// How many times this server was started (its log is appended to).
    starts: usize,
}

impl NatsServer {
    /// A server from `nats.conf`.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts with extra command-line flags, or `-c` with a config of the test's.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_in(
            tempfile::tempdir().expect("a temporary directory"),
            extra.iter().map(|s| s.to_string()).collect(),
        )
    }

    /// Starts with a config of the test's: `conf` (nats-server syntax)
    /// written into the server's directory; port and store as always.
    pub fn start_with_conf(conf: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("server.conf");
        std::fs::write(&path, conf).expect("writing a config");
        Self::start_in(dir, vec!["-c".into(), path.display().to_string()])
    }

    /// Rewrites its config (see [`NatsServer::start_with_conf`]) and has
    /// the server reload it (SIGHUP); waits until it has.
    pub fn reload_conf(&mut self, conf: &str) {
        std::fs::write(self.dir.path().join("server.conf"), conf).expect("writing a config");
        let before = self.log_text().matches("Reloaded").count();
        crate::os::signal_pid(self.pid().expect("the server runs"), "HUP");
        let started = Instant::now();
        while self.log_text().matches("Reloaded").count() == before {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the server did not reload:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts with `nats.conf` plus `sync_interval: always`.
    pub fn start_sync_always() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let conf = sync_always_conf(&dir.path().join("sync.conf"));
        Self::start_in(dir, vec!["-c".into(), conf.display().to_string()])
    }

    fn start_in(dir: tempfile::TempDir, extra: Vec<String>) -> Self {
        let mut server = NatsServer {
            port: free_port(),
            http_port: free_port(),
            dir,
            child: None,
            extra,
            starts: 0,
        };
        server.spawn();
        server
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The JetStream store directory.
    pub fn store(&self) -> PathBuf {
        self.dir.path().join("jetstream")
    }

    /// The server's log file.
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// What the server has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// `nats://user:password@127.0.0.1:<port>`.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!("nats://{user}:{password}@127.0.0.1:{}", self.port)
    }

    /// The lines of the server's log that report a permission violation.
    pub fn violations(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains("Violation"))
            .map(str::to_string)
            .collect()
    }

    /// A GET on the monitoring port, the body parsed as JSON.
    pub fn monitor(&self, path: &str) -> Option<serde_json::Value> {
        crate::cluster::http_json(self.http_port, path)
    }

    /// The server's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
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
            self.http_port = free_port();
            let _ = std::fs::remove_file(self.log());
        }
        panic!("nats-server found no free port in three tries");
    }

    fn spawn_once(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .expect("the server's log file");
        let mut cmd = Command::new(tool("nats-server"));
        if !self.extra.iter().any(|a| a == "-c") {
            cmd.arg("-c").arg(root().join("nats.conf"));
        }
        cmd.args(&self.extra)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-a")
            .arg("127.0.0.1")
            .arg("-m")
            .arg(self.http_port.to_string())
            .arg("-sd")
            .arg(self.store())
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("starting nats-server"));
        self.starts += 1;
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

    /// Kills the server (SIGKILL, then waits).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "KILL");
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Stops it, leaves it down for `down`, then starts it again on the
    /// same port and store; ready when this returns.
    pub fn restart_after(&mut self, down: Duration) {
        self.stop();
        std::thread::sleep(down);
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

/// Writes a copy of `nats.conf` with `sync_interval: always` switched on to
/// `dest`, and returns it.
pub fn sync_always_conf(dest: &std::path::Path) -> PathBuf {
    let base = std::fs::read_to_string(root().join("nats.conf")).expect("reading nats.conf");
    assert!(
        base.contains("# sync_interval: always"),
        "nats.conf has no '# sync_interval: always' line to switch on"
    );
    std::fs::write(
        dest,
        base.replace("# sync_interval: always", "sync_interval: always"),
    )
    .expect("writing a config");
    dest.to_path_buf()
}
