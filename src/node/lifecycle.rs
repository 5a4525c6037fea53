//! One task, start to end: read the envelope, run the handler with its
//! deadline and progress acks, then do what [`super::decide`] says with the
//! outcome (its table is the whole lifecycle on one screen).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, AckKind};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::FutureExt;
use tokio::time::{interval_at, sleep_until, Instant};
use tracing::{debug, warn};

use super::cancel;
use super::catch_up;
use super::commit::{self, Ctx};
use super::decide::{self, AckReply, Admission, Next, Ran, Verdict, Written};
use super::kind_metrics::KindMetrics;
use super::{Shared, Slot};
use crate::envelope::{no_such_kind, route, Delivery, Envelope, Route, Task};
use crate::error::{FailureKind, TaskError};

/// How an attempt ended.
pub(super) enum Outcome {
    Done(Bytes),
    Failed(TaskError),
    Cancelled,
}

/// Runs one delivery. `slot` is held while the handler runs; publishing the
/// result and acking hold a `finishing` permit instead, so slots bound the
/// handlers at work, not the round trips to the server after them.
pub(super) async fn run(shared: Arc<Shared>, mut msg: jetstream::Message, slot: Slot) {
    let shared = &*shared;
    let delivery = match msg.info() {
        Ok(info) => Delivery {
            attempt: u32::try_from(info.delivered).unwrap_or(u32::MAX).max(1),
            stream_seq: info.stream_sequence,
            stored_ns: info.published.unix_timestamp_nanos(),
        },
        Err(err) => {
            warn!(%err, subject = %msg.subject, "cannot read the delivery's ack subject; leaving it for redelivery");
            return;
        }
    };
    let started = SystemTime::now();
    // Moved out once, shared by the handler's Task and the dead letter.
    let headers: Arc<HeaderMap> = Arc::new(msg.message.headers.take().unwrap_or_default());
    let Route { tenant, kind, .. } = route(&msg.subject);
    if let Some(scheduler) = crate::schedule::occurrence::foreign_scheduler(tenant, &headers) {
        // Fired by a schedule of another space (see `foreign_scheduler`):
        // not run, no result, never delivered again.
        warn!(subject = %msg.subject, %scheduler, "a task fired by a schedule of another space: dropped without a result");
        if let Err(err) = msg.ack_with(AckKind::Term).await {
            warn!(%err, "terminating a foreign task");
        }
        return;
    }
    let metrics = shared.observer.kind(kind);
    metrics.started(waited(started, delivery.stored_ns), delivery.attempt);
    let read = Envelope::read(Some(&headers), tenant, delivery.stream_seq, &shared.limits);
    let (envelope, outcome) = match read {
        Ok(mut envelope) => {
            if envelope.control.catch_up.is_some() {
                let stored = UNIX_EPOCH
                    + Duration::from_nanos(u64::try_from(delivery.stored_ns).unwrap_or(0));
                // Only the fleet account's schedules fire runs: a tenant's
                // task naming a scheduler gets no lookups made for it.
                let due = match envelope.tenant {
                    None => Box::pin(catch_up::due(&shared.client, &headers, kind)).await,
                    Some(_) => None,
                };
                envelope.control.anchor(stored, due);
            }
            let outcome =
                execute(shared, &msg, &headers, (kind, metrics), delivery, &envelope).await;
            (envelope, outcome)
        }
        Err(boxed) => {
            let (envelope, err) = *boxed;
            (envelope, Outcome::Failed(err))
        }
    };
    let ctx = Ctx {
        shared,
        msg: &msg,
        headers,
        kind,
        delivery,
        envelope,
        started,
        metrics,
    };
    // Too many results on their way out: keep the slot, so pulling slows.
    let finishing = shared.finishing.clone().acquire_owned().await;
    // A limited task's permits last until its result is written, so that
    // no more than the limit run between Task-Started and Task-Finished.
    let mut slot = slot;
    let lease = slot.lease.take();
    drop(slot);
    finish(&ctx, outcome).await;
    drop(lease);
    drop(finishing);
}

