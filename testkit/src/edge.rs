//! An edge site on loopback, from the shipped `deploy/edge/central.conf`
//! and `deploy/edge/site.conf`: a central server with its leaf-node
//! listener (TLS, the site's own user), and a site server with its own
//! JetStream domain connected to it as a leaf node through a [`TcpLink`]
//! the test can cut. Only ports, paths, stores and the centre's address
//! are rewritten; the certificates are made here.

use std::net::SocketAddr;
use std::time::Duration;

use crate::auth::{certs, Certs};
use crate::cluster::config::replace_once;
use crate::link::{Link, TcpLink};
use crate::{eventually, free_port, root, NatsServer};

/// The site's JetStream domain and group in the shipped configs.
pub const SITE: &str = "site1";

/// The trial password of a user of the shipped edge configs.
pub fn password(user: &str) -> String {
    format!("{user}-trial-password")
}

/// A central server and one edge site linked to it.
#[derive(Debug)]
pub struct Edge {
    /// The centre (`deploy/edge/central.conf`).
    pub central: NatsServer,
    /// The site (`deploy/edge/site.conf`).
    pub site: NatsServer,
    /// The leaf connection's path from the site to the centre.
    pub link: TcpLink,
    /// The certificates of the leaf connection's TLS.
    pub certs: Certs,
    _certs_dir: tempfile::TempDir,
}

fn shipped(file: &str) -> String {
    std::fs::read_to_string(root().join(file)).unwrap_or_else(|e| panic!("reading {file}: {e}"))
}

/// `text` with the test's certificates, and without its `store_dir` (the
/// test's server is given its own store on the command line).
fn with_certs(mut text: String, certs: &Certs, file: &str, all: bool) -> String {
    let store = text
        .lines()
        .find(|l| l.trim_start().starts_with("store_dir: /var/lib/nats/"))
        .unwrap_or_else(|| panic!("{file} has no store_dir under /var/lib/nats"))
        .to_string();
    text = replace_once(&text, &store, "  # store_dir: the test's (-sd)", file);
    let mut files = vec![("/etc/nats/tls/ca.pem", &certs.ca)];
    if all {
        files.push(("/etc/nats/tls/server.pem", &certs.server_cert));
        files.push(("/etc/nats/tls/server-key.pem", &certs.server_key));
    }
    for (from, to) in files {
        text = replace_once(&text, from, &to.display().to_string(), file);
    }
    text
}

impl Edge {
    /// Starts the centre, the link and the site; returns once the site's
    /// leaf connection is up.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("a directory for certificates");
        let certs = certs(dir.path());
        let leaf_port = free_port();
        let file = "deploy/edge/central.conf";
        let mut central = shipped(file);
        for needle in ["domain: central", "account: FLEET"] {
            assert!(central.contains(needle), "{file} lacks {needle}");
        }
        central = replace_once(
            &central,
            "0.0.0.0:7422",
            &format!("127.0.0.1:{leaf_port}"),
            file,
        );
        let central = NatsServer::start_with_conf(&with_certs(central, &certs, file, true));
        let target: SocketAddr = ([127, 0, 0, 1], leaf_port).into();
        let link = TcpLink::start(target);
        let file = "deploy/edge/site.conf";
        let mut site = shipped(file);
        assert!(
            site.contains(&format!("domain: {SITE}")),
            "{file}: the site's own domain"
        );
        site = replace_once(
            &site,
            "@central:7422",
            &format!("@127.0.0.1:{}", link.addr().port()),
            file,
        );
        let site = NatsServer::start_with_conf(&with_certs(site, &certs, file, false));
        let edge = Edge {
            central,
            site,
            link,
            certs,
            _certs_dir: dir,
        };
        edge.wait_linked(true, Duration::from_secs(15));
        edge
    }

    /// Whether the site's leaf connection to the centre is up, as both
    /// servers' monitoring says. (The site alone is not enough: it lists a
    /// connection as soon as TCP connects, and a cut link accepts and drops
    /// it; the centre sees only connections that got through.)
    pub fn linked(&self) -> bool {
        let leafs = |server: &NatsServer| {
            server
                .monitor("/leafz")
                .and_then(|v| v["leafnodes"].as_u64())
                .unwrap_or(0)
        };
        leafs(&self.central) == 1 && leafs(&self.site) == 1
    }

    /// Waits until the leaf connection is `up` (or down).
    pub fn wait_linked(&self, up: bool, limit: Duration) {
        let what = if up {
            "the leaf link up"
        } else {
            "the leaf link down"
        };
        eventually(limit, what, || (self.linked() == up).then_some(()));
    }

    /// Cuts the link and waits until the site sees it down.
    pub fn cut(&self) {
        self.link.cut();
        self.wait_linked(false, Duration::from_secs(10));
    }

    /// Restores the link and waits until the leaf connection is back.
    pub fn restore(&self) {
        self.link.restore();
        self.wait_linked(true, Duration::from_secs(20));
    }

    /// `nats://<user>:<password>@` the site.
    pub fn site_url_as(&self, user: &str) -> String {
        self.site.url_as(user, &password(user))
    }

    /// `nats://<user>:<password>@` the centre.
    pub fn central_url_as(&self, user: &str) -> String {
        self.central.url_as(user, &password(user))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shipped_site_never_lets_its_queue_or_results_cross() {
        let site = super::shipped("deploy/edge/site.conf");
        let deny = |key: &str| {
            site.lines()
                .find(|l| l.trim_start().starts_with(key))
                .unwrap_or_else(|| panic!("site.conf has no {key}"))
                .to_string()
        };
        let (imports, exports) = (deny("deny_imports:"), deny("deny_exports:"));
        for subject in [
            "tasks.>",
            "results.>",
            "dead.>",
            "$KV.>",
            "$JS.ACK.TASKS.workers.>",
        ] {
            let quoted = format!("\"{subject}\"");
            assert!(imports.contains(&quoted), "{subject} comes in: {imports}");
            assert!(exports.contains(&quoted), "{subject} goes out: {exports}");
        }
        assert!(site.contains("\"edge.site1.results.>\": \"results.>\""));
    }
}
