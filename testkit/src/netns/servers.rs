//! A three-server JetStream cluster on three hosts of a [`Net`], and `fleet`
//! processes on others. Every server listens on its host's own address with
//! the standard ports (4222 clients, 6222 routes, 8222 monitoring): hosts do
//! not share ports. `sync_interval: always`, so an acknowledged task is on
//! disk; no TLS or accounts (tests/cluster.rs runs the shipped, secured
//! configs): these runs are about the network.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::{Host, Net};
use crate::cluster::http_json_at;
use crate::os::signal;
use crate::process::NodeProc;
use crate::{fleet_bin, tool};

/// One nats-server on a host of its own.
#[derive(Debug)]
pub struct NetServer {
    /// `nats1`..`nats3`: its `server_name`.
    pub name: String,
    /// Its host.
    pub host: Host,
    /// Store, config and log.
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl NetServer {
    /// Starts a server named `name` on `host` with the config `conf` makes
    /// from its store directory; not waited for.
    pub fn launch(host: &Host, name: &str, conf: impl FnOnce(&Path) -> String) -> NetServer {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let text = conf(&dir.path().join("jetstream"));
        std::fs::write(dir.path().join("server.conf"), text).expect("writing a config");
        let mut server = NetServer {
            name: name.to_string(),
            host: host.clone(),
            dir,
            child: None,
        };
        server.spawn();
        server
    }

    /// `nats://<addr>:4222`.
    pub fn url(&self) -> String {
        format!("nats://{}:4222", self.host.addr)
    }

    /// Its log file.
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// What it has logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// A GET on its monitoring port, the body parsed as JSON.
    pub fn monitor(&self, path: &str) -> Option<serde_json::Value> {
        http_json_at((self.host.addr, 8222).into(), path)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .expect("the server's log file");
        let child = self
            .host
            .command(tool("nats-server"))
            .arg("-c")
            .arg(self.dir.path().join("server.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting nats-server in its namespace");
        self.child = Some(child);
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "KILL");
            let _ = child.wait();
        }
    }

    /// Starts it again on its store (after [`NetServer::kill`]).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        self.spawn();
    }

    /// Whether it runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for NetServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The config of server `i` (1-based) of the cluster on `hosts`.
fn config(i: usize, hosts: &[Host], store: &Path) -> String {
    let me = &hosts[i - 1];
    let routes: String = hosts
        .iter()
        .map(|h| format!("    nats-route://{}:6222\n", h.addr))
        .collect();
    format!(
        r#"server_name: nats{i}
listen: {addr}:4222
http: {addr}:8222
max_payload: 1MB
write_deadline: "5s"
# A client or route that stops answering is dropped after about 3 s, not
# 4 minutes: a cut host is noticed while the test runs.
ping_interval: "1s"
ping_max: 2
jetstream {{
  store_dir: "{store}"
  max_memory_store: 256MB
  max_file_store: 10GB
  sync_interval: always
}}
cluster {{
  name: fleet
  listen: {addr}:6222
  routes: [
{routes}  ]
}}
"#,
        addr = me.addr,
        store = store.display(),
    )
}

/// Three servers forming one JetStream cluster, one per host.
#[derive(Debug)]
pub struct NetCluster {
    /// The servers, `nats1`..`nats3`.
    pub servers: Vec<NetServer>,
}

impl NetCluster {
    /// Starts a server on each of `hosts` (three of `net`'s) and waits until
    /// they agree on a JetStream meta leader that sees both others current.
    pub fn start(net: &Net, hosts: &[&str]) -> NetCluster {
        NetCluster::start_with(net, hosts, "nats", config)
    }

