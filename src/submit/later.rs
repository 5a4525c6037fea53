//! Delayed tasks (`fleet submit --delay 10m`, `--at <time>`): each task of
//! the batch is stored as a one-shot schedule on `sched.task.<batch>.<n>`
//! in `SCHEDULES`, `@at` its time rounded up to the whole second, with the
//! headers it would have had (its id, its timeout, its `Nats-Msg-Id`,
//! which makes storing it again a no-op for the duplicate window). Then a
//! record of the batch (`sched.batch.<batch>`: kind, count, time) tells
//! `fleet results` what to expect, and a named batch run again sends
//! nothing.
//!
//! | a named batch run again | what is sent |
//! |---|---|
//! | its record is there (every schedule was stored) | nothing |
//! | no record (the first run stopped half-way) | each task without a kept result and without a waiting schedule |
//!
//! The submitter does not wait here: [`super::collect`] collects the
//! results, then or later.

use std::io;
use std::time::{Duration, SystemTime};

use async_nats::{Client, HeaderMap, RequestErrorKind};
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use super::publish::Task;
use super::report::{TaskEnd, TaskStatus};
use super::wire::{self, Reply};
use super::{kept, SubmitConfig};
use crate::contract::{self, header};
use crate::direct;
use crate::error::{Error, ErrorKind};
use crate::priority::Priority;
use crate::schedule::pattern;
use crate::setup::{self, StreamSettings};

/// A batch of delayed tasks, stored.
#[derive(Debug, Clone)]
pub struct Scheduled {
    /// The batch: task `n` is `<batch>.<n>`, its result `results.<batch>.<n>`.
    pub batch: String,
    /// The kind of its tasks.
    pub kind: String,
    /// When they run: the time given, rounded up to the whole second.
    pub at: SystemTime,
    /// How many tasks the batch has (numbered from 1).
    pub tasks: u64,
    /// Numbers of the tasks stored as schedules (or found stored, or run).
    pub stored: Vec<u64>,
    /// Tasks the server did not store.
    pub refused: Vec<TaskEnd>,
    /// A run before this one stored the whole batch; nothing was sent.
    pub earlier: bool,
}

impl Scheduled {
    /// The ids of the tasks stored.
    pub fn ids(&self) -> impl Iterator<Item = String> + '_ {
        self.stored
            .iter()
            .map(|&n| contract::batch_task_id(&self.batch, n))
    }
}

/// The record of a batch of delayed tasks, kept on `sched.batch.<batch>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Record {
    pub(super) kind: String,
    pub(super) tasks: u64,
    pub(super) at: String,
}

/// The record of `batch`, if one is kept (in `tenant`'s schedules, read
/// through its import of a direct get of `SCHEDULES_<tenant>`).
pub(super) async fn read_record(
    client: &Client,
    tenant: Option<&str>,
    batch: &str,
) -> Result<Option<Record>, Error> {
    let subject = contract::in_tenant(tenant, &contract::batch_record_subject(batch));
    let kept = direct::last(client, contract::SCHEDULES_STREAM, &subject).await?;
    Ok(kept.and_then(|m| serde_json::from_slice(&m.payload).ok()))
}

/// How long a record is kept: until the results of its tasks are gone,
/// `never` when that is past `SCHEDULES`' max age (a TTL only shortens it).
fn record_ttl(until_due: Duration, results_max_age: Duration) -> String {
    let life = until_due + results_max_age;
    if results_max_age.is_zero() || life >= setup::SCHEDULES_MAX_AGE {
        "never".to_string()
    } else {
        pattern::ttl_value(life)
    }
}

/// The headers of task `task` as a schedule firing at `at` into
/// `due.<kind>` (`due-high.<kind>` for a high task), in `tenant`'s space
/// for a tenant: the server does not map a target through the import, so
/// it is written as the fleet account names it (`tenant.<t>.due.<kind>`).
fn schedule_headers(
    task: &Task,
    kind: &str,
    band: Priority,
    tenant: Option<&str>,
    at: SystemTime,
) -> HeaderMap {
    let mut headers = task.headers();
    headers.insert(header::SCHEDULE, pattern::at_value(at).as_str());
    let target = contract::in_tenant(tenant, &band.due_subject(kind));
    headers.insert(header::SCHEDULE_TARGET, target.as_str());
    // SCHEDULES drops what is older than its max age; only `never`
    // outlives it (a one-shot schedule removes itself once fired).
    headers.insert(header::TTL, "never");
    headers
}

