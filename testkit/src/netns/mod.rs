//! A small network of Linux network namespaces on this machine: one host a
//! namespace, each with its own address in `10.77.<net>.0/24`, all plugged
//! into a bridge that lives in a namespace of its own (the "switch"). The
//! test process reaches every host through one more veth pair (the
//! observer, `10.77.<net>.254`), so it can read what the servers kept.
//!
//! A link is cut at the switch (`ip link set <port> down` in the bridge's
//! namespace): the host keeps its address and its sockets, and packets
//! vanish both ways, as when a cable or a switch port fails. Healing sets
//! the port up again; TCP retransmits what was lost.
//!
//! Every network takes a free `<net>` (1 to 250) by creating the claim file
//! `/run/fleet-netns/<net>` holding its pid, so tests can run at once; the
//! namespaces are `fl<net>-<host>` and `fl<net>-sw`. Dropping the network
//! deletes them; a claim whose process is gone (a run killed before its
//! drop) is swept, with its namespaces, by the next network made.
//!
//! Making a network needs root and `ip` (iproute2, installed by bin/setup):
//! without them it panics saying so; a test never skips for lack of them.

mod servers;

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

pub use servers::{fleet_on, node_on, node_with_env, submit_on, NetCluster, NetServer};

/// Where the claims are.
const CLAIMS: &str = "/run/fleet-netns";

/// One host: a network namespace with one interface, `eth0`.
#[derive(Debug, Clone)]
pub struct Host {
    /// Its name in the test (`s1`, `n2`, `submit`).
    pub name: String,
    /// Its namespace.
    pub ns: String,
    /// Its address.
    pub addr: Ipv4Addr,
    /// Its port on the switch (in the bridge's namespace).
    port: String,
}

impl Host {
    /// `program` to be run inside this host's namespace (`ip netns exec`
    /// execs it: the child's pid is the program's own, so signals reach it).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns]).arg(program);
        cmd
    }
}

/// A network of hosts on one switch; deleted when dropped.
#[derive(Debug)]
pub struct Net {
    /// The `<net>` of `10.77.<net>.0/24`.
    pub id: u8,
    /// The hosts, in the order they were asked for.
    pub hosts: Vec<Host>,
    switch: String,
    claim: PathBuf,
}

