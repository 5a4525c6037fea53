//! One task, start to end: read the envelope, run the handler with its
//! deadline and progress acks, publish the result, and only then ack.
//!
//! | outcome                         | result published | then        |
//! |---------------------------------|------------------|-------------|
//! | ok                              | ok               | ack         |
//! | retryable error, attempts left  | none             | nak, backoff|
//! | retryable error, attempts used  | error            | dead, term  |
//! | error that will not pass (4xx)  | error            | dead, term  |
//! | cancelled by shutdown           | none             | nak now     |
//!
//! A result under `results.` is written with JetStream and the node waits for
//! its PubAck. On the task's own subject (`results.<task-id>`) it carries
//! `Nats-Expected-Last-Subject-Sequence: 0`; on a shared one, `Nats-Msg-Id`.
//! Either fence turns a second result for the same task into a refusal,
//! which the node takes as "already done" and acks quietly.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::{HeaderMap, Message, Subject};
use bytes::Bytes;
use futures::FutureExt;
use tokio::time::{interval_at, sleep_until, Instant};
use tracing::{debug, warn};

use super::{Shared, Slot};
use crate::contract::{self, code};
use crate::error::TaskError;
use crate::task::{kind_of, no_such_kind, Delivery, Envelope, Task};

enum Outcome {
    Done(Bytes),
    Failed(TaskError),
    Cancelled,
}

/// The parts of one delivery the steps below need.
struct Ctx<'a> {
    shared: &'a Shared,
    msg: &'a Message,
    ack: Subject,
    kind: &'a str,
    delivery: Delivery,
    envelope: Envelope,
}

/// Runs one delivery. `slot` is held while the handler runs; publishing the
/// result and acking hold a `finishing` permit instead, so slots bound the
/// handlers at work, not the round trips to the server after them.
pub(super) async fn run(shared: &Shared, msg: Message, slot: Slot) {
    let Some(ack) = msg.reply.clone() else {
        warn!(subject = %msg.subject, "message without an ack subject: not a task delivery");
        return;
    };
    let Some(delivery) = Delivery::parse(&ack) else {
        warn!(%ack, "cannot read the delivery's ack subject; leaving it for redelivery");
        return;
    };
    let config = &shared.config;
    let kind = kind_of(&msg.subject).unwrap_or_default();
    let read = Envelope::read(
        msg.headers.as_ref(),
        delivery.stream_seq,
        config.task_timeout,
        &config.allowed_replies,
    );
    let (envelope, outcome) = match read {
        Ok(envelope) => {
            let outcome = execute(shared, &msg, kind, delivery, &envelope).await;
            (envelope, outcome)
        }
        Err((envelope, err)) => (envelope, Outcome::Failed(err)),
    };
    let ctx = Ctx {
        shared,
        msg: &msg,
        ack,
        kind,
        delivery,
        envelope,
    };
    // Too many results on their way out: keep the slot, so pulling slows.
    let finishing = shared.finishing.clone().acquire_owned().await;
    drop(slot);
    finish(&ctx, outcome).await;
    drop(finishing);
}

async fn execute(
    shared: &Shared,
    msg: &Message,
    kind: &str,
    delivery: Delivery,
    envelope: &Envelope,
) -> Outcome {
    let config = &shared.config;
    let Some(handler) = shared.registry.get(kind) else {
        return Outcome::Failed(no_such_kind(kind));
    };
    if delivery.attempt > config.max_deliver + contract::UNFINISHED_ALLOWANCE {
        // Delivered again and again without ever failing in a handler:
        // nodes died running it (a poison task), or it was handed back.
        return Outcome::Failed(TaskError::new(
            code::HANDLER_FAILED,
            false,
            format!(
                "delivered {} times without finishing (attempts: {}): nodes died or stopped while running it",
                delivery.attempt - 1,
                config.max_deliver
            ),
        ));
    }
    let deadline = Instant::now() + envelope.timeout;
    let task = Task {
        id: envelope.id.clone(),
        kind: kind.to_string(),
        attempt: delivery.attempt,
        deadline,
        payload: msg.payload.clone(),
        headers: msg.headers.clone().map(Arc::new).unwrap_or_default(),
    };
    let started = std::panic::catch_unwind(AssertUnwindSafe(|| handler.call(task)));
    let Ok(future) = started else {
        return Outcome::Failed(TaskError::retry("handler panicked"));
    };
    let mut future = AssertUnwindSafe(future).catch_unwind();
    let every = (config.ack_wait / 3).max(Duration::from_millis(100));
    let mut progress = interval_at(Instant::now() + every, every);
    let mut cancel = shared.cancel.clone();
    let ack = msg.reply.clone().expect("checked by run");
    loop {
        tokio::select! {
            result = &mut future => return match result {
                Ok(Ok(output)) => Outcome::Done(output),
                Ok(Err(err)) => Outcome::Failed(err),
                Err(panic) => Outcome::Failed(TaskError::retry(format!("handler panicked: {}", panic_text(&panic)))),
            },
            _ = sleep_until(deadline) => return Outcome::Failed(TaskError::new(
                code::TIMED_OUT,
                true,
                format!("timed out after {}", humantime::format_duration(envelope.timeout)),
            )),
            _ = progress.tick() => {
                if let Err(err) = shared.client.publish(ack.clone(), Bytes::from_static(b"+WPI")).await {
                    debug!(%err, "progress ack not sent");
                }
            }
            _ = async { let _ = cancel.wait_for(|stop| *stop).await; } => return Outcome::Cancelled,
        }
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic".to_string()
    }
}

