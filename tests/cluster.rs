//! fleet on a three-server JetStream cluster made from the shipped
//! `deploy/cluster/n*.conf`, run on loopback with real processes: one server
//! is killed mid-batch and nothing is lost or doubled.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const TASKS: usize = 3000;

/// One server of the loopback cluster: its ports, its own directory (store,
/// generated config, log) and its process.
struct ClusterServer {
    name: String,
    port: u16,
    cluster_port: u16,
    http_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl ClusterServer {
    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("server.conf")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "KILL");
            let _ = child.wait();
        }
    }
}

impl Drop for ClusterServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Replaces the one occurrence of `from` in a shipped config; panics when it
/// is not there exactly once, so an edit of the config cannot silently turn
/// this test into a test of something else.
fn replace_once(text: &str, from: &str, to: &str, file: &str) -> String {
    let found = text.matches(from).count();
    assert_eq!(
        found, 1,
        "{file}: expected `{from}` exactly once, found it {found} times"
    );
    text.replacen(from, to, 1)
}

/// `deploy/cluster/n<i>.conf` rewritten for loopback: client, cluster and
/// monitoring ports, route hosts nats1..3, and `store_dir`. Everything else
/// (cluster name, server_name, sync_interval, limits) is used as shipped.
fn loopback_config(i: usize, servers: &[ClusterServer]) -> String {
    let file = format!("deploy/cluster/n{i}.conf");
    let me = &servers[i - 1];
    let mut text = std::fs::read_to_string(root().join(&file))
        .unwrap_or_else(|e| panic!("reading {file}: {e}"));
    assert!(
        text.contains(&format!("server_name: {}", me.name)),
        "{file} does not name its server {}",
        me.name
    );
    assert!(
        text.contains("sync_interval: always"),
        "{file} should fsync before every acknowledgement"
    );
    text = replace_once(
        &text,
        "0.0.0.0:4222",
        &format!("127.0.0.1:{}", me.port),
        &file,
    );
    text = replace_once(
        &text,
        "0.0.0.0:6222",
        &format!("127.0.0.1:{}", me.cluster_port),
        &file,
    );
    text = replace_once(
        &text,
        "0.0.0.0:8222",
        &format!("127.0.0.1:{}", me.http_port),
        &file,
    );
    for (j, other) in servers.iter().enumerate() {
        let route = format!("nats://nats{}:6222", j + 1);
        text = replace_once(
            &text,
            &route,
            &format!("nats://127.0.0.1:{}", other.cluster_port),
            &file,
        );
    }
    let store_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("store_dir:"))
        .unwrap_or_else(|| panic!("{file} has no store_dir"))
        .to_string();
    assert!(
        store_line.contains("/var/lib/nats/"),
        "{file}: store_dir should be under /var/lib/nats: {store_line}"
    );
    let store = me.dir.path().join("jetstream");
    replace_once(
        &text,
        &store_line,
        &format!("  store_dir: \"{}\"", store.display()),
        &file,
    )
}

/// Three servers from the shipped configs, started and formed into a
/// cluster whose JetStream has a meta leader and all three peers current.
/// Ports are picked free, but another process may take one before the
/// server binds it: then the cluster is started again on new ports.
fn start_cluster() -> Vec<ClusterServer> {
    for _ in 0..3 {
        if let Some(servers) = try_start_cluster() {
            return servers;
        }
    }
    panic!("three tries at free ports all clashed with other processes");
}

fn try_start_cluster() -> Option<Vec<ClusterServer>> {
    let mut servers: Vec<ClusterServer> = (1..=3)
        .map(|i| ClusterServer {
            name: format!("nats{i}"),
            port: free_port(),
            cluster_port: free_port(),
            http_port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        })
        .collect();
    for i in 1..=3 {
        let conf = loopback_config(i, &servers);
        std::fs::write(servers[i - 1].conf(), conf).unwrap();
    }
    for server in &mut servers {
        let log = std::fs::File::create(server.log()).unwrap();
        let child = Command::new(tool("nats-server"))
            .arg("-c")
            .arg(server.conf())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting nats-server");
        server.child = Some(child);
    }
    wait_for_meta_leader(&mut servers).then_some(servers)
}