/// Runs `ip` with `args`; panics with what it said when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` ({e}): run bin/setup (it installs iproute2)"));
    assert!(
        out.status.success(),
        "`ip {}` failed: {}\nnetwork namespaces need root and iproute2",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// The names `ip netns list` shows.
fn namespaces() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` ({e}): run bin/setup (it installs iproute2)"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The `<net>` a namespace name belongs to (`fl12-s1` → 12).
pub fn net_of(ns: &str) -> Option<u8> {
    let rest = ns.strip_prefix("fl")?;
    let (digits, _) = rest.split_once('-')?;
    digits.parse().ok().filter(|n| (1..=250).contains(n))
}

/// Whether process `pid` exists.
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes every namespace of network `id` and the observer's interface.
fn delete_net(id: u8) {
    for ns in namespaces() {
        if net_of(&ns) == Some(id) {
            let _ = Command::new("ip").args(["netns", "delete", &ns]).output();
        }
    }
    // The observer, and veths a run killed mid-setup left here.
    let out = Command::new("ip").args(["-br", "link"]).output();
    let text = out.map(|o| o.stdout).unwrap_or_default();
    let prefix = format!("fl{id}");
    for line in String::from_utf8_lossy(&text).lines() {
        let name = line.split(['@', ' ']).next().unwrap_or_default();
        let rest = name.strip_prefix(&prefix).unwrap_or("0");
        if rest.starts_with(['h', 'p', 'o']) {
            let _ = Command::new("ip").args(["link", "delete", name]).output();
        }
    }
}

/// Sweeps what runs that are gone left: claims of dead processes, and
/// namespaces no claim owns.
fn sweep() {
    let _ = std::fs::create_dir_all(CLAIMS);
    let mut owned = Vec::new();
    for entry in std::fs::read_dir(CLAIMS).into_iter().flatten().flatten() {
        let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u8>().ok())
        else {
            continue;
        };
        let pid = std::fs::read_to_string(entry.path())
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok());
        match pid {
            Some(pid) if alive(pid) => owned.push(id),
            // A claim being written (no pid yet) is left to its writer.
            None => owned.push(id),
            Some(_) => {
                delete_net(id);
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    for ns in namespaces() {
        if let Some(id) = net_of(&ns) {
            if !owned.contains(&id) {
                let _ = Command::new("ip").args(["netns", "delete", &ns]).output();
            }
        }
    }
}

/// Takes a free `<net>`: its claim file, created exclusively.
fn claim() -> (u8, PathBuf) {
    let start = (std::process::id() % 250) as u8;
    for k in 0..250u16 {
        let id = ((u16::from(start) + k) % 250 + 1) as u8;
        let path = Path::new(CLAIMS).join(id.to_string());
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path);
        if let Ok(mut file) = created {
            use std::io::Write;
            file.write_all(std::process::id().to_string().as_bytes())
                .expect("writing a claim");
            // Leftovers no claim owned (a crash between claim and namespaces).
            delete_net(id);
            return (id, path);
        }
    }
    panic!("no free network in {CLAIMS}: 250 claims held by live processes");
}

impl Net {
    /// Makes the switch and one host per name (at most 250), each with
    /// address `10.77.<net>.<i+1>`, all links up, and the observer.
    pub fn new(names: &[&str]) -> Net {
        assert!(names.len() <= 250, "at most 250 hosts");
        sweep();
        let (id, claim_path) = claim();
        let switch = format!("fl{id}-sw");
        let mut net = Net {
            id,
            hosts: Vec::new(),
            switch: switch.clone(),
            claim: claim_path,
        };
        ip(&["netns", "add", &switch]);
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        for (i, name) in names.iter().enumerate() {
            let host = Host {
                name: name.to_string(),
                ns: format!("fl{id}-{name}"),
                addr: Ipv4Addr::new(10, 77, id, i as u8 + 1),
                port: format!("p{i}"),
            };
            let (here, there) = (format!("fl{id}h{i}"), format!("fl{id}p{i}"));
            ip(&["netns", "add", &host.ns]);
            ip(&["link", "add", &here, "type", "veth", "peer", "name", &there]);
            ip(&["link", "set", &here, "netns", &host.ns]);
            ip(&["link", "set", &there, "netns", &switch]);
            ip(&["-n", &host.ns, "link", "set", &here, "name", "eth0"]);
            ip(&["-n", &switch, "link", "set", &there, "name", &host.port]);
            let cidr = format!("{}/24", host.addr);
            ip(&["-n", &host.ns, "addr", "add", &cidr, "dev", "eth0"]);
            ip(&["-n", &host.ns, "link", "set", "lo", "up"]);
            ip(&["-n", &host.ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &switch, "link", "set", &host.port, "master", "br0"]);
            ip(&["-n", &switch, "link", "set", &host.port, "up"]);
            net.hosts.push(host);
        }
        // The observer: the test process's own way in.
        let (obs, obs_port) = (format!("fl{id}obs"), format!("fl{id}o"));
        ip(&[
            "link", "add", &obs, "type", "veth", "peer", "name", &obs_port,
        ]);
        ip(&["link", "set", &obs_port, "netns", &switch]);
        ip(&["-n", &switch, "link", "set", &obs_port, "master", "br0"]);
        ip(&["-n", &switch, "link", "set", &obs_port, "up"]);
        ip(&["addr", "add", &format!("10.77.{id}.254/24"), "dev", &obs]);
        ip(&["link", "set", &obs, "up"]);
        net
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in this network"))
    }

    /// Cuts `name`'s link at the switch: it reaches no one, no one reaches it.
    pub fn cut(&self, name: &str) {
        let port = &self.host(name).port;
        ip(&["-n", &self.switch, "link", "set", port, "down"]);
    }

    /// Restores `name`'s link.
    pub fn heal(&self, name: &str) {
        let port = &self.host(name).port;
        ip(&["-n", &self.switch, "link", "set", port, "up"]);
    }

    /// Whether `name`'s link is up, as the switch sees it.
    pub fn is_up(&self, name: &str) -> bool {
        let port = &self.host(name).port;
        let out = Command::new("ip")
            .args(["-n", &self.switch, "-br", "link", "show", port])
            .output()
            .expect("running ip");
        let text = String::from_utf8_lossy(&out.stdout);
        !text.contains("DOWN")
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        delete_net(self.id);
        let _ = std::fs::remove_file(&self.claim);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names_map_to_their_network() {
        assert_eq!(net_of("fl12-s1"), Some(12));
        assert_eq!(net_of("fl250-sw"), Some(250));
        assert_eq!(net_of("fl0-sw"), None);
        assert_eq!(net_of("fl251-sw"), None);
        assert_eq!(net_of("flx-sw"), None);
        assert_eq!(net_of("other"), None);
        assert_eq!(net_of("fl12"), None);
    }
}
