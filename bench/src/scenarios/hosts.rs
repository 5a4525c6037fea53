//! fleet with every process on a host of its own: one nats-server on a
//! server host, the nodes spread over 1, 2 or 3 node hosts, `fleet setup`
//! and `fleet submit` on a submitter host. Hosts are Linux network
//! namespaces on one bridge (fleet-testkit's `netns`), so every message
//! crosses two veth pairs and the bridge instead of loopback; they all
//! share this machine's cores, so more hosts add no capacity.
//!
//! Namespaces need root and `ip` (bin/setup installs iproute2):
//! [`hosts_unavailable`] says why they cannot be made, and the bench then
//! reports these rows as not measured, with that reason.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use fleet_testkit::netns::{Host, Net};
use fleet_testkit::{root, tool};

use super::fleet::{setup, start_nodes, submit_measured, Conn, Placement};
use super::{Bins, FleetRun, Run};
use crate::measure::{spawn_logged, tail, wait_for_log};

/// Why network namespaces cannot be made here, from the effective uid
/// (`None`: unknown) and whether `ip` ran (`Err`: what running it said);
/// `None` when they can.
pub fn why_no_namespaces(euid: Option<u32>, ip: Result<(), String>) -> Option<String> {
    let mut why = Vec::new();
    match euid {
        Some(0) => {}
        Some(uid) => why.push(format!("they need root, and this runs as uid {uid}")),
        None => why.push("they need root, and this process's uid is unknown".to_string()),
    }
    if let Err(err) = ip {
        why.push(format!(
            "`ip` does not run ({err}): bin/setup installs iproute2"
        ));
    }
    (!why.is_empty()).then(|| format!("no network namespaces: {}", why.join("; ")))
}

/// The effective uid, from `/proc/self/status` (`Uid: real effective ...`).
fn euid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Why the hosts rows cannot be measured on this machine; `None` when they can.
pub fn hosts_unavailable() -> Option<String> {
    let ip = match std::process::Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        Err(err) => Err(err.to_string()),
    };
    why_no_namespaces(euid(), ip)
}

/// The host names of a network with `node_hosts` node hosts: `srv`,
/// `n1`.., `sub`.
pub fn host_names(node_hosts: usize) -> Vec<String> {
    let mut names = vec!["srv".to_string()];
    names.extend((1..=node_hosts).map(|i| format!("n{i}")));
    names.push("sub".into());
    names
}

/// The order of the runs of round `round` (1-based): 0 is loopback, `k`
/// the nodes on `k` hosts. It turns by one each round, so no contestant is
/// always the first (after the previous section's runs) or the last.
pub fn hosts_order(round: usize) -> [usize; 4] {
    let mut order = [0, 1, 2, 3];
    order.rotate_left(round.saturating_sub(1) % 4);
    order
}

/// Processes killed when dropped, so none outlives its namespace (a
/// process already reaped is left alone: `Child` knows it ended).
pub(super) struct Killed(pub(super) Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// nats-server from `nats.conf` (as every one-server row) on `host`'s
/// address, port 4222, its store and log in `dir`; ready when this returns.
fn start_server(host: &Host, dir: &Path) -> anyhow::Result<Killed> {
    let log = dir.join("server.log");
    let mut cmd = host.command(tool("nats-server"));
    cmd.arg("-c")
        .arg(root().join("nats.conf"))
        .args(["-a", &host.addr.to_string(), "-p", "4222", "-sd"])
        .arg(dir.join("jetstream"))
        .stdout(Stdio::null());
    let mut server = spawn_logged(cmd, &log)?;
    wait_for_log(
        &mut server,
        &log,
        "Server is ready",
        Duration::from_secs(20),
    )
    .context("nats-server on the server host")?;
    Ok(Killed(vec![server]))
}

/// `run` (its nodes, window, input) with the server, the nodes and the
/// submitter on hosts of their own: the nodes spread round robin over
/// `node_hosts` hosts. A fresh network and server every run.
pub fn hosts(bins: &Bins, run: &FleetRun<'_>, node_hosts: usize) -> anyhow::Result<Run> {
    if let Some(why) = hosts_unavailable() {
        anyhow::bail!("not measured: {why}");
    }
    let names = host_names(node_hosts);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    // The kit panics when a namespace cannot be made (its callers are
    // tests); here that is one failed scenario, not the end of the bench.
    let net = std::panic::catch_unwind(AssertUnwindSafe(|| Net::new(&names))).map_err(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        anyhow!(
            "not measured: the network namespaces could not be made: {}",
            tail(&why)
        )
    })?;
    let work = tempfile::Builder::new()
        .prefix("fleet-bench-hosts-")
        .tempdir()?;
    let d = work.path();
    // Dropped before `net`: no process outlives its namespace.
    let server = start_server(net.host("srv"), d)?;
    let conn = Conn::plain(
        format!("nats://{}:4222", net.host("srv").addr),
        Some(Placement {
            client: net.host("sub").clone(),
            nodes: (1..=node_hosts)
                .map(|i| net.host(&format!("n{i}")).clone())
                .collect(),
        }),
    );
    setup(bins, &conn, &[])?;
    let mut nodes = Killed(start_nodes(bins, &conn, run, d)?);
    let server_pid = server.0[0].id();
    let measured = submit_measured(bins, &conn, run, d, server_pid, &mut nodes.0);
    drop(nodes);
    drop(server);
    drop(net);
    measured
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios::fleet::node_host;

    #[test]
    fn namespaces_need_root_and_ip_and_say_which_is_missing() {
        assert_eq!(why_no_namespaces(Some(0), Ok(())), None);
        let user = why_no_namespaces(Some(1000), Ok(())).unwrap();
        assert!(user.contains("root") && user.contains("uid 1000"), "{user}");
        let no_ip = why_no_namespaces(Some(0), Err("No such file".into())).unwrap();
        assert!(
            no_ip.contains("`ip`") && no_ip.contains("iproute2"),
            "{no_ip}"
        );
        assert!(!no_ip.contains("root"), "{no_ip}");
        let both = why_no_namespaces(None, Err("x".into())).unwrap();
        assert!(both.contains("root") && both.contains("`ip`"), "{both}");
    }

    #[test]
    fn nodes_spread_round_robin_over_the_node_hosts() {
        let on = |nodes: usize, hosts: usize| -> Vec<usize> {
            let mut per = vec![0; hosts];
            for i in 1..=nodes {
                per[node_host(i, hosts)] += 1;
            }
            per
        };
        assert_eq!(on(3, 1), [3]);
        assert_eq!(on(3, 2), [2, 1]);
        assert_eq!(on(3, 3), [1, 1, 1]);
        assert_eq!(host_names(2), ["srv", "n1", "n2", "sub"]);
    }

    #[test]
    fn the_order_of_the_runs_turns_with_the_round() {
        assert_eq!(hosts_order(1), [0, 1, 2, 3]);
        assert_eq!(hosts_order(2), [1, 2, 3, 0]);
        assert_eq!(hosts_order(3), [2, 3, 0, 1]);
        assert_eq!(hosts_order(5), [0, 1, 2, 3]);
    }
}
