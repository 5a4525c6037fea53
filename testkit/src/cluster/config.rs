//! The shipped cluster configs as a test cluster runs them: the users and
//! passwords it gives them, and `deploy/cluster/*.conf` rewritten for
//! loopback (only ports, hosts, store directories and file paths).

use std::process::Command;

use super::ClusterServer;
use crate::auth::Certs;
use crate::{root, tool};

/// The users of `deploy/cluster/accounts.conf` and the passwords the test
/// gives them.
pub const USERS: [&str; 4] = ["admin", "node", "reader", "example"];

/// The password a test cluster gives `user`.
pub fn password(user: &str) -> String {
    format!("{user}-cluster-test-password")
}

/// The encryption-at-rest key a test cluster's servers get.
pub(super) const JS_KEY: &str = "cluster-test-key-not-for-production";

/// Replaces the one occurrence of `from` in a shipped config; panics when it
/// is not there exactly once, so an edit of the config cannot silently turn
/// a test into a test of something else.
pub(crate) fn replace_once(text: &str, from: &str, to: &str, file: &str) -> String {
    let found = text.matches(from).count();
    assert_eq!(
        found, 1,
        "{file}: expected `{from}` exactly once, found it {found} times"
    );
    text.replacen(from, to, 1)
}

/// Replaces every one of the `n` occurrences of `from`; panics when there
/// are not exactly `n`.
pub(crate) fn replace_n(text: &str, from: &str, to: &str, n: usize, file: &str) -> String {
    let found = text.matches(from).count();
    assert_eq!(
        found, n,
        "{file}: expected `{from}` {n} times, found it {found} times"
    );
    text.replace(from, to)
}

/// `deploy/cluster/accounts.conf` with a bcrypt hash of [`password`] for
/// every user, as an operator fills it in with `nats server passwd`.
pub(super) fn accounts_conf() -> String {
    let file = "deploy/cluster/accounts.conf";
    let mut text = std::fs::read_to_string(root().join(file))
        .unwrap_or_else(|e| panic!("reading {file}: {e}"));
    for user in USERS {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("user: {user},")) && l.contains("REPLACE"))
            .unwrap_or_else(|| panic!("{file}: no REPLACE hash for {user}"))
            .to_string();
        let start = line.find("\"$2a$").expect("a quoted hash") + 1;
        let end = start + line[start..].find('"').expect("the hash's closing quote");
        let out = Command::new(tool("nats"))
            .args(["server", "passwd", "-p", &password(user)])
            .output()
            .expect("nats server passwd");
        let hash = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_string();
        assert!(
            hash.starts_with("$2a$"),
            "nats server passwd printed {hash:?}"
        );
        text = replace_once(
            &text,
            &line,
            &format!("{}{hash}{}", &line[..start], &line[end..]),
            file,
        );
    }
    text
}

/// `deploy/cluster/n<i>.conf` rewritten for loopback: client, cluster and
/// monitoring ports, route hosts nats1..3, `store_dir` and the TLS files.
/// Everything else (cluster name, server_name, sync_interval, encryption,
/// TLS and route settings, limits) is used as shipped.
pub(super) fn loopback_config(i: usize, servers: &[ClusterServer], certs: &Certs) -> String {
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
    assert!(
        text.contains("cipher: chacha") && text.contains("key: $FLEET_JS_KEY"),
        "{file} should encrypt at rest"
    );
    assert!(
        text.contains("verify: true"),
        "{file}: routes should require certificates"
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
        "127.0.0.1:8222",
        &format!("127.0.0.1:{}", me.http_port),
        &file,
    );
    for (j, other) in servers.iter().enumerate() {
        let route = format!("nats-route://nats{}:6222", j + 1);
        text = replace_once(
            &text,
            &route,
            &format!("nats-route://127.0.0.1:{}", other.cluster_port),
            &file,
        );
    }
    for (shipped, made) in [
        ("/etc/nats/tls/ca.pem", &certs.ca),
        ("/etc/nats/tls/server.pem", &certs.server_cert),
        ("/etc/nats/tls/server-key.pem", &certs.server_key),
    ] {
        text = replace_n(&text, shipped, &made.display().to_string(), 2, &file);
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