/// Stores one task per item of `input` as a schedule firing at `at`
/// (rounded up to the whole second), then the batch's record.
///
/// # Errors
/// [`ErrorKind::Usage`] for a bad kind, batch name or task timeout,
/// `ephemeral` (results must be kept to be collected later), or a tenant's
/// connection that does not say it is one ([`SubmitConfig::tenant`]: its
/// account has no `SCHEDULES`); [`ErrorKind::NotSetUp`] without
/// `SCHEDULES` (`SCHEDULES_<tenant>` for a tenant); [`ErrorKind::Io`] reading the input;
/// [`ErrorKind::Connection`]. A task the server refuses is not an error:
/// it is in [`Scheduled::refused`].
pub async fn submit_at<S>(
    client: Client,
    config: SubmitConfig,
    at: SystemTime,
    mut input: S,
) -> Result<Scheduled, Error>
where
    S: Stream<Item = io::Result<Bytes>> + Send + Unpin,
{
    super::check_config(&config)?;
    if config.ephemeral {
        return Err(Error::new(
            ErrorKind::Usage,
            "a delayed task's result is kept in RESULTS, to be collected once it ran: drop --ephemeral",
        ));
    }
    if config.controls.unique.is_some() {
        return Err(Error::new(
            ErrorKind::Usage,
            "a unique key is taken when a task is queued, not when it is scheduled: drop --unique with --delay or --at",
        ));
    }
    let tenant = config.tenant.as_deref();
    if let Some(t) = tenant {
        setup::tenant::check_tenant_name(t).map_err(|e| Error::new(ErrorKind::Usage, e))?;
    } else {
        crate::connect::require_jetstream(&client, "delayed tasks").await?;
    }
    if config.create && tenant.is_none() {
        let js = async_nats::jetstream::new(client.clone());
        setup::ensure_streams(&js, &StreamSettings::default()).await?;
    }
    let at = pattern::round_up(at);
    let batch = super::batch_name(&client, &config);
    let mut done = Scheduled {
        batch: batch.clone(),
        kind: config.kind.clone(),
        at,
        tasks: 0,
        stored: Vec::new(),
        refused: Vec::new(),
        earlier: false,
    };
    if config.batch.is_some() {
        if let Some(record) = read_record(&client, tenant, &batch).await? {
            done.earlier = true;
            done.kind = record.kind;
            done.tasks = record.tasks;
            done.at = pattern::parse_time(&record.at).unwrap_or(at);
            done.stored = (1..=record.tasks).collect();
            return Ok(done);
        }
    }
    let sender = Sender {
        client: client.clone(),
        config: config.clone(),
        batch: batch.clone(),
        at,
    };
    let mut in_flight = FuturesUnordered::new();
    let mut input_done = false;
    while !(input_done && in_flight.is_empty()) {
        tokio::select! {
            Some(sent) = in_flight.next(), if !in_flight.is_empty() => done.take(sent)?,
            item = input.next(), if !input_done && in_flight.len() < config.window => match item {
                None => input_done = true,
                Some(Err(err)) => return Err(Error::with_source(ErrorKind::Io, "reading the input", err)),
                Some(Ok(payload)) => {
                    done.tasks += 1;
                    in_flight.push(sender.send(done.tasks, payload));
                }
            },
        }
    }
    done.stored.sort_unstable();
    if done.tasks > 0 {
        write_record(&client, tenant, &done).await?;
    }
    Ok(done)
}

impl Scheduled {
    fn take(&mut self, sent: Result<Sent, Error>) -> Result<(), Error> {
        match sent? {
            Sent::Stored(n) => self.stored.push(n),
            Sent::Refused(n, message) => self.refused.push(TaskEnd::without_result(
                n,
                contract::batch_task_id(&self.batch, n),
                &self.kind,
                TaskStatus::NotSubmitted { message },
            )),
        }
        Ok(())
    }
}

