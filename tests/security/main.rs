//! The security model, attacked. Each test runs the shipped least-privilege
//! setup (`deploy/secure/nats.conf`: accounts FLEET with admin, node and
//! reader; tenants alice and bob) on a server of its own, real `fleet`
//! processes under their roles, and the real `nats` CLI as the attacker;
//! it asserts the denial and that the victim's results are the genuine ones.

mod hostile;
mod roles;
mod tenant_cancel;
mod tenant_time;
mod tenant_unique;
mod tenants;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use fleet_testkit::secure::{Role, Secure};
use fleet_testkit::*;

/// A fleet of the secure setup: streams made by admin, one node under the
/// node role (with the development kinds).
fn fleet_up(node_args: &[&str]) -> (Secure, NodeProc) {
    let s = Secure::start();
    s.setup(&[]);
    let mut args = vec!["--dev-builtins"];
    args.extend_from_slice(node_args);
    let node = s.node("node1", &args);
    (s, node)
}

/// What a denied `nats` command says.
fn denied(out: &std::process::Output) -> bool {
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    !out.status.success()
        || all.contains("Permissions Violation")
        || all.contains("permissions violation")
}

/// Submits `lines` as `role` in batch `batch`; returns the JSON lines.
fn submit_as(
    s: &Secure,
    role: Role,
    batch: &str,
    kind: &str,
    lines: &[String],
) -> Vec<serde_json::Value> {
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let out = s.fleet(
        role,
        &[
            "submit",
            kind,
            "--json",
            "--batch",
            batch,
            "--timeout",
            "20s",
        ],
        input.as_bytes(),
    );
    assert!(
        out.status.success(),
        "{role:?} submit: {}",
        text(&out.stderr)
    );
    json_lines(&out.stdout)
}

/// The subjects RESULTS keeps, read as admin.
fn kept_subjects(s: &Secure) -> HashSet<String> {
    rt().block_on(async {
        let admin = s.client(Role::Admin).await;
        let js = async_nats::jetstream::new(admin);
        let mut stream = js.get_stream("RESULTS").await.unwrap();
        let info = stream.info().await.unwrap().clone();
        let mut subjects = HashSet::new();
        for seq in info.state.first_sequence..=info.state.last_sequence {
            if let Ok(msg) = stream.get_raw_message(seq).await {
                subjects.insert(msg.subject.to_string());
            }
        }
        subjects
    })
}
