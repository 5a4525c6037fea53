//! Writing `fleet-permits`: compare-and-set writes on a name's last
//! revision, reading a name again after a refused write, and the [`Lease`]
//! a running task holds: its permits, renewed every third of their
//! `Nats-TTL` and purged (compare-and-set too) when the handler is done.
//! A node that dies stops renewing; the server expires its permits after
//! the lease (the group's `ack_wait`) and its watchers see the marker.
//!
//! The writes are raw JetStream publishes: async-nats 0.51's
//! `create_with_ttl` over a deleted or expired key drops the TTL.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::Context;
use async_nats::{HeaderMap, Message, StatusCode};
use bytes::Bytes;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::contract::{self, header};
use crate::limit::renew_every;

/// How long the marker a released permit leaves behind lives.
const MARKER_TTL: Duration = Duration::from_secs(60);

/// What a write came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wrote {
    /// Stored at this revision.
    At(u64),
    /// Refused: the name is not at the revision expected.
    Moved,
    /// Not confirmed (no bucket, no permission, the server away).
    Failed,
}

fn subject(name: &str) -> String {
    format!("$KV.{}.{name}", contract::PERMITS_BUCKET)
}

/// Writes `payload` to `name` for `ttl`, if `name` is still at `expect`.
pub(super) async fn write(
    js: &Context,
    name: &str,
    payload: Bytes,
    ttl: Duration,
    expect: u64,
) -> Wrote {
    let publish = PublishMessage::build()
        .payload(payload)
        .ttl(ttl)
        .expected_last_subject_sequence(expect);
    send(js, name, publish).await
}

async fn send(js: &Context, name: &str, publish: PublishMessage) -> Wrote {
    let ack = match js.send_publish(subject(name), publish).await {
        Ok(ack) => ack.await,
        Err(err) => Err(err),
    };
    match ack {
        Ok(ack) => Wrote::At(ack.sequence),
        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Wrote::Moved,
        Err(err) => {
            debug!(%err, name, "permit write not confirmed");
            Wrote::Failed
        }
    }
}

/// Frees `name` if it is still at `rev` (ours): a purge marker.
pub(super) async fn release(js: &Context, name: &str, rev: u64) -> Wrote {
    let mut headers = HeaderMap::new();
    headers.insert("KV-Operation", "PURGE");
    headers.insert("Nats-Rollup", "sub");
    headers.insert(header::TTL, MARKER_TTL.as_secs().to_string().as_str());
    let publish = PublishMessage::build()
        .headers(headers)
        .expected_last_subject_sequence(rev);
    send(js, name, publish).await
}

/// Whether a stored message is a marker (deleted, purged, expired).
pub(super) fn is_marker(headers: Option<&HeaderMap>) -> bool {
    let get = |n: &str| {
        headers
            .and_then(|h| h.get(n))
            .map(|v| v.as_str().to_string())
    };
    get("Nats-Marker-Reason").is_some()
        || get("KV-Operation")
            .is_some_and(|op| op.eq_ignore_ascii_case("DEL") || op.eq_ignore_ascii_case("PURGE"))
}

/// Reads `name` again (a direct get): its revision and value, `(0, None)`
/// when the server has nothing for it; `None` when it cannot be read.
pub(super) async fn read(js: &Context, name: &str) -> Option<(u64, Option<Bytes>)> {
    let api = format!(
        "$JS.API.DIRECT.GET.KV_{}.{}",
        contract::PERMITS_BUCKET,
        subject(name)
    );
    let msg: Message = js.client().request(api, Bytes::new()).await.ok()?;
    match msg.status {
        None | Some(StatusCode::OK) => {}
        Some(StatusCode::NOT_FOUND) => return Some((0, None)),
        Some(_) => return None,
    }
    let rev = msg
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Sequence"))
        .and_then(|v| v.as_str().trim().parse().ok())?;
    let value = (!is_marker(msg.headers.as_ref())).then_some(msg.payload);
    Some((rev, value))
}

/// The permits a running task holds, renewed until dropped, then freed.
#[derive(Debug)]
pub(crate) struct Lease {
    js: Context,
    held: Arc<Mutex<Vec<(String, u64)>>>,
    renew: JoinHandle<()>,
}

impl Lease {
    /// Holds `held` (name, revision) for `ttl` at a time, writing `value`.
    pub(super) fn hold(
        js: &Context,
        held: Vec<(String, u64)>,
        value: Bytes,
        ttl: Duration,
    ) -> Self {
        let held = Arc::new(Mutex::new(held));
        let renew = tokio::spawn(renew(js.clone(), held.clone(), value, ttl));
        Lease {
            js: js.clone(),
            held,
            renew,
        }
    }
}

async fn renew(js: Context, held: Arc<Mutex<Vec<(String, u64)>>>, value: Bytes, ttl: Duration) {
    let every = renew_every(ttl);
    loop {
        tokio::time::sleep(every).await;
        let now: Vec<(String, u64)> = held.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for (name, rev) in now {
            let next = match write(&js, &name, value.clone(), ttl, rev).await {
                Wrote::At(next) => Some(next),
                Wrote::Moved => {
                    warn!(name, "a running task's permit expired and was taken: the limit may be exceeded until it ends");
                    None
                }
                // Tried again at the next turn, while the lease lasts.
                Wrote::Failed => continue,
            };
            let mut list = held.lock().unwrap_or_else(PoisonError::into_inner);
            list.retain(|(n, _)| *n != name);
            if let Some(next) = next {
                list.push((name, next));
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renew.abort();
        let held = std::mem::take(&mut *self.held.lock().unwrap_or_else(PoisonError::into_inner));
        if held.is_empty() {
            return;
        }
        let js = self.js.clone();
        // Not awaited: the handler is done; a release lost with the
        // connection frees itself when the lease runs out.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for (name, rev) in held {
                    if release(&js, &name, rev).await == Wrote::Failed {
                        debug!(name, "permit not released; it expires with its lease");
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_told_from_permits() {
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, *v);
            }
            m
        };
        assert!(!is_marker(None));
        assert!(!is_marker(Some(&h(&[("Nats-TTL", "30")]))));
        assert!(is_marker(Some(&h(&[("KV-Operation", "PURGE")]))));
        assert!(is_marker(Some(&h(&[("KV-Operation", "DEL")]))));
        assert!(is_marker(Some(&h(&[("Nats-Marker-Reason", "MaxAge")]))));
        assert_eq!(subject("c.0.sleep"), "$KV.fleet-permits.c.0.sleep");
    }
}