/// What became of one task.
enum Sent {
    /// Stored now, or found stored or already run (a named batch resumed).
    Stored(u64),
    /// Not stored, and why.
    Refused(u64, String),
}

/// Stores the tasks of one batch.
struct Sender {
    client: Client,
    config: SubmitConfig,
    batch: String,
    at: SystemTime,
}

/// How often a task whose PubAck did not come is sent again (its
/// `Nats-Msg-Id` makes a second copy a no-op).
const TRIES: usize = 3;

impl Sender {
    fn send(
        &self,
        n: u64,
        payload: Bytes,
    ) -> impl std::future::Future<Output = Result<Sent, Error>> {
        let id = contract::batch_task_id(&self.batch, n);
        let task = Task {
            reply: contract::default_reply(&id),
            timeout: self.config.task_timeout.clone(),
            msg_id: Some(match &self.config.msg_id_salt {
                Some(salt) => format!("{id}.{salt}"),
                None => id.clone(),
            }),
            payload,
            id,
            // A deadline counts from the task's time, not from now; the
            // scheduler drops a Nats-TTL backstop (it would be the
            // schedule's own lifetime).
            extra: super::control::headers(&self.config.controls, self.at),
        };
        let tenant = self.config.tenant.clone();
        let headers = schedule_headers(
            &task,
            &self.config.kind,
            self.config.controls.priority,
            tenant.as_deref(),
            self.at,
        );
        let client = self.client.clone();
        let resuming = self.config.batch.is_some();
        async move {
            let subject = contract::delayed_subject(&task.id);
            if resuming && already_there(&client, tenant.as_deref(), &task).await? {
                return Ok(Sent::Stored(n));
            }
            let mut why = String::new();
            for _ in 0..TRIES {
                let reply = client
                    .request_with_headers(subject.clone(), headers.clone(), task.payload.clone())
                    .await;
                let (no_stream, payload) = match reply {
                    Ok(msg) => (false, msg.payload),
                    Err(err) if err.kind() == RequestErrorKind::NoResponders => {
                        (true, Bytes::new())
                    }
                    Err(err) if err.kind() == RequestErrorKind::TimedOut => {
                        why = format!("no PubAck: {err}");
                        continue;
                    }
                    Err(err) => return Ok(Sent::Refused(n, err.to_string())),
                };
                return match wire::parse(0, no_stream, &payload) {
                    Some(Reply::Stored { .. }) => Ok(Sent::Stored(n)),
                    Some(Reply::Failed { description, .. }) => {
                        Ok(Sent::Refused(n, super::publish::refusal(&description)))
                    }
                    Some(Reply::NoStream) => Err(Error::new(
                        ErrorKind::NotSetUp,
                        match &tenant {
                            None => format!(
                                "no stream takes {subject}: run `fleet setup` ({} holds delayed tasks)",
                                contract::SCHEDULES_STREAM
                            ),
                            Some(t) => format!(
                                "no stream takes {subject}: the fleet's admin runs `fleet setup --tenant {t}` (and the server's config imports sched.> for this account)"
                            ),
                        },
                    )),
                    _ => Ok(Sent::Refused(n, "an answer that is no PubAck".into())),
                };
            }
            Ok(Sent::Refused(n, why))
        }
    }
}

/// Whether a task of a named batch was stored by an earlier run: its result
/// is kept, or its schedule waits.
async fn already_there(client: &Client, tenant: Option<&str>, task: &Task) -> Result<bool, Error> {
    if kept::last(client, &task.reply).await.is_some() {
        return Ok(true);
    }
    let subject = contract::in_tenant(tenant, &contract::delayed_subject(&task.id));
    Ok(direct::last(client, contract::SCHEDULES_STREAM, &subject)
        .await?
        .is_some())
}

