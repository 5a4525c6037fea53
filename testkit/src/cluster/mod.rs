//! A three-server JetStream cluster made from the shipped
//! `deploy/cluster/n*.conf` and `accounts.conf`, on loopback: only ports,
//! route hosts, store directories and file paths are rewritten, and the
//! secrets an operator makes (TLS certificates, password hashes, the
//! encryption key) are made here. So the test runs what users deploy:
//! clients over TLS as users of accounts.conf, routes over mutual TLS,
//! streams encrypted at rest.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::pull::OrderedConfig;
use futures::StreamExt;

pub(crate) mod config;

use config::{accounts_conf, loopback_config, JS_KEY};
pub use config::{password, USERS};

use crate::auth::Certs;
use crate::os::signal;
use crate::{free_port, tool};

/// One server of the loopback cluster.
#[derive(Debug)]
pub struct ClusterServer {
    /// `nats1`, `nats2`, `nats3`.
    pub name: String,
    /// Client port.
    pub port: u16,
    /// Route port.
    pub cluster_port: u16,
    /// Monitoring port.
    pub http_port: u16,
    /// Store, generated config, log.
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl ClusterServer {
    /// Its client URL (TLS).
    pub fn url(&self) -> String {
        format!("tls://127.0.0.1:{}", self.port)
    }

    /// Its generated config.
    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("server.conf")
    }

    /// Its log file.
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// What it has logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .expect("the server's log file");
        let child = Command::new(tool("nats-server"))
            .arg("-c")
            .arg(self.conf())
            .env("FLEET_JS_KEY", JS_KEY)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting nats-server");
        self.child = Some(child);
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "KILL");
            let _ = child.wait();
        }
    }

    /// Whether it runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// A GET on its monitoring port, the body parsed as JSON.
    pub fn monitor(&self, path: &str) -> Option<serde_json::Value> {
        http_json(self.http_port, path)
    }
}

/// A GET on `127.0.0.1:<port><path>`, the body parsed as JSON.
pub fn http_json(port: u16, path: &str) -> Option<serde_json::Value> {
    http_json_at(std::net::SocketAddr::from(([127, 0, 0, 1], port)), path)
}

/// A GET on `<addr><path>`, the body parsed as JSON.
pub fn http_json_at(addr: std::net::SocketAddr, path: &str) -> Option<serde_json::Value> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", addr.ip()).ok()?;
    let mut response = String::new();
    conn.read_to_string(&mut response).ok()?;
    let (_, body) = response.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

impl Drop for ClusterServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Three servers forming one JetStream cluster.
#[derive(Debug)]
pub struct Cluster {
    /// The servers, `nats1` to `nats3`.
    pub servers: Vec<ClusterServer>,
    /// The CA, server and client certificates.
    pub certs: Certs,
    /// Where the certificates and the accounts file are.
    pub dir: tempfile::TempDir,
}

/// Starts the shipped cluster on loopback and waits until it has a JetStream
/// meta leader with both other peers current: only then can R3 streams be
/// made. Ports are picked free, but another process may take one before
/// the server binds it: then the cluster is started again on new ports.
pub fn run_cluster() -> Cluster {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let certs = crate::auth::certs(dir.path());
    let accounts = accounts_conf();
    let mut cluster = Cluster {
        servers: Vec::new(),
        certs,
        dir,
    };
    for _ in 0..3 {
        if try_start(&mut cluster, &accounts) {
            return cluster;
        }
    }
    panic!("three tries at free ports all clashed with other processes");
}

impl Cluster {
    /// The global `fleet` (and `nats`) flags that connect as `user` of
    /// accounts.conf over TLS (with the inbox prefix its permissions allow).
    pub fn flags(&self, user: &str) -> Vec<String> {
        let mut flags = vec![
            "--tlsca".to_string(),
            self.certs.ca.display().to_string(),
            "--user".into(),
            user.into(),
            "--password".into(),
            password(user),
        ];
        if matches!(user, "node" | "reader") {
            flags.extend(["--inbox-prefix".into(), format!("_INBOX_{user}")]);
        }
        flags
    }

    /// An async-nats client as `user`, connected to server `i`.
    pub async fn client(&self, i: usize, user: &str) -> async_nats::Client {
        async_nats::ConnectOptions::with_user_and_password(user.into(), password(user))
            .add_root_certificates(self.certs.ca.clone())
            .require_tls(true)
            .connect(self.servers[i].url())
            .await
            .expect("connecting to the cluster")
    }

    /// All client URLs, comma-separated, as `NATS_URL` in deploy/ gives them.
    pub fn urls(&self) -> String {
        self.servers
            .iter()
            .map(ClusterServer::url)
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
            .map(|s| (format!("{} {}", s.name, s.url()), s.log()))
            .collect()
    }
}