    /// [`NetCluster::start`] with servers named `<prefix>1`.. and the config
    /// of server `i` (1-based) made by `config(i, hosts, store)`.
    pub fn start_with(
        net: &Net,
        hosts: &[&str],
        prefix: &str,
        config: impl Fn(usize, &[Host], &Path) -> String,
    ) -> NetCluster {
        let hosts: Vec<Host> = hosts.iter().map(|h| net.host(h).clone()).collect();
        let servers = (1..=hosts.len())
            .map(|i| {
                NetServer::launch(&hosts[i - 1], &format!("{prefix}{i}"), |store| {
                    config(i, &hosts, store)
                })
            })
            .collect();
        let cluster = NetCluster { servers };
        cluster.wait_formed(Duration::from_secs(30));
        cluster
    }

    /// Waits until every running server names the same meta leader, and the
    /// leader sees every other running server as a current peer.
    pub fn wait_formed(&self, limit: Duration) {
        let start = Instant::now();
        loop {
            let running: Vec<&NetServer> = self.servers.iter().filter(|s| s.is_running()).collect();
            let metas: Vec<serde_json::Value> = running
                .iter()
                .map(|s| {
                    s.monitor("/jsz")
                        .map(|j| j["meta_cluster"].clone())
                        .unwrap_or_default()
                })
                .collect();
            let leader = metas[0]["leader"].as_str().unwrap_or_default().to_string();
            let agreed = !leader.is_empty() && metas.iter().all(|m| m["leader"] == *leader);
            let current = running.iter().zip(&metas).any(|(s, m)| {
                s.name == leader
                    && m["replicas"].as_array().is_some_and(|r| {
                        r.iter().filter(|p| p["current"] == true).count() + 1 >= running.len()
                    })
            });
            if agreed && current {
                eprintln!(
                    "cluster formed in {:?}; meta leader {leader}",
                    start.elapsed()
                );
                return;
            }
            if start.elapsed() > limit {
                let logs: String = self
                    .servers
                    .iter()
                    .map(|s| format!("--- {} ---\n{}\n", s.name, s.log_text()))
                    .collect();
                panic!("the cluster did not form in {limit:?}; meta: {metas:?}\n{logs}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every client URL, comma-separated: what clients are given.
    pub fn urls(&self) -> String {
        self.servers
            .iter()
            .map(NetServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The index of the server named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.servers.iter().position(|s| s.name == name)
    }

    /// (what, log file) of every server, for [`crate::LogsOnFailure`].
    pub fn logs(&self) -> Vec<(String, PathBuf)> {
        self.servers
            .iter()
            .map(|s| (format!("{} on {}", s.name, s.host.addr), s.log()))
            .collect()
    }
}

/// A `fleet node` on `host`, connected to `urls`, its log in `dir`; not
/// waited for.
pub fn node_on(host: &Host, urls: &str, dir: &Path, name: &str, args: &[&str]) -> NodeProc {
    node_with_env(host, urls, dir, name, args, &[])
}

/// [`node_on`] with extra environment (credentials).
pub fn node_with_env(
    host: &Host,
    urls: &str,
    dir: &Path,
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> NodeProc {
    NodeProc::start_as(host.command(fleet_bin()), urls, dir, name, args, env)
}

/// A `fleet submit` on `host` against `urls` in the background: standard
/// input from `input`, output to `out` and its `.err` sibling.
pub fn submit_on(host: &Host, urls: &str, args: &[&str], input: &Path, out: &Path) -> Child {
    host.command(fleet_bin())
        .args(["--nats-url", urls, "submit"])
        .args(args)
        .stdin(std::fs::File::open(input).expect("the submit input"))
        .stdout(std::fs::File::create(out).expect("the submit output"))
        .stderr(std::fs::File::create(out.with_extension("err")).expect("the submit stderr"))
        .spawn()
        .expect("starting fleet submit in its namespace")
}

/// A `fleet` command on `host` against `urls`, run to its end.
pub fn fleet_on(host: &Host, urls: &str, args: &[&str]) -> std::process::Output {
    host.command(fleet_bin())
        .args(["--nats-url", urls])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running fleet in its namespace")
}
