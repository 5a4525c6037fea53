//! Connection options from flags and the environment, as the `nats` CLI reads
//! them: `NATS_URL` (with `user:pass@` or a token in it), `NATS_CREDS`.

use std::path::PathBuf;
use std::sync::Arc;

use async_nats::{Client, ConnectOptions, Event};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::error::{Error, ErrorKind};

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ConnectConfig {
    /// Server URLs, comma-separated: `nats://127.0.0.1:4222,nats://...`.
    pub url: String,
    /// A credentials file (`NATS_CREDS`).
    pub creds: Option<PathBuf>,
    /// The connection's name, shown by the server's monitoring.
    pub name: String,
    /// Keep trying when the server is not up yet (nodes), or fail at once
    /// (the submitter, whose user is waiting).
    pub wait_for_server: bool,
}

/// Connects. The returned receiver counts the connections made: it changes
/// to 2 on the first reconnect, and so on.
///
/// # Errors
/// [`ErrorKind::Connection`] when the server cannot be reached or refuses
/// the credentials.
pub async fn connect(config: &ConnectConfig) -> Result<(Client, watch::Receiver<u64>), Error> {
    let (connections, connected) = watch::channel(0u64);
    let on_event = Arc::new(connections);
    let mut options = ConnectOptions::new()
        .name(&config.name)
        .max_reconnects(None)
        .event_callback(move |event| {
            let on_event = on_event.clone();
            async move {
                match event {
                    Event::Connected => {
                        info!("connected to NATS");
                        on_event.send_modify(|n| *n += 1);
                    }
                    Event::Disconnected => warn!("disconnected from NATS; reconnecting"),
                    other => info!(event = %other, "NATS event"),
                }
            }
        });
    if let Some(creds) = &config.creds {
        options = options.credentials_file(creds).await.map_err(|e| {
            Error::new(
                ErrorKind::Connection,
                anyhow::anyhow!("reading credentials {}: {e}", creds.display()),
            )
        })?;
    }
    if config.wait_for_server {
        options = options.retry_on_initial_connect();
    }
    let servers: Vec<&str> = config
        .url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    let client = options.connect(servers).await.map_err(|e| {
        Error::new(
            ErrorKind::Connection,
            anyhow::anyhow!("connecting to {}: {e}", config.url),
        )
    })?;
    Ok((client, connected))
}
