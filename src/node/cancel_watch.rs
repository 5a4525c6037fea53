//! Watching the cancel marks: an ordered push consumer on the bucket's
//! stream, last value per key first, read before the node pulls; then each
//! change as it is written. What the marks mean is [`super::cancel`]'s.
//!
//! A tenant's own marks are in its own stream (`SCHEDULES_<t>`, see
//! `fleet::cancel::own`): the first task of a tenant a node takes opens a
//! watch of that stream the same way, and waits for its marks.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::consumer::push::{Ordered, OrderedConfig};
use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::Context;
use futures::StreamExt;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::cancel::{change, own_change, own_prefix, Change, Mark, Marks};
use crate::contract;

/// What a watch reads: the fleet's bucket, or one tenant's own marks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Source {
    /// `fleet-cancel`: the fleet's marks, and the admin's for tenants.
    Bucket,
    /// `tenant.<t>.sched.cancel.>` in `SCHEDULES_<t>`.
    Tenant(String),
}

impl Source {
    fn stream(&self) -> String {
        match self {
            Source::Bucket => format!("KV_{}", contract::CANCEL_BUCKET),
            Source::Tenant(t) => contract::tenant_schedules_stream(t),
        }
    }

    fn filter(&self) -> String {
        match self {
            Source::Bucket => format!("$KV.{}.>", contract::CANCEL_BUCKET),
            Source::Tenant(t) => format!("{}>", own_prefix(t)),
        }
    }

    fn change(&self, subject: &str, headers: Option<&async_nats::HeaderMap>) -> Option<Change> {
        match self {
            Source::Bucket => change(subject, headers),
            Source::Tenant(t) => own_change(t, subject, headers),
        }
    }

    /// The tenant whose own marks these are.
    fn own(&self) -> Option<&str> {
        match self {
            Source::Bucket => None,
            Source::Tenant(t) => Some(t),
        }
    }
}

/// The watches of tenants' own marks, each opened on the first task of
/// its tenant and kept while the node runs.
#[derive(Debug, Default)]
pub(super) struct Tenants {
    watches: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Watch>>>>,
}

impl Tenants {
    /// Watches `tenant`'s own marks from now on; the first call reads them
    /// (waiting at most [`SNAPSHOT_WAIT`]), later ones cost a lookup.
    pub(super) async fn ensure(&self, js: &Context, marks: &Arc<Marks>, tenant: &str) {
        let cell = {
            let mut watches = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
            match watches.get(tenant) {
                Some(cell) if cell.initialized() => return,
                Some(cell) => cell.clone(),
                None => watches.entry(tenant.to_string()).or_default().clone(),
            }
        };
        cell.get_or_init(|| watch(js, marks.clone(), Source::Tenant(tenant.to_string())))
            .await;
    }
}

/// How long a starting node waits for the marks before it pulls anyway.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(5);
/// Pause before opening a broken watch again; doubled after each failed
/// try, up to [`REOPEN_MAX_DELAY`].
const REOPEN_DELAY: Duration = Duration::from_secs(1);
/// Longest pause between two tries (a node without the bucket or the
/// permission must not fill the server's log).
const REOPEN_MAX_DELAY: Duration = Duration::from_secs(60);

/// Keeps [`Marks`] in step with the bucket until dropped.
#[derive(Debug)]
pub(super) struct Watch {
    task: JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads the marks (waiting at most [`SNAPSHOT_WAIT`]), then follows the
/// bucket in the background. A node that cannot read them (no bucket: run
/// `fleet setup`; no permission) says so and keeps trying.
pub(super) async fn watch(js: &Context, marks: Arc<Marks>, source: Source) -> Watch {
    let stream = source.stream();
    let follow = match tokio::time::timeout(SNAPSHOT_WAIT, open(js, &source)).await {
        Ok(Ok((snapshot, messages))) => {
            marks.replace(source.own(), snapshot);
            debug!(marks = marks.count(), %stream, "cancel marks read");
            Some(messages)
        }
        Ok(Err(err)) => {
            warn!(%err, %stream, "cannot read cancel marks; running without them and trying again (fleet setup makes the bucket, fleet setup --tenant a tenant's stream)");
            None
        }
        Err(_) => {
            warn!(%stream, "cancel marks not read within {SNAPSHOT_WAIT:?}; running without them and trying again");
            None
        }
    };
    let js = js.clone();
    Watch {
        task: tokio::spawn(follow_bucket(js, marks, source, follow)),
    }
}

/// Applies every change; opens the watch again (and re-reads the marks)
/// whenever it breaks.
async fn follow_bucket(
    js: Context,
    marks: Arc<Marks>,
    source: Source,
    mut messages: Option<Ordered>,
) {
    let mut failures = 0u32;
    loop {
        let Some(stream) = messages.as_mut() else {
            let delay = REOPEN_DELAY.saturating_mul(1 << failures.min(6));
            tokio::time::sleep(delay.min(REOPEN_MAX_DELAY)).await;
            match open(&js, &source).await {
                Ok((snapshot, stream)) => {
                    marks.replace(source.own(), snapshot);
                    info!(marks = marks.count(), stream = %source.stream(), "watching cancel marks");
                    messages = Some(stream);
                    failures = 0;
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    // Once, then every tenth try: a node may run long without the bucket.
                    if failures == 1 || failures.is_multiple_of(10) {
                        warn!(%err, failures, "cannot read cancel marks; trying again");
                    }
                }
            }
            continue;
        };
        match stream.next().await {
            Some(Ok(msg)) => {
                if let Some(change) = source.change(&msg.subject, msg.headers.as_ref()) {
                    debug!(?change, "cancel mark");
                    marks.apply(change);
                }
            }
            Some(Err(err)) => {
                warn!(%err, "the watch of cancel marks broke; reading them again");
                messages = None;
            }
            None => {
                warn!("the watch of cancel marks ended; reading them again");
                messages = None;
            }
        }
    }
}

/// Opens a watch: an ordered consumer delivering the last value of every
/// key, then each change. Returns the marks it read up to now and the watch.
async fn open(js: &Context, source: &Source) -> Result<(HashSet<Mark>, Ordered), String> {
    let stream = js
        .get_stream_no_info(source.stream())
        .await
        .map_err(|e| e.to_string())?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_subject: js.client().new_inbox(),
            description: Some("fleet node: cancel marks".to_string()),
            // Last per subject needs a filter; given as a list, it stays
            // out of the create subject (`$JS.API.CONSUMER.CREATE.<stream>`).
            filter_subjects: vec![source.filter()],
            deliver_policy: DeliverPolicy::LastPerSubject,
            replay_policy: ReplayPolicy::Instant,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("watching {}: {e}", source.stream()))?;
    let mut pending = consumer.cached_info().num_pending;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    let mut snapshot = HashSet::new();
    while pending > 0 {
        let msg = match messages.next().await {
            Some(Ok(msg)) => msg,
            Some(Err(err)) => return Err(err.to_string()),
            None => return Err("the watch ended while reading".to_string()),
        };
        pending = msg.info().map_err(|e| e.to_string())?.pending;
        match source.change(&msg.subject, msg.headers.as_ref()) {
            Some(Change::Put(mark)) => {
                snapshot.insert(mark);
            }
            Some(Change::Remove(mark)) => {
                snapshot.remove(&mark);
            }
            None => {}
        }
    }
    Ok((snapshot, messages))
}
