//! Connection options as the `nats` CLI reads them: server URLs (with
//! `user:pass@` or `token@` in them), user and password, token, nkey seed,
//! credentials file, CA, client certificate and key, TLS first, inbox prefix.
//!
//! Secrets never leave this module in text: URLs are shown without their
//! user information, and [`ConnectConfig`]'s `Debug` hides them.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::{Client, ConnectErrorKind, ConnectOptions, Event, RequestErrorKind};
use bytes::Bytes;
use tracing::{info, warn};

use crate::error::{Error, ErrorKind};

/// Where and how to connect. `..Default::default()` fills what you do not set.
#[derive(Clone, Default)]
pub struct ConnectConfig {
    /// Server URLs, comma-separated: `nats://127.0.0.1:4222,nats://...`.
    /// `nats://user:pass@host` and `nats://token@host` carry credentials.
    pub servers: String,
    /// The connection's name, shown by the server's monitoring.
    pub name: String,
    /// How to authenticate.
    pub auth: Auth,
    /// TLS options.
    pub tls: Tls,
    /// Prefix of this connection's inboxes (`_INBOX` when unset): a role
    /// allowed only its own prefix cannot read anyone else's replies.
    pub inbox_prefix: Option<String>,
    /// Keep trying when the server is not up yet or refuses us (nodes: the
    /// credentials may be being rotated), or fail at once (commands a person
    /// is waiting for).
    pub wait_for_server: bool,
    /// How often to ping the server ([`crate::contract::DEFAULT_PING_INTERVAL`]
    /// when unset); two pings unanswered and the client moves to another
    /// server of its list.
    pub ping_interval: Option<Duration>,
}

/// Credentials. At most one method may be given; URL credentials are used
/// when none is.
#[derive(Clone, Default)]
pub struct Auth {
    /// User name (`NATS_USER`), with [`Auth::password`].
    pub user: Option<String>,
    /// Password (`NATS_PASSWORD`).
    pub password: Option<String>,
    /// Token (`NATS_TOKEN`).
    pub token: Option<String>,
    /// A file holding an nkey seed (`NATS_NKEY`).
    pub nkey_file: Option<PathBuf>,
    /// A credentials file: JWT and seed (`NATS_CREDS`).
    pub creds_file: Option<PathBuf>,
}

/// TLS options. Any of them turns TLS on.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// CA certificate(s) to trust, PEM (`NATS_CA`).
    pub ca: Option<PathBuf>,
    /// Client certificate, PEM (`NATS_CERT`), with [`Tls::key`].
    pub cert: Option<PathBuf>,
    /// Client key, PEM (`NATS_KEY`).
    pub key: Option<PathBuf>,
    /// Start TLS before the server's INFO (servers with `handshake_first`).
    pub first: bool,
}

impl fmt::Debug for ConnectConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectConfig")
            .field("servers", &redact_urls(&self.servers))
            .field("name", &self.name)
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("inbox_prefix", &self.inbox_prefix)
            .field("wait_for_server", &self.wait_for_server)
            .field("ping_interval", &self.ping_interval)
            .finish()
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("nkey_file", &self.nkey_file)
            .field("creds_file", &self.creds_file)
            .finish()
    }
}

/// One server URL split into what is safe to show and its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerUrl {
    /// The URL without user information.
    pub(crate) url: String,
    /// `user:pass@`: user and password; `token@`: the token as user, no password.
    pub(crate) user: Option<String>,
    pub(crate) password: Option<String>,
}

