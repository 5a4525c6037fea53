//! Every way to authenticate that the `nats` CLI knows, against a real
//! nats-server configured for it: each connects `fleet`; a wrong one is a
//! clear error and exit 2 within 5 s, with no secret in what is printed;
//! a node with a refused credential keeps trying and comes up once the
//! server accepts it (a rotation).

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use fleet_testkit::auth::{certs, nkey_user, operator};
use fleet_testkit::*;

const JETSTREAM: &str = "jetstream {}\n";

/// `fleet setup` with the given global flags and environment: it needs a
/// working connection with rights, so exit 0 means "authenticated".
fn setup(
    server: &NatsServer,
    url: &str,
    flags: &[&str],
    env: &[(&str, &str)],
) -> (Output, Duration) {
    let started = Instant::now();
    let out = Command::new(fleet_bin())
        .args(["--server", url])
        .args(flags)
        .arg("setup")
        .env_remove("NATS_USER")
        .env_remove("NATS_PASSWORD")
        .envs(env.iter().copied())
        .output()
        .expect("running fleet");
    let _ = server;
    (out, started.elapsed())
}

fn assert_connects(what: &str, (out, _): (Output, Duration)) {
    assert!(out.status.success(), "{what}: {}", text(&out.stderr));
}

fn assert_refused(what: &str, secrets: &[&str], (out, took): (Output, Duration)) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{what}: {err}");
    assert!(took < Duration::from_secs(5), "{what} took {took:?}");
    assert!(err.contains("error:"), "{what}: {err}");
    for secret in secrets {
        assert!(
            !err.contains(secret) && !text(&out.stdout).contains(secret),
            "{what} printed a secret: {err}"
        );
    }
}

/// User and password: in the URL, in flags, in NATS_USER/NATS_PASSWORD.
#[test]
fn user_and_password_in_url_flags_and_environment() {
    let server = NatsServer::start_with_conf(&format!(
        "{JETSTREAM}authorization {{ users: [ {{ user: ana, password: \"s3cr3t-pw\" }} ] }}\n"
    ));
    let plain = server.url();
    assert_connects(
        "URL",
        setup(&server, &server.url_as("ana", "s3cr3t-pw"), &[], &[]),
    );
    assert_connects(
        "flags",
        setup(
            &server,
            &plain,
            &["--user", "ana", "--password", "s3cr3t-pw"],
            &[],
        ),
    );
    assert_connects(
        "env",
        setup(
            &server,
            &plain,
            &[],
            &[("NATS_USER", "ana"), ("NATS_PASSWORD", "s3cr3t-pw")],
        ),
    );
    let (out, took) = setup(&server, &server.url_as("ana", "wrong-pw-123"), &[], &[]);
    assert!(
        text(&out.stderr).contains("refused the credentials"),
        "{}",
        text(&out.stderr)
    );
    assert_refused("wrong password in URL", &["wrong-pw-123"], (out, took));
    assert_refused(
        "wrong password in env",
        &["nope-pw-456"],
        setup(
            &server,
            &plain,
            &[],
            &[("NATS_USER", "ana"), ("NATS_PASSWORD", "nope-pw-456")],
        ),
    );
    assert_refused("no password", &[], setup(&server, &plain, &[], &[]));
}

/// A token: in the URL, as a flag, in NATS_TOKEN.
#[test]
fn token_in_url_flag_and_environment() {
    let server = NatsServer::start_with_conf(&format!(
        "{JETSTREAM}authorization {{ token: \"t0k3n-value\" }}\n"
    ));
    let plain = server.url();
    let in_url = plain.replace("nats://", "nats://t0k3n-value@");
    assert_connects("URL", setup(&server, &in_url, &[], &[]));
    assert_connects(
        "flag",
        setup(&server, &plain, &["--token", "t0k3n-value"], &[]),
    );
    assert_connects(
        "env",
        setup(&server, &plain, &[], &[("NATS_TOKEN", "t0k3n-value")]),
    );
    assert_refused(
        "wrong token",
        &["bad-t0k3n"],
        setup(&server, &plain, &["--token", "bad-t0k3n"], &[]),
    );
}

