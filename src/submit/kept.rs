//! Reading results kept in `RESULTS`: all of a batch (to resume it), or one
//! task's (a result sent while the submitter was away).

use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::stream::Stream as JsStream;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;

use crate::contract;
use crate::error::{Error, ErrorKind, ResultExt};

/// A kept result: task number, headers, payload.
pub(crate) type Kept = (u64, Option<HeaderMap>, Bytes);

/// Every result kept under `prefix` (`results.<batch>.`).
pub(crate) async fn all(stream: &JsStream, prefix: &str) -> Result<Vec<Kept>, Error> {
    let mut consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: format!("{prefix}>"),
            ..Default::default()
        })
        .await
        .or_fail(ErrorKind::Setup, || {
            format!("reading kept results under {prefix}")
        })?;
    let mut kept = Vec::new();
    let info = consumer
        .info()
        .await
        .or_fail(ErrorKind::Connection, || "reading kept results".into())?;
    if info.num_pending == 0 {
        return Ok(kept);
    }
    let mut messages = consumer
        .messages()
        .await
        .or_fail(ErrorKind::Connection, || "reading kept results".into())?;
    while let Some(msg) = messages.next().await {
        let msg = msg.or_fail(ErrorKind::Connection, || "reading kept results".into())?;
        let pending = msg.info().map(|i| i.pending).unwrap_or(0);
        if let Some(n) = contract::task_number(&msg.subject, prefix) {
            kept.push((n, msg.headers.clone(), msg.payload.clone()));
        }
        if pending == 0 {
            break;
        }
    }
    Ok(kept)
}

/// The result kept for task `n` under `prefix`, if any.
pub(crate) async fn one(stream: &JsStream, prefix: &str, n: u64) -> Option<Kept> {
    let subject = format!("{prefix}{n}");
    let kept = stream.direct_get_last_for_subject(subject).await.ok()?;
    Some((n, Some(kept.headers), kept.payload))
}