/// Splits `nats://user:pass@host:4222` into the URL without credentials and
/// the credentials (percent-decoded).
pub(crate) fn split_url(raw: &str) -> ServerUrl {
    let raw = raw.trim();
    let (scheme, rest) = match raw.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, raw),
    };
    let host_start = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(host_start);
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((userinfo, host)) => (Some(userinfo), host),
        None => (None, authority),
    };
    let url = match scheme {
        Some(scheme) => format!("{scheme}://{host}{path}"),
        None => format!("{host}{path}"),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(info) => match info.split_once(':') {
            Some((u, p)) => (Some(percent_decode(u)), Some(percent_decode(p))),
            None => (Some(percent_decode(info)), None),
        },
    };
    ServerUrl {
        url,
        user,
        password,
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The server list as it may be shown: no user information.
pub fn redact_urls(servers: &str) -> String {
    servers
        .split(',')
        .filter(|u| !u.trim().is_empty())
        .map(|u| split_url(u).url)
        .collect::<Vec<_>>()
        .join(",")
}

impl ConnectConfig {
    /// A short value only these credentials give: the first 16 hex digits of
    /// a SHA-256 over the secret they hold (seed, password, token, client
    /// key); `None` without credentials. A submitter adds it to its tasks'
    /// `Nats-Msg-Id`s so no one else can squat them.
    pub fn msg_id_salt(&self) -> Option<String> {
        use sha2::{Digest, Sha256};
        let read = |p: &PathBuf| std::fs::read(p).ok();
        let a = &self.auth;
        let url_secret = self
            .servers
            .split(',')
            .map(split_url)
            .find_map(|u| u.password.or(u.user))
            .map(String::into_bytes);
        let secret = a
            .creds_file
            .as_ref()
            .and_then(read)
            .or_else(|| a.nkey_file.as_ref().and_then(read))
            .or_else(|| a.password.clone().map(String::into_bytes))
            .or_else(|| a.token.clone().map(String::into_bytes))
            .or_else(|| self.tls.key.as_ref().and_then(read))
            .or(url_secret)?;
        let mut hash = Sha256::new();
        hash.update(b"fleet msg-id salt\0");
        hash.update(&secret);
        Some(hex::encode(&hash.finalize()[..8]))
    }

    /// The options for async-nats, and the URLs to connect to.
    fn options(&self) -> Result<(ConnectOptions, Vec<String>), Error> {
        let usage = |m: &str| Error::new(ErrorKind::Usage, m.to_string());
        let urls: Vec<ServerUrl> = self
            .servers
            .split(',')
            .filter(|u| !u.trim().is_empty())
            .map(split_url)
            .collect();
        if urls.is_empty() {
            return Err(usage("no NATS server URL given"));
        }
        let a = &self.auth;
        let methods = [
            a.creds_file.is_some(),
            a.nkey_file.is_some(),
            a.user.is_some() || a.password.is_some(),
            a.token.is_some(),
        ];
        if methods.iter().filter(|m| **m).count() > 1 {
            return Err(usage(
                "give one way to authenticate: --creds, --nkey, --user/--password or --token",
            ));
        }
        let ping = self
            .ping_interval
            .unwrap_or(crate::contract::DEFAULT_PING_INTERVAL);
        if ping.is_zero() {
            return Err(usage("the ping interval must be more than 0"));
        }
        let mut options = ConnectOptions::new()
            .name(&self.name)
            .max_reconnects(None)
            .ping_interval(ping);
        if let Some(path) = &a.creds_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::with_source(
                    ErrorKind::Usage,
                    format!("reading credentials file {}", path.display()),
                    e,
                )
            })?;
            options = options.credentials(&text).map_err(|e| {
                Error::with_source(
                    ErrorKind::Usage,
                    format!("credentials file {} is not valid", path.display()),
                    e,
                )
            })?;
        } else if let Some(path) = &a.nkey_file {
            let seed = std::fs::read_to_string(path).map_err(|e| {
                Error::with_source(
                    ErrorKind::Usage,
                    format!("reading nkey seed file {}", path.display()),
                    e,
                )
            })?;
            let seed = seed
                .lines()
                .map(str::trim)
                .find(|l| l.starts_with('S'))
                .ok_or_else(|| {
                    usage(&format!(
                        "{} holds no nkey seed (a line starting with S)",
                        path.display()
                    ))
                })?;
            options = options.nkey(seed.to_string());
        } else if a.user.is_some() || a.password.is_some() {
            let (Some(user), Some(password)) = (&a.user, &a.password) else {
                return Err(usage("--user and --password go together"));
            };
            options = options.user_and_password(user.clone(), password.clone());
        } else if let Some(token) = &a.token {
            options = options.token(token.clone());
        } else if let Some(with) = urls.iter().find(|u| u.user.is_some()) {
            // Credentials in the URL, as the nats CLI takes them.
            options = match (&with.user, &with.password) {
                (Some(user), Some(password)) => {
                    options.user_and_password(user.clone(), password.clone())
                }
                (Some(token), None) => options.token(token.clone()),
                _ => options,
            };
        }
        let t = &self.tls;
        if t.cert.is_some() != t.key.is_some() {
            return Err(usage("--tls-cert and --tls-key go together"));
        }
        if let Some(ca) = &t.ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&t.cert, &t.key) {
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        if t.first {
            options = options.tls_first().require_tls(true);
        }
        if let Some(prefix) = &self.inbox_prefix {
            options = options.custom_inbox_prefix(prefix);
        }
        if self.wait_for_server {
            options = options.retry_on_initial_connect();
        }
        Ok((options, urls.into_iter().map(|u| u.url).collect()))
    }
}

