//! The shipped least-privilege setup, `deploy/secure/nats.conf`, on a
//! server of the test's own: its roles, and `fleet`, nodes and the `nats`
//! CLI run as each of them.

use std::process::{Command, Output};
use std::time::Duration;

use crate::process::{fleet_at, NodeProc};
use crate::server::NatsServer;
use crate::{root, tool};

/// A user of `deploy/secure/nats.conf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// FLEET: everything.
    Admin,
    /// FLEET: what `fleet node` needs.
    Node,
    /// FLEET: what `fleet status` needs.
    Reader,
    /// Tenant account `alice`.
    Alice,
    /// Tenant account `bob`.
    Bob,
}

impl Role {
    /// The user name.
    pub fn user(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Node => "node",
            Role::Reader => "reader",
            Role::Alice => "alice",
            Role::Bob => "bob",
        }
    }

    /// The trial password `deploy/secure/README.md` gives.
    pub fn password(self) -> String {
        format!("{}-trial-password", self.user())
    }

    /// The inbox prefix the role's permissions allow, if not `_INBOX`.
    pub fn inbox_prefix(self) -> Option<&'static str> {
        match self {
            Role::Node => Some("_INBOX_node"),
            Role::Reader => Some("_INBOX_reader"),
            _ => None,
        }
    }

    /// The global flags that connect `fleet` or `nats` as this role.
    pub fn flags(self) -> Vec<String> {
        let mut flags = vec![
            "--user".into(),
            self.user().into(),
            "--password".into(),
            self.password(),
        ];
        if let Some(prefix) = self.inbox_prefix() {
            flags.extend(["--inbox-prefix".into(), prefix.into()]);
        }
        flags
    }
}

/// A server running the shipped secure config.
#[derive(Debug)]
pub struct Secure {
    /// The server.
    pub server: NatsServer,
}

impl Secure {
    /// Starts `deploy/secure/nats.conf` (port and store of the test's own).
    pub fn start() -> Self {
        let conf = root().join("deploy/secure/nats.conf");
        Secure {
            server: NatsServer::start_with(&["-c", &conf.display().to_string()]),
        }
    }

    /// `fleet setup` as admin, with extra flags; panics when it fails.
    pub fn setup(&self, extra: &[&str]) {
        let mut args = vec!["setup"];
        args.extend_from_slice(extra);
        let out = self.fleet(Role::Admin, &args, b"");
        assert!(
            out.status.success(),
            "fleet setup as admin: {}",
            crate::text(&out.stderr)
        );
    }

    /// A `fleet` command as `role`.
    pub fn fleet(&self, role: Role, args: &[&str], stdin: &[u8]) -> Output {
        let flags = role.flags();
        let mut all: Vec<&str> = flags.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        fleet_at(&self.server.url(), &all, stdin)
    }

    /// `fleet submit ARGS` as `role` in the background: standard input from
    /// `input`, standard output to `out`.
    pub fn submit_in_background(
        &self,
        role: Role,
        args: &[&str],
        input: &std::path::Path,
        out: &std::path::Path,
    ) -> std::process::Child {
        let flags = role.flags();
        let mut all = args.to_vec();
        all.extend(flags.iter().map(String::as_str));
        crate::process::spawn_submit_at(&self.server.url(), &all, input, out)
    }

    /// A `fleet node` as the node role, credentials in its environment (as
    /// a service manager gives them), ready when this returns.
    pub fn node(&self, name: &str, args: &[&str]) -> NodeProc {
        let mut all = vec!["--inbox-prefix", "_INBOX_node"];
        all.extend_from_slice(args);
        let password = Role::Node.password();
        let mut node = NodeProc::start(
            &self.server.url(),
            self.server.dir.path(),
            name,
            &all,
            &[("NATS_USER", "node"), ("NATS_PASSWORD", &password)],
        );
        node.wait_ready(Duration::from_secs(10));
        node
    }

    /// The `nats` CLI as `role`, answers awaited 2 s; a command that waits
    /// on (a refused one may print its refusal and wait) is stopped after
    /// 10 s with what it printed.
    pub fn nats(&self, role: Role, args: &[&str]) -> Output {
        let mut cmd = Command::new(tool("nats"));
        cmd.args(["--server", &self.server.url(), "--timeout", "2s"])
            .args(role.flags())
            .args(args);
        crate::process::output_within(cmd, Duration::from_secs(10))
    }

    /// An async-nats client as `role`.
    pub async fn client(&self, role: Role) -> async_nats::Client {
        let mut options =
            async_nats::ConnectOptions::with_user_and_password(role.user().into(), role.password());
        if let Some(prefix) = role.inbox_prefix() {
            options = options.custom_inbox_prefix(prefix);
        }
        options
            .connect(self.server.url())
            .await
            .expect("connecting as a role")
    }
}
