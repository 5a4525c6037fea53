//! An edge site and the central cluster it backs onto, each on hosts of
//! their own (a [`Net`] of network namespaces), from the shipped
//! `deploy/edge/central.conf` (the same file on the three central servers)
//! and `deploy/edge/site.conf`. The site's server is a leaf node of the
//! centre with its own JetStream domain; its link to the centre is its
//! host's port on the switch, which the test cuts. Only server names,
//! stores, monitoring addresses, the ping interval, the centre's hosts and
//! certificate paths are rewritten; the certificates are made here.

use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::auth::{certs_for, Certs};
use crate::cluster::config::{replace_n, replace_once};
use crate::netns::{Host, Net, NetCluster, NetServer};
use crate::{eventually, fleet_bin, root};

/// The site's JetStream domain and group in the shipped configs.
pub const SITE: &str = "site1";

/// The hosts of an edge network: the centre's three servers, its two node
/// hosts, and the site (its server, node and submitter on one host).
pub const HOSTS: [&str; 6] = ["s1", "s2", "s3", "n1", "n2", "site"];

/// The servers' ping interval in the test (5 s shipped): both ends of a
/// cut leaf link notice it within about 3 s.
const PING: &str = "ping_interval: \"1s\"";

/// The trial password of a user of the shipped edge configs.
pub fn password(user: &str) -> String {
    format!("{user}-trial-password")
}

/// The central cluster and one edge site linked to it.
#[derive(Debug)]
pub struct Edge {
    /// The centre: `central1`..`central3` on hosts `s1`..`s3`.
    pub central: NetCluster,
    /// The site's server, on host `site`.
    pub site: NetServer,
    /// The certificates of the leaf connection's and the routes' TLS.
    pub certs: Certs,
    _certs_dir: tempfile::TempDir,
    /// The hosts; dropped last (after the servers).
    pub net: Net,
}

fn shipped(file: &str) -> String {
    std::fs::read_to_string(root().join(file)).unwrap_or_else(|e| panic!("reading {file}: {e}"))
}

/// The rewrites every server's config gets: its store, its monitoring on
/// its host's address (the test reads it), the test's ping interval and
/// certificates.
fn common(mut text: String, file: &str, host: &Host, store: &Path, certs: &Certs) -> String {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("store_dir: /var/lib/nats/"))
        .unwrap_or_else(|| panic!("{file} has no store_dir under /var/lib/nats"))
        .to_string();
    let store = format!("  store_dir: \"{}\"", store.display());
    text = replace_once(&text, &line, &store, file);
    let http = format!("http: {}:8222", host.addr);
    text = replace_once(&text, "http: 127.0.0.1:8222", &http, file);
    text = replace_once(&text, "ping_interval: \"5s\"", PING, file);
    for (from, to) in [
        ("/etc/nats/tls/ca.pem", &certs.ca),
        ("/etc/nats/tls/server.pem", &certs.server_cert),
        ("/etc/nats/tls/server-key.pem", &certs.server_key),
    ] {
        let n = text.matches(from).count();
        text = replace_n(&text, from, &to.display().to_string(), n, file);
    }
    text
}

/// `central.conf` as server `i` of the centre on `hosts`.
fn central_conf(i: usize, hosts: &[Host], store: &Path, certs: &Certs) -> String {
    let file = "deploy/edge/central.conf";
    let mut text = shipped(file);
    for needle in ["domain: central", "account: FLEET", "0.0.0.0:7422"] {
        assert!(text.contains(needle), "{file} lacks {needle}");
    }
    let name = format!("server_name: central{i}");
    text = replace_once(&text, "server_name: central1", &name, file);
    for (k, host) in hosts.iter().enumerate() {
        let route = format!("nats-route://central{}:6222", k + 1);
        let to = format!("nats-route://{}:6222", host.addr);
        text = replace_once(&text, &route, &to, file);
    }
    common(text, file, &hosts[i - 1], store, certs)
}

/// `site.conf` on `host`, its remote pointing at the centre's `hosts`.
fn site_conf(host: &Host, central: &[Host], store: &Path, certs: &Certs) -> String {
    let file = "deploy/edge/site.conf";
    let mut text = shipped(file);
    assert!(
        text.contains(&format!("domain: {SITE}")),
        "{file}: the site's own domain"
    );
    for (k, server) in central.iter().enumerate() {
        let from = format!("@central{}:7422", k + 1);
        let to = format!("@{}:7422", server.addr);
        text = replace_once(&text, &from, &to, file);
    }
    common(text, file, host, store, certs)
}

/// How many leaf connections a server's monitoring lists.
fn leafs(page: Option<serde_json::Value>) -> u64 {
    page.and_then(|v| v["leafnodes"].as_u64()).unwrap_or(0)
}