/// The last permission violation the server reported to this process, and
/// when. NATS reports a refused publish on the side, while the request it
/// belonged to only times out; this lets the caller say why.
static LAST_VIOLATION: std::sync::Mutex<Option<(std::time::Instant, String)>> =
    std::sync::Mutex::new(None);

/// The server's last permission violation, if it came within `within`.
pub fn recent_permission_violation(within: std::time::Duration) -> Option<String> {
    let last = LAST_VIOLATION.lock().ok()?;
    let (at, text) = last.as_ref()?;
    (at.elapsed() <= within).then(|| text.clone())
}

/// Logs a refused credential with what to do about it, anything else as `what`.
fn refused_or(text: &str, what: &str) {
    let lower = text.to_ascii_lowercase();
    if lower.contains("permissions violation") {
        if let Ok(mut last) = LAST_VIOLATION.lock() {
            *last = Some((std::time::Instant::now(), text.to_string()));
        }
    }
    if lower.contains("authorization") || lower.contains("authentication") {
        warn!(error = %text, "NATS refused the credentials; retrying with backoff (check --user/--password, --token, --nkey, --creds, --tlscert)");
    } else {
        warn!(error = %text, "{what}");
    }
}

/// Connects, logging connection events. With [`ConnectConfig::wait_for_server`]
/// it returns at once and keeps trying (a refused credential is logged, with
/// what to do, and retried with backoff).
///
/// # Errors
/// [`ErrorKind::Usage`] for contradictory or unreadable options,
/// [`ErrorKind::Auth`] when the server refuses the credentials,
/// [`ErrorKind::Connection`] when no server can be reached.
pub async fn connect(config: &ConnectConfig) -> Result<Client, Error> {
    let (options, urls) = config.options()?;
    let options = options.event_callback(|event| async move {
        match event {
            Event::Connected => info!("connected to NATS"),
            Event::Disconnected => warn!("disconnected from NATS; reconnecting"),
            Event::ServerError(err) => refused_or(&err.to_string(), "NATS server error"),
            Event::ClientError(err) => refused_or(&err.to_string(), "NATS client error"),
            other => info!(event = %other, "NATS event"),
        }
    });
    let shown = urls.join(",");
    options.connect(urls).await.map_err(|e| {
        let kind = match e.kind() {
            ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                ErrorKind::Auth
            }
            ConnectErrorKind::Tls => ErrorKind::Connection,
            _ => ErrorKind::Connection,
        };
        let what = match kind {
            ErrorKind::Auth => format!("NATS at {shown} refused the credentials"),
            _ => format!("connecting to NATS at {shown}"),
        };
        Error::with_source(kind, what, e)
    })
}

/// Checks that this connection's account has JetStream and may use it:
/// schedules are kept in the fleet account's `SCHEDULES`. A tenant's
/// connection that did not say so (an account without JetStream) is
/// refused here, at once or after two seconds of silence.
///
/// # Errors
/// [`ErrorKind::Usage`] saying so.
pub(crate) async fn require_jetstream(client: &Client, what: &str) -> Result<(), Error> {
    let refuse = |why: &str| {
        Err(Error::new(
            ErrorKind::Usage,
            format!(
                "{what} need JetStream in this connection's account ({why}): on a tenant's connection give --tenant NAME (its schedules are kept in its own stream), or connect as a user of the fleet account"
            ),
        ))
    };
    let asked = client.request("$JS.API.INFO", Bytes::new());
    match tokio::time::timeout(Duration::from_secs(2), asked).await {
        Err(_) => refuse("no answer to an account info request in 2s: not allowed here"),
        Ok(Err(err)) if err.kind() == RequestErrorKind::NoResponders => {
            refuse("JetStream is not enabled for it")
        }
        Ok(Err(err)) => Err(Error::with_source(
            ErrorKind::Connection,
            "asking for this account's JetStream",
            err,
        )),
        Ok(Ok(msg)) => {
            let reply: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap_or_default();
            match reply.get("error") {
                Some(err) => refuse(
                    err.get("description")
                        .and_then(|d| d.as_str())
                        .unwrap_or("refused"),
                ),
                None => Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests;
