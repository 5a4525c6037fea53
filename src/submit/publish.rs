//! Publishing one task and waiting for JetStream to store it, again with
//! the same `Nats-Msg-Id` after an error that may pass (the server
//! restarting, a lost PubAck): the id keeps a second publish from doubling.

use std::time::Duration;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::Context;
use async_nats::{HeaderMap, Message, Subject};
use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::time::Instant;
use tracing::debug;

use crate::contract::header;

/// What became of one task.
pub(super) enum Accepted {
    /// JetStream stored it.
    Stored,
    /// An earlier run of the batch got its result: here it is.
    AlreadyDone(Message),
    /// JetStream did not store it.
    Refused(PublishError),
}

/// Resolves to the task's number and what became of it.
pub(super) type AckFuture = BoxFuture<'static, (u64, Accepted)>;

/// How long to wait before publishing a task again.
const AGAIN_AFTER: Duration = Duration::from_millis(250);

/// One task to publish.
pub(super) struct Task {
    pub(super) n: u64,
    pub(super) id: String,
    pub(super) reply: String,
    pub(super) timeout: Option<String>,
    pub(super) payload: Bytes,
    /// `Nats-Msg-Id`: the id, salted per credentials when a salt is given.
    pub(super) msg_id: String,
    /// Look for a kept result (on `reply`) before publishing: resuming a batch.
    pub(super) look_first: bool,
    /// No task of the run is stored yet: "no stream" is then an answer (the
    /// streams do not exist), not a moment of a server restart to wait out.
    pub(super) first: bool,
}

/// Publishes `task` to `subject` until JetStream stores it, refuses it for
/// good, or `deadline` passes; first looks for its kept result when resuming.
pub(super) fn confirmed(js: Context, subject: Subject, task: Task, deadline: Instant) -> AckFuture {
    Box::pin(async move {
        if task.look_first {
            if let Some(kept) = super::kept::last(&js.client(), &task.reply).await {
                return (task.n, Accepted::AlreadyDone(kept));
            }
        }
        loop {
            // Built per attempt (almost always one), not cloned.
            let publish = PublishMessage::build()
                .payload(task.payload.clone())
                .headers(headers(&task))
                .message_id(&task.msg_id);
            let accepted = match js.send_publish(subject.clone(), publish).await {
                Ok(ack) => ack.await.map(|_| ()),
                Err(err) => Err(err),
            };
            match accepted {
                Err(err) if task.first && err.kind() == PublishErrorKind::StreamNotFound => {
                    return (task.n, Accepted::Refused(err))
                }
                Err(err) if transient(&err) && Instant::now() < deadline => {
                    debug!(%err, task = %task.id, "publish not confirmed; publishing again");
                    tokio::time::sleep(AGAIN_AFTER).await;
                }
                Err(err) => return (task.n, Accepted::Refused(err)),
                Ok(()) => return (task.n, Accepted::Stored),
            }
        }
    })
}

/// The headers of a task.
fn headers(task: &Task) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::TASK_ID, task.id.as_str());
    headers.insert(header::REPLY_TO, task.reply.as_str());
    if let Some(timeout) = &task.timeout {
        headers.insert(header::TASK_TIMEOUT, timeout.as_str());
    }
    headers
}

/// Errors after which the same publish may succeed (no stream answers
/// while a cluster elects a leader; a full queue drains).
fn transient(err: &PublishError) -> bool {
    !matches!(err.kind(), PublishErrorKind::MaxPayloadExceeded)
}

/// Why JetStream refused a task, in the words a submitter acts on.
pub(super) fn refusal(err: &PublishError) -> String {
    let text = err.to_string();
    if text.contains("maximum messages") || text.contains("maximum bytes") {
        format!(
            "the queue is full ({} is at its max_msgs or max_bytes; see fleet status): {text}",
            crate::contract::TASKS_STREAM
        )
    } else {
        text
    }
}
