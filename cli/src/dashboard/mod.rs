//! `fleet dashboard`: a live web page of the fleet, and the fleet-wide
//! Prometheus metrics at `/metrics`. The page, its script and its style are
//! in the binary; nothing is fetched from elsewhere.
//!
//! Who may do what:
//!
//! | request                         | loopback, no `--web-token`  | with tokens                         |
//! |---------------------------------|-----------------------------|-------------------------------------|
//! | the page, `/healthz`            | anyone                      | anyone                              |
//! | reads (`/api/…` GET, `/metrics`) | anyone                      | a valid token                       |
//! | actions (replay, delete, drain) | the token printed at start  | a valid token, same origin, JSON    |
//!
//! An operator token sees the whole fleet; a tenant token (`--tenant-token
//! alice=FILE`) sees only that tenant's kinds, dead letters and results,
//! and acts only on its own dead letters. What the dashboard can read and
//! change is also bounded by its NATS user: run it as `reader` to forbid
//! every action at the server, as `admin` to allow them.

mod api;
mod metrics;
mod sample;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use async_nats::Client;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use fleet::{Error, ErrorKind};
use tokio::sync::watch;

pub(crate) use sample::Snapshot;

/// Whose view a request has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The whole fleet.
    Operator,
    /// One tenant's part of it.
    Tenant(String),
}

/// What every request shares.
#[derive(Clone)]
pub(crate) struct AppState {
    client: Client,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    tokens: Arc<Tokens>,
}

/// The tokens this dashboard accepts.
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    operator: Option<String>,
    tenants: Vec<(String, String)>,
    /// Reads need no token (loopback, none configured).
    open_reads: bool,
}

/// Why a request is refused.
pub(crate) struct Refused(StatusCode, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.1 }).to_string();
        (self.0, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

/// Compares without stopping at the first difference, so response times
/// say nothing about how much of a guess was right.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Tokens {
    fn scope_of(&self, token: &str) -> Option<Scope> {
        if self.operator.as_deref().is_some_and(|t| same(t, token)) {
            return Some(Scope::Operator);
        }
        self.tenants
            .iter()
            .find(|(_, t)| same(t, token))
            .map(|(tenant, _)| Scope::Tenant(tenant.clone()))
    }

    /// The scope of a read: the bearer token's, or the operator's where
    /// reads are open.
    pub(crate) fn read(&self, headers: &HeaderMap) -> Result<Scope, Refused> {
        match bearer(headers) {
            Some(token) => self
                .scope_of(token)
                .ok_or_else(|| Refused(StatusCode::UNAUTHORIZED, "unknown token".into())),
            None if self.open_reads => Ok(Scope::Operator),
            None => Err(Refused(
                StatusCode::UNAUTHORIZED,
                "a token is needed (Authorization: Bearer …)".into(),
            )),
        }
    }

    /// The scope of an action: a valid token, sent by a page of this
    /// dashboard (same origin) as JSON.
    pub(crate) fn act(&self, headers: &HeaderMap) -> Result<Scope, Refused> {
        let scope = bearer(headers)
            .and_then(|t| self.scope_of(t))
            .ok_or_else(|| {
                Refused(
                    StatusCode::UNAUTHORIZED,
                    "actions need the dashboard's token".into(),
                )
            })?;
        same_origin(headers)?;
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !json {
            return Err(Refused(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "actions take application/json".into(),
            ));
        }
        Ok(scope)
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The request's `Origin` is this dashboard's own (`http://` + `Host`).
fn same_origin(headers: &HeaderMap) -> Result<(), Refused> {
    let get = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    match (get(header::ORIGIN), get(header::HOST)) {
        (Some(origin), Some(host)) if origin == format!("http://{host}") => Ok(()),
        _ => Err(Refused(
            StatusCode::FORBIDDEN,
            "actions are taken only from this dashboard's own page".into(),
        )),
    }
}

/// The dashboard's options.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) listen: SocketAddr,
    pub(crate) token: Option<String>,
    pub(crate) token_file: Option<PathBuf>,
    pub(crate) tenant_tokens: Vec<String>,
}

fn read_token(path: &std::path::Path) -> Result<String, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::with_source(
            ErrorKind::Usage,
            format!("reading token file {}", path.display()),
            e,
        )
    })?;
    checked_token(text.trim(), &path.display().to_string())
}

fn checked_token(token: &str, from: &str) -> Result<String, Error> {
    if token.len() < 16 {
        return Err(Error::new(
            ErrorKind::Usage,
            format!("the token from {from} is shorter than 16 characters"),
        ));
    }
    Ok(token.to_string())
}