/// Starts three servers into `cluster`; false when one could not bind its ports.
fn try_start(cluster: &mut Cluster, accounts: &str) -> bool {
    let mut servers: Vec<ClusterServer> = (1..=3)
        .map(|i| ClusterServer {
            name: format!("nats{i}"),
            port: free_port(),
            cluster_port: free_port(),
            http_port: free_port(),
            dir: tempfile::tempdir().expect("a temporary directory"),
            child: None,
        })
        .collect();
    for i in 1..=3 {
        let conf = loopback_config(i, &servers, &cluster.certs);
        std::fs::write(servers[i - 1].conf(), conf).expect("writing a config");
        std::fs::write(servers[i - 1].dir.path().join("accounts.conf"), accounts)
            .expect("writing accounts.conf");
    }
    for server in &mut servers {
        server.spawn();
    }
    cluster.servers = servers;
    wait_for_meta_leader(cluster)
}

/// Waits until every server names the same JetStream meta leader and the
/// leader sees both other peers as current. False when a server could not
/// bind its ports.
fn wait_for_meta_leader(cluster: &mut Cluster) -> bool {
    let start = Instant::now();
    loop {
        for server in cluster.servers.iter_mut() {
            if let Some(status) = server
                .child
                .as_mut()
                .expect("started")
                .try_wait()
                .expect("polling")
            {
                if server.log_text().contains("address already in use") {
                    return false;
                }
                panic!(
                    "{} exited ({status}) while starting:\n{}",
                    server.name,
                    server.log_text()
                );
            }
        }
        let metas: Vec<serde_json::Value> = cluster
            .servers
            .iter()
            .map(|s| {
                s.monitor("/jsz")
                    .map(|j| j["meta_cluster"].clone())
                    .unwrap_or_default()
            })
            .collect();
        let leader = metas[0]["leader"].as_str().unwrap_or_default();
        let agreed = !leader.is_empty()
            && metas
                .iter()
                .all(|m| m["leader"] == leader && m["cluster_size"] == 3);
        let leader_meta = cluster
            .servers
            .iter()
            .zip(&metas)
            .find(|(s, _)| s.name == leader)
            .map(|(_, m)| m);
        let peers_current = leader_meta.is_some_and(|m| {
            let replicas = m["replicas"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            replicas.len() == 2
                && replicas
                    .iter()
                    .all(|r| r["current"] == true && r["offline"] != true)
        });
        if agreed && peers_current {
            eprintln!(
                "cluster formed in {:?}; meta leader {leader}",
                start.elapsed()
            );
            return true;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let logs: String = cluster
                .servers
                .iter()
                .map(|s| format!("--- {} ---\n{}\n", s.name, s.log_text()))
                .collect();
            panic!("the cluster did not form in 30s; meta: {metas:?}\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A stream's info once it answers, has a leader and meets `ready`: right
/// after a server dies, streams whose leader it was answer nothing until
/// their Raft group elects another (4 to 9 s in nats-server).
pub async fn stream_info_when(
    js: &async_nats::jetstream::Context,
    name: &str,
    limit: Instant,
    ready: impl Fn(&async_nats::jetstream::stream::Info) -> bool,
) -> async_nats::jetstream::stream::Info {
    loop {
        let last = match js.get_stream(name).await {
            Ok(mut stream) => match stream.info().await {
                Ok(info) => {
                    let has_leader = info.cluster.as_ref().is_some_and(|c| c.leader.is_some());
                    if has_leader && ready(info) {
                        return info.clone();
                    }
                    format!(
                        "{} messages, cluster {:?}",
                        info.state.messages, info.cluster
                    )
                }
                Err(err) => err.to_string(),
            },
            Err(err) => err.to_string(),
        };
        assert!(
            Instant::now() < limit,
            "stream {name} not ready in time: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many results `RESULTS` keeps per subject, read as admin through
/// server `i`, retried from scratch on an error: after a server dies,
/// creating even an ordered consumer fails until the meta leader is elected
/// again.
pub async fn kept_per_subject(
    cluster: &Cluster,
    i: usize,
    limit: Instant,
) -> HashMap<String, usize> {
    loop {
        match try_kept_per_subject(cluster.client(i, "admin").await).await {
            Ok(counts) => return counts,
            Err(err) => assert!(
                Instant::now() < limit,
                "reading RESULTS through {}: {err:#}",
                cluster.servers[i].name
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn try_kept_per_subject(
    client: async_nats::Client,
) -> anyhow::Result<HashMap<String, usize>> {
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("RESULTS").await?;
    let mut counts = HashMap::new();
    if stream.info().await?.state.messages == 0 {
        return Ok(counts);
    }
    let mut messages = stream
        .create_consumer(OrderedConfig::default())
        .await?
        .messages()
        .await?;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the ordered consumer ended"))??;
        *counts.entry(msg.subject.to_string()).or_insert(0) += 1;
        if msg.info().map_err(|e| anyhow::anyhow!("{e}"))?.pending == 0 {
            return Ok(counts);
        }
    }
}