/// How long a task stored at `stored_ns` (Unix nanoseconds) waited until `now`.
fn waited(now: SystemTime, stored_ns: i128) -> Duration {
    let now_ns = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    Duration::from_nanos(u64::try_from(now_ns - stored_ns).unwrap_or(0))
}

async fn execute(
    shared: &Shared,
    msg: &jetstream::Message,
    headers: &Arc<HeaderMap>,
    (kind, metrics): (&str, &KindMetrics),
    delivery: Delivery,
    envelope: &Envelope,
) -> Outcome {
    let config = &shared.config;
    if let Some(tenant) = envelope.tenant.as_deref() {
        // A tenant's own marks are read before its first task runs.
        shared
            .tenant_marks
            .ensure(&shared.js, &shared.marks, tenant)
            .await;
    }
    if shared
        .marks
        .is_marked(envelope.tenant.as_deref(), &envelope.id)
    {
        return Outcome::Failed(cancel::cancelled());
    }
    // The clock is read only for a task that has a deadline (per task).
    let deadline = envelope.control.deadline;
    if let Some(err) = deadline.and_then(|d| crate::control::expired(Some(d), SystemTime::now())) {
        return Outcome::Failed(err);
    }
    let Some(handler) = shared.registry.get(kind) else {
        return Outcome::Failed(no_such_kind(kind));
    };
    if let Admission::Refuse(err) = decide::admit(delivery.attempt, &config.retry) {
        return Outcome::Failed(err);
    }
    let deadline = Instant::now() + envelope.timeout;
    let task = Task {
        id: envelope.id.clone(),
        kind: kind.to_string(),
        tenant: envelope.tenant.clone(),
        attempt: delivery.attempt,
        deadline,
        payload: msg.payload.clone(),
        headers: headers.clone(),
    };
    let began = Instant::now();
    let outcome = run_handler(shared, msg, handler.as_ref(), task, envelope).await;
    metrics.ran(began.elapsed());
    outcome
}

/// Runs the handler to its end, its deadline, or the node's cancel.
async fn run_handler(
    shared: &Shared,
    msg: &jetstream::Message,
    handler: &dyn crate::handlers::Handler,
    task: Task,
    envelope: &Envelope,
) -> Outcome {
    let deadline = task.deadline;
    let started = std::panic::catch_unwind(AssertUnwindSafe(|| handler.call(task)));
    let Ok(future) = started else {
        return Outcome::Failed(TaskError::retry("handler panicked"));
    };
    let mut future = AssertUnwindSafe(future).catch_unwind();
    // Most handlers of small tasks are done on their first poll: then no
    // timer, progress ack or cancel watch is set up at all (and the
    // task's future does not carry their room: boxed, below).
    if let Poll::Ready(result) = futures::poll!(&mut future) {
        return ran(result);
    }
    Box::pin(wait_handler(shared, msg, future, deadline, envelope)).await
}

/// Waits for a handler that did not finish on its first poll, with its
/// deadline, progress acks and cancels.
async fn wait_handler(
    shared: &Shared,
    msg: &jetstream::Message,
    mut future: impl Future<Output = std::thread::Result<Result<Bytes, TaskError>>> + Unpin,
    deadline: Instant,
    envelope: &Envelope,
) -> Outcome {
    let every = (shared.ack_wait / 3).max(Duration::from_millis(100));
    let mut progress = interval_at(Instant::now() + every, every);
    let mut cancel = shared.cancel.clone();
    loop {
        tokio::select! {
            result = &mut future => return ran(result),
            _ = sleep_until(deadline) => return Outcome::Failed(TaskError::new(
                FailureKind::TimedOut,
                format!("timed out after {}", humantime::format_duration(envelope.timeout)),
            )),
            _ = progress.tick() => {
                if let Err(err) = msg.ack_with(AckKind::Progress).await {
                    debug!(%err, "progress ack not sent");
                }
            }
            _ = async { let _ = cancel.wait_for(|stop| *stop).await; } => return Outcome::Cancelled,
            // `fleet cancel`: the handler's future is dropped on return.
            _ = shared.marks.until_marked(envelope.tenant.as_deref(), &envelope.id) => {
                return Outcome::Failed(cancel::cancelled())
            }
        }
    }
}

