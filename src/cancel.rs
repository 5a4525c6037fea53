//! Cancelling tasks (`fleet cancel`): a mark in the `fleet-cancel` bucket,
//! which every node watches and honours (a marked task is not run; a
//! running one is stopped; either ends as `499 cancelled`, never retried),
//! and, for a delayed task, its schedule taken back at once.
//!
//! | the task …                                      | [`cancel`] does                                      | [`Outcome`] |
//! |-------------------------------------------------|------------------------------------------------------|-------------|
//! | has a result kept on `results.<id>`             | nothing                                              | `AlreadyFinished` |
//! | is delayed (`sched.task.<id>` in `SCHEDULES`)   | marks it, deletes the schedule, keeps its 499 result | `Withdrawn` |
//! | is queued or running (or not known here)        | marks it: it ends as 499 on the node that takes or runs it | `Marked` |
//!
//! The mark comes before the schedule's removal: a schedule that fires in
//! between becomes a queued task that is already marked. The 499 result of
//! a withdrawn task is written only when *this* delete removed the
//! schedule (so it never fired, and no node can ever hold the task), and it
//! is fenced as a node fences its results (`Nats-Expected-Last-Subject-Sequence: 0`
//! on `results.<id>`): whatever races it, one result is kept.
//!
//! A task with a shared `Reply-To` keeps its result elsewhere: it is marked
//! even when it has finished, which changes nothing (a finished task is not
//! delivered again). Marks live as long as the bucket keeps them
//! ([`crate::setup::CANCEL_MAX_AGE`]).

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::{PublishMessage, StreamMessage};
use async_nats::jetstream::stream::{DeleteMessageErrorKind, DirectGetErrorKind};
use async_nats::jetstream::{Context, ErrorCode};
use async_nats::{HeaderMap, StatusCode};
use futures::TryStreamExt;

pub mod own;

use crate::check::check_task_id;
use crate::contract::{self, header, msg_id};
use crate::envelope::{one_line, Envelope, Limits};
use crate::error::{Error, ErrorKind, ResultExt};

/// The value a mark is written with (any value marks: a node reads only
/// that the key was put).
pub const MARK_VALUE: &str = "cancelled";

/// How a task had ended when it was asked to be cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// An ok result is kept.
    Ok,
    /// An error result with this code is kept (499: already cancelled).
    Failed(u16),
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finished::Ok => f.write_str("ok"),
            Finished::Failed(contract::code::CANCELLED) => {
                write!(f, "cancelled {}", contract::code::CANCELLED)
            }
            Finished::Failed(code) => write!(f, "failed {code}"),
        }
    }
}

/// What cancelling one task did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its result was kept already: nothing was changed.
    AlreadyFinished(Finished),
    /// Marked: it ends as 499 on whichever node takes it or runs it.
    Marked,
    /// A delayed task: marked, its schedule deleted, its 499 result kept.
    Withdrawn,
    /// A tenant's delayed task: marked, its schedule brought forward to
    /// now; it ends as 499 on the first node that takes it.
    Fired,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::AlreadyFinished(how) => write!(f, "already finished: {how}"),
            Outcome::Marked => {
                f.write_str("cancelled: marked; it ends as 499 where it is queued or running")
            }
            Outcome::Withdrawn => {
                f.write_str("cancelled: delayed task's schedule removed, 499 kept")
            }
            Outcome::Fired => f.write_str(
                "cancelled: marked; its schedule fires now and it ends as 499 on the first node",
            ),
        }
    }
}

/// One task and what cancelling it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancelled {
    /// The task id.
    pub id: String,
    /// What happened.
    pub outcome: Outcome,
}

/// What cancelling a batch did: the batch is marked, and its delayed tasks
/// withdrawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchCancelled {
    /// The batch name.
    pub batch: String,
    /// Its delayed tasks, each withdrawn (or marked, when its schedule fired first).
    pub delayed: Vec<Cancelled>,
}

/// Cancels the tasks `ids` of `tenant` (the fleet account's own when `None`).
///
/// # Errors
/// [`ErrorKind::Usage`] for a malformed id or tenant (nothing is changed);
/// [`ErrorKind::NotSetUp`] when there is no cancel bucket (run `fleet setup`);
/// [`ErrorKind::Connection`] when NATS does not answer. Ids before the one
/// that failed are cancelled.
pub async fn cancel(
    js: &Context,
    tenant: Option<&str>,
    ids: &[String],
) -> Result<Vec<Cancelled>, Error> {
    check_tenant(tenant)?;
    each(js, tenant, ids, |id| async move {
        mark(
            js,
            &contract::in_tenant(tenant, &contract::cancel_task_key(&id)),
        )
        .await?;
        withdraw(js, tenant, &id).await
    })
    .await
}

