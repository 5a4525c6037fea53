//! Following a key-value bucket as `cancel_watch.rs` follows the cancel
//! marks: an ordered push consumer on the bucket's stream, the last write
//! of every key first (read before the node pulls), then each change as it
//! is written; opened again, and the snapshot re-read, when it breaks.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::push::{Ordered, OrderedConfig};
use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::Context;
use bytes::Bytes;
use futures::StreamExt;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::permits::is_marker;

/// How long a starting node waits for a bucket before it pulls anyway.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(5);
/// Pause before opening a broken watch again, doubled up to a minute.
const REOPEN_DELAY: Duration = Duration::from_secs(1);

/// What a watch feeds.
pub(super) trait Sink: Send + Sync + 'static {
    /// Forget everything: the snapshot is read again.
    fn reset(&self);
    /// Key `name` was written at `rev`: `value`, or `None` for a marker.
    fn apply(&self, name: &str, rev: u64, value: Option<Bytes>);
    /// The snapshot is read, or a change came in.
    fn changed(&self);
}

/// Reads `bucket` (waiting at most [`SNAPSHOT_WAIT`]) into `sink`, then
/// follows it in the background until the handle is aborted.
pub(super) async fn follow(
    js: &Context,
    bucket: &'static str,
    sink: Arc<dyn Sink>,
) -> JoinHandle<()> {
    let first = match tokio::time::timeout(SNAPSHOT_WAIT, open(js, bucket, &*sink)).await {
        Ok(Ok(messages)) => Some(messages),
        Ok(Err(err)) => {
            warn!(%err, bucket, "cannot read the bucket; running without it and trying again (fleet setup makes it)");
            None
        }
        Err(_) => {
            warn!(
                bucket,
                "bucket not read within {SNAPSHOT_WAIT:?}; trying again"
            );
            None
        }
    };
    let js = js.clone();
    tokio::spawn(run(js, bucket, sink, first))
}

async fn run(
    js: Context,
    bucket: &'static str,
    sink: Arc<dyn Sink>,
    mut messages: Option<Ordered>,
) {
    let mut failures = 0u32;
    let prefix = format!("$KV.{bucket}.");
    loop {
        let Some(stream) = messages.as_mut() else {
            let delay = REOPEN_DELAY.saturating_mul(1 << failures.min(6));
            tokio::time::sleep(delay.min(Duration::from_secs(60))).await;
            match open(&js, bucket, &*sink).await {
                Ok(stream) => {
                    info!(bucket, "watching the bucket");
                    messages = Some(stream);
                    failures = 0;
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    if failures == 1 || failures.is_multiple_of(10) {
                        warn!(%err, bucket, failures, "cannot read the bucket; trying again");
                    }
                }
            }
            continue;
        };
        match stream.next().await {
            Some(Ok(msg)) => {
                let rev = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
                if let Some(name) = msg.subject.strip_prefix(prefix.as_str()) {
                    let value = (!is_marker(msg.headers.as_ref())).then(|| msg.payload.clone());
                    sink.apply(name, rev, value);
                    sink.changed();
                }
            }
            Some(Err(err)) => {
                warn!(%err, bucket, "the watch broke; reading the bucket again");
                messages = None;
            }
            None => messages = None,
        }
    }
}

async fn open(js: &Context, bucket: &str, sink: &dyn Sink) -> Result<Ordered, String> {
    let stream = js
        .get_stream_no_info(format!("KV_{bucket}"))
        .await
        .map_err(|e| e.to_string())?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_subject: js.client().new_inbox(),
            description: Some(format!("fleet node: {bucket}")),
            filter_subjects: vec![format!("$KV.{bucket}.>")],
            deliver_policy: DeliverPolicy::LastPerSubject,
            replay_policy: ReplayPolicy::Instant,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("watching bucket {bucket}: {e}"))?;
    let mut pending = consumer.cached_info().num_pending;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    sink.reset();
    let prefix = format!("$KV.{bucket}.");
    while pending > 0 {
        let msg = match messages.next().await {
            Some(Ok(msg)) => msg,
            Some(Err(err)) => return Err(err.to_string()),
            None => return Err("the watch ended while reading".to_string()),
        };
        let info = msg.info().map_err(|e| e.to_string())?;
        pending = info.pending;
        let rev = info.stream_sequence;
        if let Some(name) = msg.subject.strip_prefix(prefix.as_str()) {
            let value = (!is_marker(msg.headers.as_ref())).then(|| msg.payload.clone());
            sink.apply(name, rev, value);
        }
    }
    sink.changed();
    Ok(messages)
}
