//! Credentials of every kind, made by the test that needs them and never
//! committed: TLS certificates (a CA, a server certificate for 127.0.0.1,
//! a client certificate), an nkey, and an operator-mode setup whose
//! credentials file is written by the real `nats auth` commands.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

use crate::tool;

/// PEM files of a throwaway CA, a server and a client.
#[derive(Debug, Clone)]
pub struct Certs {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The server's certificate (for `127.0.0.1` and `localhost`).
    pub server_cert: PathBuf,
    /// The server's key.
    pub server_key: PathBuf,
    /// A client certificate signed by the CA.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
    /// A client certificate signed by another CA (refused).
    pub rogue_cert: PathBuf,
    /// Its key.
    pub rogue_key: PathBuf,
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().expect("a key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    (params.self_signed(&key).expect("a CA"), key)
}

fn leaf(name: &str, ca: &rcgen::Certificate, ca_key: &KeyPair, ips: &[IpAddr]) -> (String, String) {
    let key = KeyPair::generate().expect("a key");
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().expect("an address")));
    for &ip in ips {
        params.subject_alt_names.push(SanType::IpAddress(ip));
    }
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.signed_by(&key, ca, ca_key).expect("a certificate");
    (cert.pem(), key.serialize_pem())
}

/// Writes a CA, a server and two client certificates into `dir`.
pub fn certs(dir: &Path) -> Certs {
    certs_for(dir, &[])
}

/// [`certs`] whose server certificate is also valid for `ips` (servers on
/// hosts of a network of namespaces).
pub fn certs_for(dir: &Path, ips: &[IpAddr]) -> Certs {
    let (ca_cert, ca_key) = ca("fleet test CA");
    let (rogue_ca, rogue_ca_key) = ca("someone else's CA");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("writing a PEM file");
        path
    };
    let (server_cert, server_key) = leaf("nats-server", &ca_cert, &ca_key, ips);
    let (client_cert, client_key) = leaf("fleet", &ca_cert, &ca_key, &[]);
    let (rogue_cert, rogue_key) = leaf("intruder", &rogue_ca, &rogue_ca_key, &[]);
    Certs {
        ca: write("ca.pem", &ca_cert.pem()),
        server_cert: write("server.pem", &server_cert),
        server_key: write("server-key.pem", &server_key),
        client_cert: write("client.pem", &client_cert),
        client_key: write("client-key.pem", &client_key),
        rogue_cert: write("rogue.pem", &rogue_cert),
        rogue_key: write("rogue-key.pem", &rogue_key),
    }
}

/// A user nkey: its public key (for the server's config) and a file with
/// its seed (for `--nkey`).
pub fn nkey_user(dir: &Path) -> (String, PathBuf) {
    let pair = nkeys::KeyPair::new_user();
    let seed = dir.join("user.nk");
    std::fs::write(&seed, pair.seed().expect("a seed")).expect("writing the seed");
    (pair.public_key(), seed)
}

/// An operator-mode setup: the server config lines that trust it, and a
/// user's credentials file.
#[derive(Debug, Clone)]
pub struct Operator {
    /// `operator`, `system_account`, `resolver` and `resolver_preload` lines.
    pub server_conf: String,
    /// A credentials file of a user of account `FLEET` (JetStream enabled).
    pub creds: PathBuf,
}

/// Makes an operator, a system account, account `FLEET` (JetStream up to
/// 8 GB on disk: `fleet setup`'s stream limits reserve 4.5 GiB) and one user with
/// the `nats auth` commands, their store kept in `dir`.
pub fn operator(dir: &Path) -> Operator {
    let nats = |args: &[&str]| {
        let out = Command::new(tool("nats"))
            .args(args)
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .stdin(Stdio::null())
            .output()
            .expect("running nats auth");
        assert!(
            out.status.success(),
            "nats {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    nats(&["auth", "operator", "add", "op", "--no-signing-key"]);
    nats(&[
        "auth",
        "account",
        "add",
        "FLEET",
        "--operator",
        "op",
        "--jetstream",
        "--js-disk=8GB",
        "--js-memory=64MB",
        "--js-streams=10",
        "--js-consumers=10",
        "--defaults",
    ]);
    nats(&[
        "auth",
        "user",
        "add",
        "fleet",
        "FLEET",
        "--operator",
        "op",
        "--defaults",
    ]);
    let creds = dir.join("fleet.creds");
    nats(&[
        "auth",
        "user",
        "credential",
        &creds.display().to_string(),
        "fleet",
        "FLEET",
        "--operator",
        "op",
    ]);
    let store = dir.join("data/nats/nsc/stores/op");
    let jwt = |path: PathBuf| {
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let subject = |jwt: &str| {
        let claims = jwt.split('.').nth(1).expect("a JWT");
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims.trim_end_matches('='))
            .expect("base64url");
        let claims: serde_json::Value = serde_json::from_slice(&claims).expect("JSON claims");
        claims["sub"].as_str().expect("a subject").to_string()
    };
    let system = jwt(store.join("accounts/SYSTEM/SYSTEM.jwt"));
    let fleet = jwt(store.join("accounts/FLEET/FLEET.jwt"));
    let server_conf = format!(
        "operator: \"{}\"\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n  {}: \"{}\"\n  {}: \"{}\"\n}}\n",
        store.join("op.jwt").display(),
        subject(&system),
        subject(&system),
        system.trim(),
        subject(&fleet),
        fleet.trim()
    );
    Operator { server_conf, creds }
}