/// A GET on a server's monitoring port, the body parsed as JSON.
fn monitor(server: &ClusterServer, path: &str) -> Option<serde_json::Value> {
    let mut conn = TcpStream::connect(("127.0.0.1", server.http_port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    conn.read_to_string(&mut response).ok()?;
    let (_, body) = response.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

/// Waits until every server names the same JetStream meta leader and the
/// leader sees both other peers as current (followers only track the
/// leader): only then can R3 streams be created.
/// Returns false when a server could not bind its ports.
fn wait_for_meta_leader(servers: &mut [ClusterServer]) -> bool {
    let start = Instant::now();
    loop {
        for server in servers.iter_mut() {
            if let Some(status) = server.child.as_mut().unwrap().try_wait().unwrap() {
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
        let metas: Vec<serde_json::Value> = servers
            .iter()
            .map(|s| {
                monitor(s, "/jsz")
                    .map(|j| j["meta_cluster"].clone())
                    .unwrap_or_default()
            })
            .collect();
        let leader = metas[0]["leader"].as_str().unwrap_or_default();
        let agreed = !leader.is_empty()
            && metas
                .iter()
                .all(|m| m["leader"] == leader && m["cluster_size"] == 3);
        let leader_meta = servers
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
            let logs: String = servers
                .iter()
                .map(|s| format!("--- {} ---\n{}\n", s.name, s.log_text()))
                .collect();
            panic!("the cluster did not form in 30s; meta: {metas:?}\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// All three client URLs, comma-separated, as NATS_URL in deploy/ gives them.
fn all_urls(servers: &[ClusterServer]) -> String {
    servers
        .iter()
        .map(ClusterServer::url)
        .collect::<Vec<_>>()
        .join(",")
}

/// A `fleet node` given every server of the cluster.
fn spawn_node(urls: &str, dir: &Path, name: &str, args: &[&str]) -> NodeProc {
    let log = dir.join(format!("{name}.log"));
    let child = Command::new(fleet_bin())
        .args(["--nats-url", urls, "node", "--name", name])
        .args(args)
        .env("RUST_LOG", "info,async_nats=warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("starting fleet node");
    NodeProc {
        name: name.to_string(),
        child,
        log,
    }
}

/// Waits for "node ready", failing at once (with the log) if the node exits.
fn wait_node_ready(node: &mut NodeProc) {
    let start = Instant::now();
    while !node.log_text().contains("node ready") {
        if let Some(status) = node.child.try_wait().unwrap() {
            panic!(
                "node {} exited ({status}) before it was ready:\n{}",
                node.name,
                node.log_text()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "node {} not ready in 30s:\n{}",
            node.name,
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A stream's info once it answers, has a leader and meets `ready`: right
/// after a server dies, streams whose leader it was answer nothing until
/// their Raft group elects another (4 to 9 s in nats-server).
async fn stream_info_when(
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

/// How many results `RESULTS` keeps per subject, read through `url` with an
/// ordered consumer, like `common::results_per_subject` but retried from
/// scratch on an error: after a server dies, creating even an ephemeral
/// consumer fails until the meta leader is elected again.
async fn kept_per_subject(url: &str, limit: Instant) -> HashMap<String, usize> {
    loop {
        match try_kept_per_subject(url).await {
            Ok(counts) => return counts,
            Err(err) => assert!(
                Instant::now() < limit,
                "reading RESULTS through {url}: {err:#}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn try_kept_per_subject(url: &str) -> anyhow::Result<HashMap<String, usize>> {
    use async_nats::jetstream::consumer::pull::OrderedConfig;
    use futures::StreamExt;
    let js = async_nats::jetstream::new(async_nats::connect(url).await?);
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

/// A child process killed when dropped (the submitter, if the test fails).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Prints the tail of every log (servers, nodes, submit) when the test fails.
struct LogsOnFailure {
    files: Vec<(String, PathBuf)>,
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

/// Proves the shipped deploy/cluster configs form a working three-server
/// JetStream cluster, and that with R3 streams fleet loses and doubles
/// nothing when the TASKS stream leader is SIGKILLed in the middle of a batch.
#[test]
fn three_server_cluster_survives_a_killed_server_mid_batch() {
    let started = Instant::now();
    let mut servers = start_cluster();
    let work = tempfile::tempdir().unwrap();
    let urls = all_urls(&servers);
    let node_args = ["--replicas", "3", "--ack-wait", "3s", "--concurrency", "32"];
    let mut nodes: Vec<NodeProc> = (1..=3)
        .map(|i| spawn_node(&urls, work.path(), &format!("node{i}"), &node_args))
        .collect();
    let out_file = work.path().join("out.jsonl");
    let err_file = work.path().join("out.err");
    let mut files: Vec<(String, PathBuf)> = servers
        .iter()
        .map(|s| (format!("{} {}", s.name, s.url()), s.log()))
        .collect();
    files.extend(nodes.iter().map(|n| (n.name.clone(), n.log.clone())));
    files.push(("submit stderr".into(), err_file.clone()));
    let _logs = LogsOnFailure { files };
    for node in &mut nodes {
        wait_node_ready(node);
    }
    eprintln!("3 nodes ready after {:?}", started.elapsed());

    let rt = rt();
    // --replicas 3 took effect: every stream has three replicas.
    rt.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(servers[0].url()).await.unwrap());
        for name in ["TASKS", "RESULTS", "DEAD"] {
            let info = js
                .get_stream(name)
                .await
                .unwrap()
                .info()
                .await
                .unwrap()
                .clone();
            assert_eq!(
                info.config.num_replicas, 3,
                "{name} was created with {} replicas",
                info.config.num_replicas
            );
        }
    });

    // Distinct payloads, so a result given to the wrong task shows.
    let lines: Vec<String> = (0..TASKS)
        .map(|i| format!("cluster-{i}-{}", &sha256_hex(i.to_string().as_bytes())[..8]))
        .collect();
    let input = work.path().join("input");
    std::fs::write(
        &input,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    let mut submit = KillOnDrop(
        Command::new(fleet_bin())
            .args([
                "--nats-url",
                &urls,
                "submit",
                "echo",
                "--json",
                "--timeout",
                "60s",
            ])
            .stdin(std::fs::File::open(&input).unwrap())
            .stdout(std::fs::File::create(&out_file).unwrap())
            .stderr(std::fs::File::create(&err_file).unwrap())
            .spawn()
            .expect("starting fleet submit"),
    );

    // Mid-batch: once a tenth of the results are in, SIGKILL the server that
    // leads TASKS (a leader election has to happen while tasks flow).
    let count_results = || {
        std::fs::read(&out_file)
            .map(|b| b.iter().filter(|&&c| c == b'\n').count())
            .unwrap_or(0)
    };
    let wait_start = Instant::now();
    while count_results() < TASKS / 10 {
        assert!(
            submit.0.try_wait().unwrap().is_none(),
            "submit ended early: {}",
            std::fs::read_to_string(&err_file).unwrap()
        );
        assert!(
            wait_start.elapsed() < Duration::from_secs(30),
            "no results after 30s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let leader = rt.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(servers[0].url()).await.unwrap());
        let info = stream_info_when(
            &js,
            "TASKS",
            Instant::now() + Duration::from_secs(5),
            |_| true,
        )
        .await;
        info.cluster
            .and_then(|c| c.leader)
            .expect("TASKS has a leader")
    });
    let victim = servers
        .iter()
        .position(|s| s.name == leader)
        .unwrap_or_else(|| panic!("leader {leader:?} is none of ours"));
    servers[victim].kill();
    let done_at_kill = count_results();
    eprintln!(
        "killed {leader} (TASKS leader) with {done_at_kill} of {TASKS} results in, {:?} in",
        started.elapsed()
    );
    let survivor = servers[(victim + 1) % 3].url();
    assert!(
        done_at_kill < TASKS,
        "the batch was over before the kill: the test proves nothing; make it longer"
    );

    // Results in by each second after the kill: shows how long the failover
    // stalled the batch.
    let killed_at = Instant::now();
    let mut timeline = Vec::new();
    let status = loop {
        if let Some(status) = submit.0.try_wait().unwrap() {
            break status;
        }
        if killed_at.elapsed() >= Duration::from_secs(timeline.len() as u64 + 1) {
            timeline.push(count_results());
        }
        // Its --timeout (60s) ends it before this.
        assert!(
            killed_at.elapsed() < Duration::from_secs(90),
            "submit still running 90s after the kill: {timeline:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("results in, by second after the kill: {timeline:?}");
    let submit_err = std::fs::read_to_string(&err_file).unwrap();
    eprintln!(
        "submit exited {status} after {:?}: {}",
        started.elapsed(),
        submit_err.trim()
    );
    assert!(status.success(), "submit exited {status}: {submit_err}");
    // Elections take 4 to 9 s (a second round as much again); a task whose
    // result only turns up at its 60 s deadline means a result was kept but
    // the submitter did not see it until its last look in RESULTS.
    assert!(
        killed_at.elapsed() < Duration::from_secs(40),
        "the batch took {:?} after the kill: a task waited for its --timeout (results by second: {timeline:?})",
        killed_at.elapsed()
    );

    // Every task: exactly one ok result, its own payload echoed.
    let results = json_lines(&std::fs::read(&out_file).unwrap());
    let mut by_task: HashMap<usize, usize> = HashMap::new();
    let mut batch = None;
    let mut redelivered = 0;
    for r in &results {
        assert_eq!(r["status"], "ok", "{r}");
        let id = r["id"].as_str().unwrap();
        let (b, n) = id.rsplit_once('.').unwrap();
        assert_eq!(
            *batch.get_or_insert_with(|| b.to_string()),
            b,
            "two batches in one run: {id}"
        );
        let n: usize = n.parse().unwrap();
        assert!((1..=TASKS).contains(&n), "unknown task {id}");
        assert_eq!(
            r["result"],
            lines[n - 1].as_str(),
            "task {id} got another task's result"
        );
        *by_task.entry(n).or_insert(0) += 1;
        if r["attempt"].as_u64() > Some(1) {
            redelivered += 1;
        }
    }
    let missing: Vec<_> = (1..=TASKS).filter(|n| !by_task.contains_key(n)).collect();
    let doubled: Vec<_> = by_task.iter().filter(|(_, &c)| c > 1).collect();
    assert!(
        missing.is_empty(),
        "{} tasks have no result: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    assert!(
        doubled.is_empty(),
        "tasks printed more than once: {doubled:?}"
    );
    assert_eq!(results.len(), TASKS);
    eprintln!("{TASKS} ok results, {redelivered} from a redelivery");

    // Through a survivor: the queue drains (a task whose ack was lost in the
    // failover runs again after ack_wait, and its second result is fenced),
    // then RESULTS keeps exactly one result per task and nothing went to DEAD.
    let batch = batch.unwrap();
    rt.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(survivor.as_str()).await.unwrap());
        let limit = Instant::now() + Duration::from_secs(30);
        let tasks = stream_info_when(&js, "TASKS", limit, |i| i.state.messages == 0).await;
        let dead = stream_info_when(&js, "DEAD", limit, |_| true).await;
        stream_info_when(&js, "RESULTS", limit, |_| true).await;
        eprintln!(
            "after the batch: TASKS led by {:?}",
            tasks.cluster.and_then(|c| c.leader)
        );
        assert_eq!(dead.state.messages, 0, "tasks were dead-lettered");
        let kept = kept_per_subject(&survivor, limit).await;
        let ours: HashMap<_, _> = kept
            .iter()
            .filter(|(s, _)| s.starts_with(&format!("results.{batch}.")))
            .collect();
        assert_eq!(
            ours.len(),
            TASKS,
            "RESULTS keeps results for {} of {TASKS} tasks",
            ours.len()
        );
        let doubled: Vec<_> = ours.iter().filter(|(_, &&c)| c != 1).collect();
        assert!(
            doubled.is_empty(),
            "RESULTS keeps more than one result for {doubled:?}"
        );
        assert_eq!(
            kept.len(),
            TASKS,
            "RESULTS holds other subjects: {}",
            kept.len()
        );
    });

    // No node died along the way.
    for node in &mut nodes {
        if let Some(status) = node.child.try_wait().unwrap() {
            panic!("node {} exited ({status}):\n{}", node.name, node.log_text());
        }
        assert!(
            !node.log_text().contains("panicked"),
            "node {} panicked:\n{}",
            node.name,
            node.log_text()
        );
    }
    eprintln!("test took {:?}", started.elapsed());
}