impl Edge {
    /// Makes the hosts, starts the centre and the site; returns once the
    /// site's leaf connection is up.
    pub fn start() -> Self {
        let net = Net::new(&HOSTS);
        let dir = tempfile::tempdir().expect("a directory for certificates");
        let central_ips: Vec<IpAddr> = ["s1", "s2", "s3"]
            .iter()
            .map(|h| net.host(h).addr.into())
            .collect();
        let certs = certs_for(dir.path(), &central_ips);
        let central =
            NetCluster::start_with(&net, &["s1", "s2", "s3"], "central", |i, hosts, store| {
                central_conf(i, hosts, store, &certs)
            });
        let hosts: Vec<Host> = central.servers.iter().map(|s| s.host.clone()).collect();
        let site = NetServer::launch(net.host("site"), SITE, |store| {
            site_conf(net.host("site"), &hosts, store, &certs)
        });
        let edge = Edge {
            central,
            site,
            certs,
            _certs_dir: dir,
            net,
        };
        edge.wait_linked(true, Duration::from_secs(20));
        edge
    }

    /// Leaf connections the centre's servers list, all together.
    fn central_leafs(&self) -> u64 {
        self.central
            .servers
            .iter()
            .map(|s| leafs(s.monitor("/leafz")))
            .sum()
    }

    /// Leaf connections the site lists, asked from inside its host (so
    /// its answer comes with the link cut too).
    fn site_leafs(&self) -> u64 {
        let url = format!("http://{}:8222/leafz", self.site.host.addr);
        let out = self
            .site
            .host
            .command("curl")
            .args(["-sf", "--max-time", "2", &url])
            .output()
            .expect("running ip netns exec");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("exec of"),
            "cannot run curl in the site's namespace ({}): install curl",
            err.trim()
        );
        leafs(serde_json::from_slice(&out.stdout).ok())
    }

    /// Whether the site's leaf connection to the centre is up, as both
    /// sides' monitoring says.
    pub fn linked(&self) -> bool {
        self.central_leafs() == 1 && self.site_leafs() == 1
    }

    /// Waits until the leaf connection is `up` (or down on both sides).
    pub fn wait_linked(&self, up: bool, limit: Duration) {
        let what = if up {
            "the leaf link up on both sides"
        } else {
            "the leaf link dropped by both sides"
        };
        eventually(limit, what, || {
            let done = if up {
                self.linked()
            } else {
                self.central_leafs() == 0 && self.site_leafs() == 0
            };
            done.then_some(())
        });
    }

    /// Cuts the site host's port on the switch: the leaf connection dies
    /// without a word (no FIN, no RST), as when a cable fails.
    pub fn cut(&self) {
        self.net.cut("site");
    }

    /// Waits until both ends have closed the dead leaf connection (their
    /// pings unanswered), so nothing sent into it arrives after a heal.
    pub fn wait_dropped(&self) {
        self.wait_linked(false, Duration::from_secs(15));
    }

    /// Restores the site's port and waits until the leaf connection is back.
    pub fn restore(&self) {
        self.net.heal("site");
        self.wait_linked(true, Duration::from_secs(20));
    }

    /// Whether the site's port is up.
    pub fn is_cut(&self) -> bool {
        !self.net.is_up("site")
    }

    /// `nats://<user>:<password>@` the site.
    pub fn site_url_as(&self, user: &str) -> String {
        format!(
            "nats://{user}:{}@{}:4222",
            password(user),
            self.site.host.addr
        )
    }

    /// The centre's three URLs (no credentials).
    pub fn central_urls(&self) -> String {
        self.central.urls()
    }

    /// `fleet` run on the site's host as `user`, `input` on its standard
    /// input (reaches the site with the link cut too).
    pub fn fleet_at_site(&self, user: &str, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self
            .site
            .host
            .command(fleet_bin())
            .args(["--nats-url", &self.site_url_as(user)])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running fleet on the site's host");
        let mut stdin = child.stdin.take().expect("its standard input");
        stdin.write_all(input).expect("writing its input");
        drop(stdin);
        child.wait_with_output().expect("waiting for fleet")
    }

    /// `fleet` run here (through the observer) against the centre as `user`.
    pub fn fleet_at_centre(&self, user: &str, args: &[&str]) -> Output {
        let urls: Vec<String> = self
            .central
            .servers
            .iter()
            .map(|s| format!("nats://{}:4222", s.host.addr))
            .collect();
        Command::new(fleet_bin())
            .args(["--nats-url", &urls.join(",")])
            .args(["--user", user, "--password", &password(user)])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running fleet")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shipped_site_never_lets_its_queue_or_results_cross() {
        let site = super::shipped("deploy/edge/site.conf");
        // The list from its key to its closing bracket (it may wrap).
        let deny = |key: &str| {
            let at = site
                .find(key)
                .unwrap_or_else(|| panic!("site.conf has no {key}"));
            let list = &site[at..];
            list[..=list.find(']').expect("a closed list")].to_string()
        };
        let (imports, exports) = (deny("deny_imports:"), deny("deny_exports:"));
        for subject in [
            "tasks.>",
            "tasks-high.>",
            "tasks-low.>",
            "results.>",
            "dead.>",
            "$KV.>",
            "$JS.ACK.TASKS.workers.>",
            "$JS.ACK.TASKS.workers-high.>",
            "$JS.ACK.TASKS.workers-low.>",
        ] {
            let quoted = format!("\"{subject}\"");
            assert!(imports.contains(&quoted), "{subject} comes in: {imports}");
            assert!(exports.contains(&quoted), "{subject} goes out: {exports}");
        }
        assert!(site.contains("\"edge.site1.results.>\": \"results.>\""));
    }
}
