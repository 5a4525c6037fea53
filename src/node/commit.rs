//! The two writes a task may end with: its result and its dead letter.
//!
//! A result under `results.` is written with JetStream and the node waits for
//! its PubAck. On the task's own subject (`results.<task-id>`) it carries
//! `Nats-Expected-Last-Subject-Sequence: 0`; on a shared one,
//! `Nats-Msg-Id: result-<TASKS seq>`. Either fence turns a second result for
//! the same task into a refusal, reported as [`Written::AlreadyKept`]. A
//! dead letter carries `Nats-Msg-Id: dead-<TASKS seq>`.

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::HeaderMap;
use bytes::Bytes;
use tracing::debug;

use std::sync::Arc;
use std::time::SystemTime;

use async_nats::jetstream;

use super::decide::Written;
use super::kind_metrics::KindMetrics;
use super::Shared;
use crate::contract::{self, header, msg_id};
use crate::envelope::{header_bytes, one_line, Delivery, Envelope};
use crate::error::TaskError;

/// The delivery being finished: what the writes below need.
pub(super) struct Ctx<'a> {
    pub(super) shared: &'a Shared,
    pub(super) msg: &'a jetstream::Message,
    /// The task's headers (moved out of `msg`).
    pub(super) headers: Arc<HeaderMap>,
    pub(super) kind: &'a str,
    pub(super) delivery: Delivery,
    pub(super) envelope: Envelope,
    /// When this node began the attempt.
    pub(super) started: SystemTime,
    /// The task kind's metrics.
    pub(super) metrics: &'a KindMetrics,
}

/// Room kept under `max_payload` for the subject and framing of a message.
const FRAMING: usize = 512;

/// The headers of a task's result (ok when `error` is `None`).
fn result_headers(ctx: &Ctx<'_>, error: Option<&TaskError>) -> HeaderMap {
    // Names made without copying, values moved in: no allocation per
    // header beyond its value (this runs once per task).
    let mut headers = HeaderMap::new();
    headers.insert(header::name(header::TASK_ID), ctx.envelope.id.as_str());
    headers.insert(
        header::name(header::TASK_NODE),
        ctx.shared.node_header.clone(),
    );
    headers.insert(
        header::name(header::TASK_ATTEMPT),
        ctx.delivery.attempt.to_string(),
    );
    headers.insert(
        header::name(header::TASK_STARTED),
        header::stamp(ctx.started),
    );
    headers.insert(
        header::name(header::TASK_FINISHED),
        header::stamp(SystemTime::now()),
    );
    if let Some(err) = error {
        headers.insert(header::SERVICE_ERROR, one_line(err.message()).as_str());
        headers.insert(header::SERVICE_ERROR_CODE, err.code().to_string().as_str());
    }
    ctx.envelope.control.result_headers(error, &mut headers);
    headers
}

/// Publishes the task's result (ok when `error` is `None`).
pub(super) async fn result(ctx: &Ctx<'_>, output: Bytes, error: Option<&TaskError>) -> Written {
    let headers = result_headers(ctx, error);
    let subject = ctx.envelope.result_subject();
    if !ctx.envelope.reply_is_kept() {
        // An inbox reply of a site's task: published where the node is
        // (inboxes cross the leaf connection as they are).
        // A core reply subject (an inbox): nothing keeps it, nothing to wait for.
        return match ctx
            .shared
            .client
            .publish_with_headers(subject, headers, output)
            .await
        {
            Ok(()) => Written::Kept,
            Err(e) if e.kind() == async_nats::client::PublishErrorKind::MaxPayloadExceeded => {
                Written::TooLarge(e.to_string())
            }
            Err(e) => Written::Failed(format!("publishing the result: {e}")),
        };
    }
    let publish = PublishMessage::build().payload(output).headers(headers);
    // The subject fence needs no message id (and spares the server its
    // duplicate tracking); a shared reply subject has only the id.
    let publish = if ctx.envelope.reply_is_own() {
        publish.expected_last_subject_sequence(0)
    } else {
        publish.message_id(msg_id::result(
            ctx.delivery.stream_seq,
            ctx.delivery.stored_ns,
        ))
    };
    // A site's task taken from the centre: written under `edge.<domain>.`,
    // which the site maps back into its own RESULTS, fence and all.
    let subject = ctx.shared.config.edge.write_subject(subject);
    let written = written(confirm(ctx, subject, publish).await);
    if written == Written::AlreadyKept {
        ctx.shared.observer.refused();
        debug!(task = %ctx.envelope.id, "result already committed by an earlier attempt");
    }
    written
}

/// Copies the task to `dead.<kind>` with what went wrong. A payload that
/// would not fit under `max_payload` with the added headers is cut, and
/// `Task-Truncated` says how long it was.
pub(super) async fn dead_letter(ctx: &Ctx<'_>, err: &TaskError) -> Written {
    // Keep the task's own headers for a replay, but not the JetStream ones
    // (`Nats-Msg-Id`, `Nats-Expected-*`): they would refuse the copy.
    let mut headers = header::copy_own(&ctx.headers, &[], &[]);
    for (name, value) in [
        (header::TASK_ID, ctx.envelope.id.clone()),
        (header::TASK_KIND, ctx.kind.to_string()),
        // The band it ran in, which its subject said: where a replay goes.
        (
            header::TASK_PRIORITY,
            crate::envelope::route(&ctx.msg.subject).band.to_string(),
        ),
        (header::TASK_SEQ, ctx.delivery.stream_seq.to_string()),
        (header::TASK_ATTEMPT, ctx.delivery.attempt.to_string()),
        (header::TASK_NODE, ctx.shared.config.name.clone()),
        (header::SERVICE_ERROR, one_line(err.message())),
        (header::SERVICE_ERROR_CODE, err.code().to_string()),
    ] {
        headers.insert(name, value.as_str());
    }
    let mut payload = ctx.msg.payload.clone();
    let room = ctx
        .shared
        .client
        .max_payload()
        .saturating_sub(header_bytes(&headers) + FRAMING);
    if payload.len() > room {
        headers.insert(header::TASK_TRUNCATED, payload.len().to_string().as_str());
        payload.truncate(room);
    }
    let kind = if ctx.kind.is_empty() { "_" } else { ctx.kind };
    let publish = PublishMessage::build()
        .payload(payload)
        .headers(headers)
        .message_id(msg_id::dead(
            ctx.delivery.stream_seq,
            ctx.delivery.stored_ns,
        ));
    let subject = ctx.shared.config.edge.write_subject(contract::in_tenant(
        ctx.envelope.tenant.as_deref(),
        &contract::dead_subject(kind),
    ));
    match written(confirm(ctx, subject, publish).await) {
        Written::Failed(e) | Written::TooLarge(e) => {
            Written::Failed(format!("writing the dead letter: {e}"))
        }
        other => other,
    }
}

/// Publishes with JetStream and waits for the PubAck.
async fn confirm(
    ctx: &Ctx<'_>,
    subject: String,
    publish: PublishMessage,
) -> Result<PublishAck, PublishError> {
    match ctx.shared.js.send_publish(subject, publish).await {
        Ok(ack) => ack.await,
        Err(e) => Err(e),
    }
}

/// What a JetStream publish's answer means for the task.
fn written(ack: Result<PublishAck, PublishError>) -> Written {
    match ack {
        Ok(ack) if ack.duplicate => Written::AlreadyKept,
        Ok(_) => Written::Kept,
        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Written::AlreadyKept,
        Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
            Written::TooLarge(e.to_string())
        }
        Err(e) => Written::Failed(e.to_string()),
    }
}