/// An nkey seed file (--nkey, NATS_NKEY), and an operator-mode credentials
/// file made by `nats auth` (--creds, NATS_CREDS).
#[test]
fn nkey_and_credentials_files() {
    let dir = tempfile::tempdir().unwrap();
    let (public, seed) = nkey_user(dir.path());
    let server = NatsServer::start_with_conf(&format!(
        "{JETSTREAM}authorization {{ users: [ {{ nkey: {public} }} ] }}\n"
    ));
    let seed_path = seed.display().to_string();
    assert_connects(
        "--nkey",
        setup(&server, &server.url(), &["--nkey", &seed_path], &[]),
    );
    assert_connects(
        "NATS_NKEY",
        setup(&server, &server.url(), &[], &[("NATS_NKEY", &seed_path)]),
    );
    let (other, other_seed) = nkey_user(tempfile::tempdir().unwrap().path());
    assert_ne!(other, public);
    let _ = other_seed;
    let stranger = dir.path().join("stranger.nk");
    std::fs::write(&stranger, nkeys::KeyPair::new_user().seed().unwrap()).unwrap();
    let seed_text = std::fs::read_to_string(&stranger).unwrap();
    assert_refused(
        "unknown nkey",
        &[seed_text.trim()],
        setup(
            &server,
            &server.url(),
            &["--nkey", &stranger.display().to_string()],
            &[],
        ),
    );

    let op = operator(dir.path());
    let server = NatsServer::start_with_conf(&format!("{JETSTREAM}{}", op.server_conf));
    let creds = op.creds.display().to_string();
    assert_connects(
        "--creds",
        setup(&server, &server.url(), &["--creds", &creds], &[]),
    );
    assert_connects(
        "NATS_CREDS",
        setup(&server, &server.url(), &[], &[("NATS_CREDS", &creds)]),
    );
    assert_refused(
        "no credentials",
        &[],
        setup(&server, &server.url(), &[], &[]),
    );
}

/// Mutual TLS with certificates the test makes: the CA and a client
/// certificate connect; no certificate, or one from another CA, does not.
/// The same with the TLS handshake first.
#[test]
fn mutual_tls_and_tls_first() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs(dir.path());
    let tls = |first: bool| {
        format!(
            "{JETSTREAM}tls {{ cert_file: \"{}\", key_file: \"{}\", ca_file: \"{}\", verify: true{} }}\n",
            c.server_cert.display(),
            c.server_key.display(),
            c.ca.display(),
            if first { ", handshake_first: true" } else { "" }
        )
    };
    let p = |p: &std::path::Path| p.display().to_string();
    let (ca, cert, key, rogue, rogue_key) = (
        p(&c.ca),
        p(&c.client_cert),
        p(&c.client_key),
        p(&c.rogue_cert),
        p(&c.rogue_key),
    );
    let server = NatsServer::start_with_conf(&tls(false));
    let url = server.url().replace("nats://", "tls://");
    assert_connects(
        "mTLS flags",
        setup(
            &server,
            &url,
            &["--tlsca", &ca, "--tlscert", &cert, "--tlskey", &key],
            &[],
        ),
    );
    assert_connects(
        "mTLS env",
        setup(
            &server,
            &url,
            &[],
            &[("NATS_CA", &ca), ("NATS_CERT", &cert), ("NATS_KEY", &key)],
        ),
    );
    assert_refused(
        "no client certificate",
        &[],
        setup(&server, &url, &["--tlsca", &ca], &[]),
    );
    assert_refused(
        "another CA's certificate",
        &[],
        setup(
            &server,
            &url,
            &["--tlsca", &ca, "--tlscert", &rogue, "--tlskey", &rogue_key],
            &[],
        ),
    );
    let first = NatsServer::start_with_conf(&tls(true));
    let url = first.url().replace("nats://", "tls://");
    assert_connects(
        "TLS first",
        setup(
            &first,
            &url,
            &[
                "--tlsfirst",
                "--tlsca",
                &ca,
                "--tlscert",
                &cert,
                "--tlskey",
                &key,
            ],
            &[],
        ),
    );
}

/// A node whose credential the server refuses says so, keeps trying with
/// backoff, and is ready once the server accepts it (a rotation), without
/// a restart.
#[test]
fn a_refused_node_retries_until_its_credential_is_accepted() {
    let accept = |password: &str| {
        format!("{JETSTREAM}authorization {{ users: [ {{ user: node, password: \"{password}\" }} ] }}\n")
    };
    let mut server = NatsServer::start_with_conf(&accept("old-password-1"));
    assert_connects(
        "setup",
        setup(&server, &server.url_as("node", "old-password-1"), &[], &[]),
    );
    let mut node = NodeProc::start(
        &server.url(),
        server.dir.path(),
        "rotating",
        &[],
        &[("NATS_USER", "node"), ("NATS_PASSWORD", "new-password-2")],
    );
    let started = Instant::now();
    while node.log_text().matches("refused the credentials").count() < 2 {
        assert!(
            node.child.try_wait().unwrap().is_none(),
            "the node gave up:\n{}",
            node.log_text()
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the node did not say its credential was refused:\n{}",
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !node.log_text().contains("new-password-2"),
        "{}",
        node.log_text()
    );
    server.reload_conf(&accept("new-password-2"));
    node.wait_ready(Duration::from_secs(15));
}
