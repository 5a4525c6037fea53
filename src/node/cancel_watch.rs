//! Watching the cancel marks: an ordered push consumer on the bucket's
//! stream, last value per key first, read before the node pulls; then each
//! change as it is written. What the marks mean is [`super::cancel`]'s.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::push::{Ordered, OrderedConfig};
use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::Context;
use futures::StreamExt;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::cancel::{change, Change, Mark, Marks};
use crate::contract;

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
pub(super) async fn watch(js: &Context, marks: Arc<Marks>) -> Watch {
    let follow = match tokio::time::timeout(SNAPSHOT_WAIT, open(js)).await {
        Ok(Ok((snapshot, messages))) => {
            marks.replace(snapshot);
            debug!(marks = marks.count(), "cancel marks read");
            Some(messages)
        }
        Ok(Err(err)) => {
            warn!(%err, "cannot read cancel marks; running without them and trying again (fleet setup makes the bucket)");
            None
        }
        Err(_) => {
            warn!("cancel marks not read within {SNAPSHOT_WAIT:?}; running without them and trying again");
            None
        }
    };
    let js = js.clone();
    Watch {
        task: tokio::spawn(follow_bucket(js, marks, follow)),
    }
}

/// Applies every change; opens the watch again (and re-reads the marks)
/// whenever it breaks.
async fn follow_bucket(js: Context, marks: Arc<Marks>, mut messages: Option<Ordered>) {
    let mut failures = 0u32;
    loop {
        let Some(stream) = messages.as_mut() else {
            let delay = REOPEN_DELAY.saturating_mul(1 << failures.min(6));
            tokio::time::sleep(delay.min(REOPEN_MAX_DELAY)).await;
            match open(&js).await {
                Ok((snapshot, stream)) => {
                    marks.replace(snapshot);
                    info!(marks = marks.count(), "watching cancel marks");
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
                if let Some(change) = change(&msg.subject, msg.headers.as_ref()) {
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
async fn open(js: &Context) -> Result<(HashSet<Mark>, Ordered), String> {
    let stream = js
        .get_stream_no_info(format!("KV_{}", contract::CANCEL_BUCKET))
        .await
        .map_err(|e| e.to_string())?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_subject: js.client().new_inbox(),
            description: Some("fleet node: cancel marks".to_string()),
            // Last per subject needs a filter; given as a list, it stays
            // out of the create subject (`$JS.API.CONSUMER.CREATE.<stream>`).
            filter_subjects: vec![format!("$KV.{}.>", contract::CANCEL_BUCKET)],
            deliver_policy: DeliverPolicy::LastPerSubject,
            replay_policy: ReplayPolicy::Instant,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("watching bucket {}: {e}", contract::CANCEL_BUCKET))?;
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
        match change(&msg.subject, msg.headers.as_ref()) {
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