async fn finish(ctx: &Ctx<'_>, outcome: Outcome) {
    let counters = &ctx.shared.counters;
    let attempts = ctx.shared.config.max_deliver;
    match outcome {
        Outcome::Cancelled => {
            counters.handed_back.fetch_add(1, Ordering::Relaxed);
            reply_ack(ctx, Bytes::from_static(b"-NAK")).await;
        }
        Outcome::Done(output) => match write_result(ctx, output, None).await {
            Ok(_) => {
                counters.ok.fetch_add(1, Ordering::Relaxed);
                reply_ack(ctx, Bytes::from_static(b"+ACK")).await;
            }
            Err(err) if err.code() == code::TOO_LARGE => fail_for_good(ctx, err).await,
            Err(err) => retry_later(ctx, &err, Duration::from_secs(1)).await,
        },
        Outcome::Failed(err) if err.is_retryable() && ctx.delivery.attempt < attempts => {
            counters.retried.fetch_add(1, Ordering::Relaxed);
            let delay = backoff(ctx.shared.config.retry_delay, ctx.delivery.attempt);
            debug!(task = %ctx.envelope.id, attempt = ctx.delivery.attempt, %err, ?delay, "retrying");
            nak_with_delay(ctx, delay).await;
        }
        Outcome::Failed(err) => fail_for_good(ctx, err).await,
    }
}

/// Error result, copy to `dead.<kind>`, then term. On any publish failure the
/// task is handed back to try the whole step again (both writes are fenced by
/// message id, so a second try never doubles them).
async fn fail_for_good(ctx: &Ctx<'_>, err: TaskError) {
    warn!(task = %ctx.envelope.id, kind = ctx.kind, attempt = ctx.delivery.attempt, %err, "task failed");
    if let Err(dead_err) = dead_letter(ctx, &err).await {
        return retry_later(ctx, &dead_err, Duration::from_secs(1)).await;
    }
    match write_result(ctx, Bytes::new(), Some(&err)).await {
        Ok(_) => {
            ctx.shared.counters.failed.fetch_add(1, Ordering::Relaxed);
            reply_ack(ctx, Bytes::from_static(b"+TERM")).await;
        }
        Err(write_err) => retry_later(ctx, &write_err, Duration::from_secs(1)).await,
    }
}

async fn retry_later(ctx: &Ctx<'_>, err: &TaskError, delay: Duration) {
    warn!(task = %ctx.envelope.id, %err, "could not finish the task; it will run again");
    nak_with_delay(ctx, delay).await;
}

/// Delay before attempt `attempt + 1`: `base * 2^(attempt-1)`, capped.
pub(crate) fn backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    base.saturating_mul(factor).min(contract::RETRY_MAX_DELAY)
}

async fn nak_with_delay(ctx: &Ctx<'_>, delay: Duration) {
    let body = format!("-NAK {{\"delay\":{}}}", delay.as_nanos());
    reply_ack(ctx, body.into()).await;
}

async fn reply_ack(ctx: &Ctx<'_>, body: Bytes) {
    if let Err(err) = ctx.shared.client.publish(ctx.ack.clone(), body).await {
        warn!(%err, task = %ctx.envelope.id, "ack not sent; the task returns after ack_wait");
    }
}