/// The outcome of a handler's future that completed (or panicked).
fn ran(result: std::thread::Result<Result<Bytes, TaskError>>) -> Outcome {
    match result {
        Ok(Ok(output)) => Outcome::Done(output),
        Ok(Err(err)) => Outcome::Failed(err),
        Err(panic) => Outcome::Failed(TaskError::retry(format!(
            "handler panicked: {}",
            panic_text(&panic)
        ))),
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
    let metrics = ctx.metrics;
    let policy = &ctx.shared.config.retry;
    let ran = match &outcome {
        Outcome::Done(_) => Ran::Ok,
        Outcome::Failed(err) => Ran::Failed(err),
        Outcome::Cancelled => Ran::Cancelled,
    };
    match (decide::verdict(ran, ctx.delivery.attempt, policy), outcome) {
        (Verdict::HandBack, _) => {
            metrics.handed_back();
            reply(ctx, AckReply::Nak(None)).await;
        }
        (Verdict::Retry { delay }, Outcome::Failed(err)) => {
            metrics.retried(err.message());
            debug!(task = %ctx.envelope.id, attempt = ctx.delivery.attempt, %err, ?delay, "retrying");
            reply(ctx, AckReply::Nak(Some(delay))).await;
        }
        (Verdict::Commit, Outcome::Done(output)) => {
            match decide::after_result(commit::result(ctx, output, None).await) {
                Next::Reply(AckReply::Ack) => {
                    metrics.ok();
                    reply(ctx, AckReply::Ack).await;
                }
                Next::Reply(other) => {
                    warn!(task = %ctx.envelope.id, "could not keep the result; the task will run again");
                    reply(ctx, other).await;
                }
                Next::Fail(err) => Box::pin(fail_for_good(ctx, err)).await,
            }
        }
        // The rare ends are boxed: every task's future would otherwise
        // carry room for their writes.
        (Verdict::Fail, Outcome::Failed(err)) => Box::pin(fail_for_good(ctx, err)).await,
        (Verdict::Cancel, Outcome::Failed(err)) => {
            reply(ctx, Box::pin(cancel::commit(ctx, &err)).await).await
        }
        (Verdict::Expire, Outcome::Failed(err)) => {
            reply(ctx, Box::pin(super::control::expire(ctx, &err)).await).await
        }
        (verdict, _) => unreachable!("verdict {verdict:?} does not follow from its outcome"),
    }
}

/// Dead letter, then error result, then term: what [`decide::after_failure`]
/// says once both writes are tried.
async fn fail_for_good(ctx: &Ctx<'_>, err: TaskError) {
    warn!(task = %ctx.envelope.id, kind = ctx.kind, attempt = ctx.delivery.attempt, %err, "task failed");
    let dead = commit::dead_letter(ctx, &err).await;
    let result = match dead {
        Written::Kept | Written::AlreadyKept => {
            Some(commit::result(ctx, Bytes::new(), Some(&err)).await)
        }
        _ => None,
    };
    let ack = decide::after_failure(&dead, result.as_ref());
    if ack == AckReply::Term {
        ctx.metrics.failed(err.message());
    } else {
        warn!(task = %ctx.envelope.id, ?dead, ?result, "could not finish the failed task; it will run again");
    }
    reply(ctx, ack).await;
}

async fn reply(ctx: &Ctx<'_>, ack: AckReply) {
    if let Err(err) = ctx.msg.ack_with(ack.into()).await {
        warn!(%err, task = %ctx.envelope.id, "ack not sent; the task returns after ack_wait");
    }
    if matches!(ack, AckReply::Ack | AckReply::Term) && ctx.envelope.control.unique.is_some() {
        Box::pin(super::control::release_key(ctx)).await;
    }
}
