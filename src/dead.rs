//! Dead letters: tasks that ended in failure, kept in `DEAD` with their
//! payload, headers and last error. `list` shows them; `replay` puts them back
//! on `TASKS` and removes them from `DEAD`.

use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::jetstream::Context;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;

use crate::contract::{self, header, msg_id};
use crate::error::{Error, ErrorKind, ResultExt};

/// One dead letter.
#[derive(Debug, Clone, Serialize)]
pub struct DeadTask {
    /// Its sequence in `DEAD`.
    pub seq: u64,
    /// The task's kind.
    pub kind: String,
    /// The task's id.
    pub id: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last error's code.
    pub code: u16,
    /// The last error.
    pub error: String,
    /// Payload size in bytes.
    pub bytes: usize,
    #[serde(skip)]
    headers: HeaderMap,
    #[serde(skip)]
    payload: Bytes,
}

/// Headers the node adds to a dead letter; dropped again on replay.
const DEAD_ONLY: &[&str] = &[
    header::TASK_KIND,
    header::TASK_SEQ,
    header::TASK_ATTEMPT,
    header::TASK_NODE,
    header::TASK_TRUNCATED,
    header::SERVICE_ERROR,
    header::SERVICE_ERROR_CODE,
];

/// Every dead letter, or those of `kind`.
///
/// # Errors
/// [`ErrorKind::Setup`] when `DEAD` is missing, [`ErrorKind::Connection`]
/// when NATS does not answer.
pub async fn list(js: &Context, kind: Option<&str>) -> Result<Vec<DeadTask>, Error> {
    let stream = js
        .get_stream(contract::DEAD_STREAM)
        .await
        .or_fail(ErrorKind::Setup, || "reading dead letters".into())?;
    let filter = contract::dead_subject(kind.unwrap_or(">"));
    let mut consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: filter,
            ..Default::default()
        })
        .await
        .or_fail(ErrorKind::Setup, || "reading dead letters".into())?;
    let mut dead = Vec::new();
    if consumer
        .info()
        .await
        .or_fail(ErrorKind::Connection, || "reading dead letters".into())?
        .num_pending
        == 0
    {
        return Ok(dead);
    }
    let mut messages = consumer
        .messages()
        .await
        .or_fail(ErrorKind::Connection, || "reading dead letters".into())?;
    while let Some(msg) = messages.next().await {
        let msg = msg.or_fail(ErrorKind::Connection, || "reading dead letters".into())?;
        let info = msg.info().or_fail(ErrorKind::Connection, || {
            "reading a dead letter's delivery".into()
        })?;
        let (seq, pending) = (info.stream_sequence, info.pending);
        let headers = msg.headers.clone().unwrap_or_default();
        let get = |name: &str| {
            headers
                .get(name)
                .map(|v| v.as_str().to_string())
                .unwrap_or_default()
        };
        dead.push(DeadTask {
            seq,
            kind: msg
                .subject
                .strip_prefix(contract::DEAD_PREFIX)
                .unwrap_or_default()
                .to_string(),
            id: get(header::TASK_ID),
            attempts: get(header::TASK_ATTEMPT).parse().unwrap_or(0),
            code: get(header::SERVICE_ERROR_CODE).parse().unwrap_or(0),
            error: get(header::SERVICE_ERROR),
            bytes: msg.payload.len(),
            payload: msg.payload.clone(),
            headers: headers.clone(),
        });
        if pending == 0 {
            break;
        }
    }
    Ok(dead)
}

/// Puts dead letters back on `TASKS`: those of `kind`, and of `ids` (task
/// ids or `DEAD` sequences) when any are given. A replayed task's old result
/// is purged from `RESULTS` when the subject was its own, so the new result
/// can be kept. Returns the tasks replayed.
///
/// # Errors
/// As [`list`]; a publish that JetStream does not confirm stops the replay
/// (what was replayed stays replayed, the rest stays dead).
pub async fn replay(
    js: &Context,
    kind: Option<&str>,
    ids: &[String],
) -> Result<Vec<DeadTask>, Error> {
    let chosen: Vec<DeadTask> = list(js, kind)
        .await?
        .into_iter()
        .filter(|d| ids.is_empty() || ids.iter().any(|i| *i == d.id || *i == d.seq.to_string()))
        .collect();
    let dead_stream = js
        .get_stream(contract::DEAD_STREAM)
        .await
        .or_fail(ErrorKind::Setup, || "reading dead letters".into())?;
    let results = js
        .get_stream(contract::RESULTS_STREAM)
        .await
        .or_fail(ErrorKind::Setup, || "reading dead letters".into())?;
    for task in &chosen {
        let mut headers = HeaderMap::new();
        for (name, values) in task.headers.iter() {
            if DEAD_ONLY
                .iter()
                .any(|d| d.eq_ignore_ascii_case(AsRef::<str>::as_ref(name)))
            {
                continue;
            }
            for value in values {
                headers.append(name.clone(), value.clone());
            }
        }
        let own_reply = contract::default_reply(&task.id);
        let reply = headers
            .get(header::REPLY_TO)
            .map(|v| v.as_str().to_string());
        if !task.id.is_empty() && reply.as_deref().is_none_or(|r| r == own_reply) {
            results
                .purge()
                .filter(own_reply.as_str())
                .await
                .or_fail(ErrorKind::Connection, || "reading dead letters".into())?;
        }
        let publish = Publish::build()
            .payload(task.payload.clone())
            .headers(headers)
            .message_id(format!("{}{}", msg_id::REPLAY, task.seq));
        js.send_publish(contract::task_subject(&task.kind), publish)
            .await
            .or_fail(ErrorKind::Connection, || "reading dead letters".into())?
            .await
            .or_fail(ErrorKind::Connection, || "reading dead letters".into())?;
        dead_stream
            .delete_message(task.seq)
            .await
            .or_fail(ErrorKind::Connection, || "reading dead letters".into())?;
    }
    Ok(chosen)
}