/// Keeps the batch's record, for as long as its results will be kept.
async fn write_record(
    client: &Client,
    tenant: Option<&str>,
    done: &Scheduled,
) -> Result<(), Error> {
    let js = async_nats::jetstream::new(client.clone());
    // A tenant may not read RESULTS' config: it takes the default.
    let results_max_age = match tenant {
        Some(_) => contract::DEFAULT_RESULTS_MAX_AGE,
        None => match js.get_stream(contract::RESULTS_STREAM).await {
            Ok(stream) => stream.cached_info().config.max_age,
            Err(_) => contract::DEFAULT_RESULTS_MAX_AGE,
        },
    };
    let until_due = done
        .at
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let record = Record {
        kind: done.kind.clone(),
        tasks: done.tasks,
        at: pattern::rfc3339(done.at),
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::TTL, record_ttl(until_due, results_max_age).as_str());
    headers.insert("Nats-Rollup", "sub");
    let subject = contract::batch_record_subject(&done.batch);
    let body = serde_json::to_vec(&record).expect("a record serializes");
    let reply = client
        .request_with_headers(subject.clone(), headers, body.into())
        .await
        .map_err(|e| Error::with_source(ErrorKind::Connection, format!("keeping {subject}"), e))?;
    match wire::parse(0, false, &reply.payload) {
        Some(Reply::Stored { .. }) => Ok(()),
        other => Err(Error::new(
            ErrorKind::Setup,
            format!("keeping {subject}: {other:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_delayed_task_keeps_its_headers_and_fires_into_its_kind() {
        let task = Task {
            id: "b.1".into(),
            reply: "results.b.1".into(),
            timeout: Some("30s".into()),
            payload: Bytes::new(),
            msg_id: Some("b.1.salt".into()),
            extra: vec![(header::TTL, "3600".into())],
        };
        let at = pattern::parse_time("2026-12-01T09:00:00.5Z").unwrap();
        let h = schedule_headers(&task, "image.resize", Priority::Normal, None, at);
        let get = |name: &str| h.get(name).map(|v| v.as_str().to_string());
        assert_eq!(
            get("Nats-Schedule").as_deref(),
            Some("@at 2026-12-01T09:00:01Z")
        );
        assert_eq!(
            get("Nats-Schedule-Target").as_deref(),
            Some("due.image.resize")
        );
        assert_eq!(get("Nats-TTL").as_deref(), Some("never"));
        assert_eq!(get("Task-Id").as_deref(), Some("b.1"));
        assert_eq!(get("Task-Timeout").as_deref(), Some("30s"));
        assert_eq!(get("Nats-Msg-Id").as_deref(), Some("b.1.salt"));
    }

    #[test]
    fn a_tenants_delayed_task_fires_into_its_own_space() {
        let task = Task {
            id: "b.1".into(),
            reply: "results.b.1".into(),
            timeout: None,
            payload: Bytes::new(),
            msg_id: None,
            extra: vec![],
        };
        let at = pattern::parse_time("2026-12-01T09:00:00Z").unwrap();
        let h = schedule_headers(&task, "echo", Priority::High, Some("alice"), at);
        let target = h.get("Nats-Schedule-Target").map(|v| v.as_str());
        assert_eq!(target, Some("tenant.alice.due-high.echo"));
        // What the task says of itself stays as the tenant sees it.
        assert_eq!(h.get("Task-Id").map(|v| v.as_str()), Some("b.1"));
    }

    #[test]
    fn a_record_lives_as_long_as_its_results() {
        assert_eq!(record_ttl(HOUR, 24 * HOUR), "90000s");
        assert_eq!(record_ttl(7 * 24 * HOUR, 24 * HOUR), "never");
        assert_eq!(
            record_ttl(HOUR, Duration::ZERO),
            "never",
            "results kept for ever"
        );
        let record = Record {
            kind: "echo".into(),
            tasks: 3,
            at: "2026-12-01T09:00:00Z".into(),
        };
        let text = serde_json::to_string(&record).unwrap();
        assert_eq!(
            text,
            r#"{"kind":"echo","tasks":3,"at":"2026-12-01T09:00:00Z"}"#
        );
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), record);
    }
}