fn result_headers(ctx: &Ctx<'_>, error: Option<&TaskError>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(contract::HDR_TASK_ID, ctx.envelope.id.as_str());
    headers.insert(contract::HDR_TASK_NODE, ctx.shared.node_header.clone());
    headers.insert(
        contract::HDR_TASK_ATTEMPT,
        ctx.delivery.attempt.to_string().as_str(),
    );
    if let Some(err) = error {
        headers.insert(
            contract::HDR_SERVICE_ERROR,
            one_line(err.message()).as_str(),
        );
        headers.insert(
            contract::HDR_SERVICE_ERROR_CODE,
            err.code().to_string().as_str(),
        );
    }
    headers
}

/// Header values are one line of printable text.
fn one_line(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    flat.chars().take(1024).collect()
}

/// Publishes the task's result (ok when `error` is `None`). A result refused
/// because an earlier attempt committed one counts as written.
async fn write_result(
    ctx: &Ctx<'_>,
    output: Bytes,
    error: Option<&TaskError>,
) -> Result<(), TaskError> {
    let headers = result_headers(ctx, error);
    let reply = ctx.envelope.reply.as_str();
    if !reply.starts_with(contract::RESULT_PREFIX) {
        // A core reply subject (an inbox): nothing keeps it, nothing to wait for.
        return ctx
            .shared
            .client
            .publish_with_headers(reply.to_string(), headers, output)
            .await
            .map(|_| ())
            .map_err(|e| match e.kind() {
                async_nats::client::PublishErrorKind::MaxPayloadExceeded => too_large(&e),
                _ => TaskError::retry(format!("publishing the result: {e}")),
            });
    }
    let publish = Publish::build().payload(output).headers(headers);
    // The subject fence needs no message id (and spares the server its
    // duplicate tracking); a shared reply subject has only the id.
    let publish = if ctx.envelope.reply_is_own() {
        publish.expected_last_subject_sequence(0)
    } else {
        publish.message_id(format!("result-{}", ctx.delivery.stream_seq))
    };
    let ack = match ctx.shared.js.send_publish(reply.to_string(), publish).await {
        Ok(ack) => ack.await,
        Err(e) => Err(e),
    };
    let fenced = match &ack {
        Ok(ack) => ack.duplicate,
        Err(e) => e.kind() == PublishErrorKind::WrongLastSequence,
    };
    if fenced {
        debug!(task = %ctx.envelope.id, "result already committed by an earlier attempt");
        return Ok(());
    }
    match ack {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => Err(too_large(&e)),
        Err(e) => Err(TaskError::retry(format!("keeping the result: {e}"))),
    }
}

fn too_large(err: &dyn std::fmt::Display) -> TaskError {
    TaskError::new(code::TOO_LARGE, false, format!("result too large: {err}"))
}

/// Copies the task to `dead.<kind>` with what went wrong.
async fn dead_letter(ctx: &Ctx<'_>, err: &TaskError) -> Result<(), TaskError> {
    let mut headers = HeaderMap::new();
    // Keep the task's own headers for a replay, but not the JetStream ones
    // (`Nats-Msg-Id`, `Nats-Expected-*`): they would refuse the copy.
    for (name, values) in ctx.msg.headers.iter().flat_map(|h| h.iter()) {
        if !AsRef::<str>::as_ref(name)
            .to_ascii_lowercase()
            .starts_with("nats-")
        {
            for value in values {
                headers.append(name.clone(), value.clone());
            }
        }
    }
    for (name, value) in [
        (contract::HDR_TASK_ID, ctx.envelope.id.clone()),
        (contract::HDR_TASK_KIND, ctx.kind.to_string()),
        (contract::HDR_TASK_SEQ, ctx.delivery.stream_seq.to_string()),
        (contract::HDR_TASK_ATTEMPT, ctx.delivery.attempt.to_string()),
        (contract::HDR_TASK_NODE, ctx.shared.config.name.clone()),
        (contract::HDR_SERVICE_ERROR, one_line(err.message())),
        (contract::HDR_SERVICE_ERROR_CODE, err.code().to_string()),
    ] {
        headers.insert(name, value.as_str());
    }
    let kind = if ctx.kind.is_empty() { "_" } else { ctx.kind };
    let publish = Publish::build()
        .payload(ctx.msg.payload.clone())
        .headers(headers)
        .message_id(format!("dead-{}", ctx.delivery.stream_seq));
    let ack = match ctx
        .shared
        .js
        .send_publish(contract::dead_subject(kind), publish)
        .await
    {
        Ok(ack) => ack.await,
        Err(e) => Err(e),
    };
    ack.map(|_| ())
        .map_err(|e| TaskError::retry(format!("writing the dead letter: {e}")))
}