/// Cancels each of `ids` (checked first: a malformed one changes nothing)
/// whose result `kept_in` (as [`kept_result`] reads it) does not keep yet
/// with `take_back`, in order; stops at the first error.
async fn each<F, Fut>(
    js: &Context,
    kept_in: Option<&str>,
    ids: &[String],
    mut take_back: F,
) -> Result<Vec<Cancelled>, Error>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<Outcome, Error>>,
{
    for id in ids {
        check_task_id(id).map_err(|e| Error::new(ErrorKind::Usage, e.message().to_string()))?;
    }
    let mut done = Vec::with_capacity(ids.len());
    for id in ids {
        let outcome = match kept_result(js, kept_in, id).await? {
            Some(finished) => Outcome::AlreadyFinished(finished),
            None => take_back(id.clone()).await?,
        };
        done.push(Cancelled {
            id: id.clone(),
            outcome,
        });
    }
    Ok(done)
}

/// Cancels every task of `batch` (ids `<batch>.<n>`) of `tenant`: marks
/// the batch, then withdraws its delayed tasks. Its finished tasks keep
/// their results.
///
/// # Errors
/// As [`cancel`].
pub async fn cancel_batch(
    js: &Context,
    tenant: Option<&str>,
    batch: &str,
) -> Result<BatchCancelled, Error> {
    check_tenant(tenant)?;
    check_batch(batch)?;
    mark(
        js,
        &contract::in_tenant(tenant, &contract::cancel_batch_key(batch)),
    )
    .await?;
    let prefix = contract::in_tenant(tenant, &contract::delayed_subject(&format!("{batch}.")));
    let mut delayed = Vec::new();
    for id in scheduled(js, &prefix).await? {
        let id = format!("{batch}.{id}");
        let outcome = withdraw(js, tenant, &id).await?;
        delayed.push(Cancelled { id, outcome });
    }
    Ok(BatchCancelled {
        batch: batch.to_string(),
        delayed,
    })
}

fn check_batch(batch: &str) -> Result<(), Error> {
    if check_task_id(batch).is_err() || batch.contains('.') {
        return Err(Error::new(
            ErrorKind::Usage,
            format!("bad batch name {batch:?}: use letters, digits, - and _"),
        ));
    }
    Ok(())
}

fn check_tenant(tenant: Option<&str>) -> Result<(), Error> {
    match tenant {
        Some(t) if check_task_id(t).is_err() || t.contains('.') => Err(Error::new(
            ErrorKind::Usage,
            format!("bad tenant {t:?}: use letters, digits, - and _"),
        )),
        _ => Ok(()),
    }
}

/// How the result kept on `results.<id>` ended, if one is kept.
async fn kept_result(
    js: &Context,
    tenant: Option<&str>,
    id: &str,
) -> Result<Option<Finished>, Error> {
    let subject = contract::in_tenant(tenant, &contract::default_reply(id));
    let results = js
        .get_stream_no_info(contract::RESULTS_STREAM)
        .await
        .or_fail(ErrorKind::Setup, || "reading RESULTS".into())?;
    match results.direct_get_last_for_subject(subject.clone()).await {
        Ok(msg) => Ok(Some(finished(&msg.headers))),
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
        Err(e) => Err(not_set_up_or(e, "reading the kept result of", &subject)),
    }
}

/// How a kept result ended, from its headers.
pub(crate) fn finished(headers: &HeaderMap) -> Finished {
    match headers.get(header::SERVICE_ERROR_CODE) {
        None => Finished::Ok,
        Some(code) => Finished::Failed(
            code.as_str()
                .trim()
                .parse()
                .unwrap_or(contract::code::HANDLER_FAILED),
        ),
    }
}

/// Writes the mark `key` into the cancel bucket and waits for it to be kept.
async fn mark(js: &Context, key: &str) -> Result<(), Error> {
    let subject = format!("$KV.{}.{key}", contract::CANCEL_BUCKET);
    let ack = match js.publish(subject, MARK_VALUE.into()).await {
        Ok(ack) => ack.await,
        Err(e) => Err(e),
    };
    ack.map(drop).map_err(|e| {
        let kind = match e.kind() {
            PublishErrorKind::StreamNotFound => ErrorKind::NotSetUp,
            _ => ErrorKind::Connection,
        };
        let what = match kind {
            ErrorKind::NotSetUp => format!(
                "no cancel bucket {}: run `fleet setup`",
                contract::CANCEL_BUCKET
            ),
            _ => format!("writing the cancel mark {key}"),
        };
        Error::with_source(kind, what, e)
    })
}