/// A fresh random token (from the OS), for a dashboard started without one.
fn random_token() -> Result<String, Error> {
    let mut bytes = [0u8; 18];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(|e| Error::with_source(ErrorKind::Io, "reading /dev/urandom", e))?;
    Ok(hex_lower(&bytes))
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The accepted tokens; `generated` when the operator's was made here.
fn tokens(options: &Options) -> Result<(Tokens, bool), Error> {
    let mut operator = match (&options.token, &options.token_file) {
        (Some(t), _) => Some(checked_token(t, "--web-token")?),
        (None, Some(path)) => Some(read_token(path)?),
        (None, None) => None,
    };
    let mut tenants = Vec::new();
    for spec in &options.tenant_tokens {
        let (tenant, path) = spec.split_once('=').ok_or_else(|| {
            Error::new(
                ErrorKind::Usage,
                format!("--tenant-token {spec:?}: expected TENANT=FILE"),
            )
        })?;
        tenants.push((tenant.to_string(), read_token(std::path::Path::new(path))?));
    }
    let configured = operator.is_some() || !tenants.is_empty();
    if !configured && !options.listen.ip().is_loopback() {
        return Err(Error::new(
            ErrorKind::Usage,
            format!(
                "listening on {} (not loopback) needs --web-token or --web-token-file",
                options.listen
            ),
        ));
    }
    let generated = operator.is_none();
    if generated {
        operator = Some(random_token()?);
    }
    Ok((
        Tokens {
            operator,
            tenants,
            open_reads: !configured,
        },
        generated,
    ))
}

/// Serves the dashboard on `options.listen` until `shutdown`.
pub(crate) async fn serve(
    client: Client,
    options: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let (tokens, generated) = tokens(&options)?;
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| {
            Error::with_source(
                ErrorKind::Usage,
                format!("--listen {}: cannot listen", options.listen),
                e,
            )
        })?;
    let addr = listener.local_addr().unwrap_or(options.listen);
    let (tx, snapshot) = watch::channel(Arc::new(Snapshot::default()));
    tokio::spawn(sample::run(client.clone(), tx));
    if generated {
        // On standard output, for the person who started it: the page
        // keeps the token from the address and sends it with each action.
        let token = tokens.operator.as_deref().unwrap_or_default();
        println!("fleet dashboard: http://{addr}/#token={token}");
    } else {
        println!("fleet dashboard: http://{addr}/");
    }
    let state = AppState {
        client,
        snapshot,
        tokens: Arc::new(tokens),
    };
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::with_source(ErrorKind::Io, "serving the dashboard", e))
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(api::page))
        .route("/app.js", get(api::script))
        .route("/app.css", get(api::style))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics::serve))
        .route("/api/state", get(api::state))
        .route("/api/events", get(api::events))
        .route("/api/dead", get(api::dead_letters))
        .route("/api/dead/replay", post(api::replay))
        .route("/api/dead/delete", post(api::delete))
        .route("/api/task", get(api::task))
        .route("/api/nodes/{id}/drain", post(api::drain))
        .layer(axum::middleware::map_response(secure_headers))
        .with_state(state)
}

/// No framing by other sites, no guessing of types, scripts only from here.
async fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn tokens() -> Tokens {
        Tokens {
            operator: Some("operator-token-0123456789".into()),
            tenants: vec![("alice".into(), "alice-token-0123456789".into())],
            open_reads: false,
        }
    }

    #[test]
    fn reads_need_a_known_token_unless_open() {
        let t = tokens();
        assert_eq!(
            t.read(&headers(&[(
                "authorization",
                "Bearer operator-token-0123456789"
            )]))
            .ok(),
            Some(Scope::Operator)
        );
        assert_eq!(
            t.read(&headers(&[(
                "authorization",
                "Bearer alice-token-0123456789"
            )]))
            .ok(),
            Some(Scope::Tenant("alice".into()))
        );
        assert!(t
            .read(&headers(&[("authorization", "Bearer nope")]))
            .is_err());
        assert!(t.read(&HeaderMap::new()).is_err());
        let open = Tokens {
            open_reads: true,
            ..tokens()
        };
        assert_eq!(open.read(&HeaderMap::new()).ok(), Some(Scope::Operator));
    }

    #[test]
    fn actions_need_token_same_origin_and_json() {
        let t = Tokens {
            open_reads: true,
            ..tokens()
        };
        let ok = [
            ("authorization", "Bearer operator-token-0123456789"),
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080"),
            ("content-type", "application/json"),
        ];
        assert_eq!(t.act(&headers(&ok)).ok(), Some(Scope::Operator));
        let status = |h: &[(&'static str, &str)]| t.act(&headers(h)).err().map(|r| r.0);
        assert_eq!(
            status(&ok[1..]),
            Some(StatusCode::UNAUTHORIZED),
            "open reads do not open actions"
        );
        assert_eq!(
            status(&[ok[0], ("origin", "http://evil.example"), ok[2], ok[3]]),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            status(&[ok[0], ok[2], ok[3]]),
            Some(StatusCode::FORBIDDEN),
            "no Origin"
        );
        assert_eq!(
            status(&[ok[0], ok[1], ok[2], ("content-type", "text/plain")]),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
    }

    #[test]
    fn elsewhere_than_loopback_needs_a_token() {
        let options = |listen: &str, token: Option<&str>| Options {
            listen: listen.parse().unwrap(),
            token: token.map(str::to_string),
            token_file: None,
            tenant_tokens: Vec::new(),
        };
        assert!(super::tokens(&options("0.0.0.0:8080", None)).is_err());
        assert!(super::tokens(&options("0.0.0.0:8080", Some("short"))).is_err());
        let (t, generated) =
            super::tokens(&options("0.0.0.0:8080", Some("a-long-enough-token-123"))).unwrap();
        assert!(!generated && !t.open_reads);
        let (t, generated) = super::tokens(&options("127.0.0.1:8080", None)).unwrap();
        assert!(generated && t.open_reads && t.operator.unwrap().len() == 36);
    }
}