/// The task numbers of the delayed tasks whose schedules are under `prefix`.
async fn scheduled(js: &Context, prefix: &str) -> Result<Vec<u64>, Error> {
    let schedules = js
        .get_stream_no_info(contract::SCHEDULES_STREAM)
        .await
        .or_fail(ErrorKind::Setup, || "reading SCHEDULES".into())?;
    let reading = || format!("listing the schedules under {prefix}*");
    let mut subjects = schedules
        .info_with_subjects(format!("{prefix}*"))
        .await
        .or_fail(ErrorKind::NotSetUp, reading)?;
    let mut numbers = Vec::new();
    while let Some((subject, _)) = subjects
        .try_next()
        .await
        .or_fail(ErrorKind::Connection, reading)?
    {
        numbers.extend(contract::task_number(&subject, prefix));
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Takes back the delayed task `id`, if its schedule is still held.
async fn withdraw(js: &Context, tenant: Option<&str>, id: &str) -> Result<Outcome, Error> {
    let subject = contract::in_tenant(tenant, &contract::delayed_subject(id));
    let schedules = js
        .get_stream_no_info(contract::SCHEDULES_STREAM)
        .await
        .or_fail(ErrorKind::Setup, || "reading SCHEDULES".into())?;
    let schedule = match schedules.direct_get_last_for_subject(subject.clone()).await {
        Ok(schedule) => schedule,
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok(Outcome::Marked),
        Err(e) => return Err(not_set_up_or(e, "reading the schedule", &subject)),
    };
    match schedules.delete_message(schedule.sequence).await {
        Ok(true) => {}
        // Fired in the meantime: a queued task now, already marked.
        Ok(false) => return Ok(Outcome::Marked),
        Err(e) => match e.kind() {
            DeleteMessageErrorKind::JetStream(j)
                if j.error_code() == ErrorCode::NO_MESSAGE_FOUND =>
            {
                return Ok(Outcome::Marked)
            }
            _ => {
                return Err(Error::with_source(
                    ErrorKind::Connection,
                    format!("deleting the schedule {subject}"),
                    e,
                ))
            }
        },
    }
    write_result(js, tenant, id, &schedule).await
}

/// Keeps the 499 result of the withdrawn delayed task `id`, read from its
/// schedule, fenced as a node's.
async fn write_result(
    js: &Context,
    tenant: Option<&str>,
    id: &str,
    schedule: &StreamMessage,
) -> Result<Outcome, Error> {
    let envelope = envelope(tenant, id, schedule);
    let subject = envelope.result_subject();
    let headers = result_headers(&envelope.id);
    if !envelope.reply_is_kept() {
        // A core reply subject (an inbox): nothing keeps it.
        js.client()
            .publish_with_headers(subject.clone(), headers, Default::default())
            .await
            .or_fail(ErrorKind::Connection, || {
                format!("publishing the result on {subject}")
            })?;
        return Ok(Outcome::Withdrawn);
    }
    let publish = PublishMessage::build().headers(headers);
    let publish = if envelope.reply_is_own() {
        publish.expected_last_subject_sequence(0)
    } else {
        publish.message_id(msg_id::result(
            schedule.sequence,
            schedule.time.unix_timestamp_nanos(),
        ))
    };
    let ack = match js.send_publish(subject.clone(), publish).await {
        Ok(ack) => ack.await,
        Err(e) => Err(e),
    };
    match ack {
        Ok(ack) if !ack.duplicate => Ok(Outcome::Withdrawn),
        // Another result is kept already: it stands.
        Ok(_) => Ok(Outcome::AlreadyFinished(Finished::Ok)),
        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
            Ok(match kept_result(js, tenant, &envelope.id).await? {
                Some(finished) => Outcome::AlreadyFinished(finished),
                None => Outcome::Withdrawn,
            })
        }
        Err(e) => Err(Error::with_source(
            ErrorKind::Connection,
            format!("keeping the result on {subject}"),
            e,
        )),
    }
}

/// The envelope of a delayed task, read from its schedule as a node reads a
/// task (a malformed header leaves the safe answer subject, `results.<id>`).
fn envelope(tenant: Option<&str>, id: &str, schedule: &StreamMessage) -> Envelope {
    let mut headers = schedule.headers.clone();
    if headers.get(header::TASK_ID).is_none() {
        headers.insert(header::TASK_ID, id);
    }
    let limits = Limits {
        default_timeout: contract::DEFAULT_TASK_TIMEOUT,
        max_timeout: contract::MAX_TASK_TIMEOUT,
        allowed_replies: contract::DEFAULT_ALLOWED_REPLY_PREFIXES
            .iter()
            .map(|p| p.to_string())
            .collect(),
    };
    match Envelope::read(Some(&headers), tenant, schedule.sequence, &limits) {
        Ok(envelope) => envelope,
        Err(refused) => refused.0,
    }
}

/// The headers of a 499 result written for a task no node ran.
pub(crate) fn result_headers(id: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::TASK_ID, id);
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    headers.insert(header::TASK_FINISHED, now.as_str());
    headers.insert(header::SERVICE_ERROR, one_line("cancelled").as_str());
    headers.insert(
        header::SERVICE_ERROR_CODE,
        contract::code::CANCELLED.to_string().as_str(),
    );
    headers
}

/// An error of a direct get: no stream answering means not set up.
fn not_set_up_or(
    e: async_nats::jetstream::stream::DirectGetError,
    doing: &str,
    subject: &str,
) -> Error {
    match e.kind() {
        DirectGetErrorKind::ErrorResponse(StatusCode::NO_RESPONDERS, _) => Error::with_source(
            ErrorKind::NotSetUp,
            "the streams are missing: run `fleet setup`",
            e,
        ),
        _ => Error::with_source(ErrorKind::Connection, format!("{doing} {subject}"), e),
    }
}

#[cfg(test)]
mod tests;
