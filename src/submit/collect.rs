//! Collecting a batch's kept results, then or later (`fleet results
//! BATCH`, and `fleet submit --delay` waiting for its tasks): every result
//! kept under `results.<batch>.>` (paged batch direct gets), then, while
//! waiting, each new one as it comes (a subscription, with what was kept
//! since the last look read again at growing intervals for what it missed).
//!
//! How many tasks the batch has comes from its record (`sched.batch.<batch>`,
//! written by `fleet submit --delay/--at`); a batch without one (`fleet
//! submit --batch`) is taken to have as many as the highest task number
//! seen. A task missing its result is "still scheduled" while its schedule
//! waits in `SCHEDULES`, otherwise "due" (queued, running, or lost).

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use async_nats::{Client, Subscriber};
use futures::{Stream, StreamExt};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::later::read_record;
use super::report::{TaskEnd, TaskStatus};
use crate::contract::{self, header};
use crate::direct::{self, Stored};
use crate::error::{Error, ErrorKind, ResultExt};

/// What to collect.
#[derive(Debug, Clone, Default)]
pub struct CollectConfig {
    /// The batch.
    pub batch: String,
    /// How long to wait for results still missing; zero: look once.
    pub wait: Duration,
    /// How many tasks the batch has; `None`: read its record.
    pub tasks: Option<u64>,
    /// The kind of its tasks; `None`: read its record.
    pub kind: Option<String>,
    /// The tenant this connection is (see
    /// [`super::SubmitConfig::tenant`]): its results are read one by one
    /// with the direct gets its import gives, its schedules in
    /// `SCHEDULES_<tenant>`. `None`: a user of the fleet account.
    pub tenant: Option<String>,
}

/// What a collection tells as it goes.
#[derive(Debug, Clone)]
pub enum Collected {
    /// A task's result: each task once.
    Ended(TaskEnd),
    /// The end: what was found and what is missing. The last event.
    Finished(BatchReport),
}

/// What a batch's kept results say.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BatchReport {
    /// The batch.
    pub batch: String,
    /// The kind of its tasks, when its record says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// When its tasks were due, when its record says (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// How many tasks it has (its record's count, or the highest number seen).
    pub tasks: u64,
    /// Whether that count is the record's.
    pub recorded: bool,
    /// Tasks with an ok result.
    pub ok: u64,
    /// Tasks with an error result.
    pub failed: u64,
    /// Ids of the tasks with no result.
    pub missing: Vec<String>,
    /// Those of them whose schedule still waits for its time.
    pub scheduled: Vec<String>,
}

impl BatchReport {
    /// Every task has an ok result.
    pub fn all_ok(&self) -> bool {
        self.tasks > 0 && self.missing.is_empty() && self.failed == 0
    }
}

/// A running collection: a stream of [`Collected`]. Dropping it stops it.
pub struct Collection {
    events: mpsc::Receiver<Result<Collected, Error>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Collection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collection").finish_non_exhaustive()
    }
}

impl Stream for Collection {
    type Item = Result<Collected, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_recv(cx)
    }
}

impl Drop for Collection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The longest pause between two readings of the whole batch while waiting.
const RELIST_AT_MOST: Duration = Duration::from_secs(30);

/// Starts collecting the kept results of `config.batch`.
///
/// # Errors
/// [`ErrorKind::Usage`] for a bad batch name or a connection without the
/// fleet account's JetStream (direct gets of whole batches are not given
/// to tenants); [`ErrorKind::NotSetUp`] without the streams;
/// [`ErrorKind::Connection`]. Errors later end the stream with an `Err`.
pub async fn results(client: Client, config: CollectConfig) -> Result<Collection, Error> {
    let batch = &config.batch;
    if crate::check::check_task_id(batch).is_err() || batch.contains('.') {
        return Err(Error::new(
            ErrorKind::Usage,
            format!("bad batch name {batch:?}: use letters, digits, - and _"),
        ));
    }
    let tenant = config.tenant.clone();
    if let Some(t) = &tenant {
        crate::setup::tenant::check_tenant_name(t).map_err(|e| Error::new(ErrorKind::Usage, e))?;
    } else {
        crate::connect::require_jetstream(&client, "reading a batch's results").await?;
    }
    let prefix = format!("{}{batch}.", contract::RESULT_PREFIX);
    let live = client
        .subscribe(format!("{prefix}>"))
        .await
        .or_fail(ErrorKind::Connection, || "subscribing to results".into())?;
    let record = match (config.tasks, &config.kind) {
        (Some(_), Some(_)) => None,
        _ => read_record(&client, tenant.as_deref(), batch).await?,
    };
    let mut report = BatchReport {
        batch: batch.clone(),
        kind: config
            .kind
            .clone()
            .or_else(|| record.as_ref().map(|r| r.kind.clone())),
        at: record.as_ref().map(|r| r.at.clone()),
        tasks: config
            .tasks
            .or(record.as_ref().map(|r| r.tasks))
            .unwrap_or(0),
        ..Default::default()
    };
    report.recorded = config.tasks.is_some() || record.is_some();
    let (tx, events) = mpsc::channel(1024);
    let mut run = Collecting {
        client,
        tenant,
        prefix,
        results_from: 1,
        tally: Tally {
            report,
            seen: BTreeSet::new(),
        },
        tx,
    };
    let task = tokio::spawn(async move {
        let outcome = run.drive(live, config.wait).await;
        let _ = match outcome {
            Ok(report) => run.tx.send(Ok(Collected::Finished(report))).await,
            Err(err) => run.tx.send(Err(err)).await,
        };
    });
    Ok(Collection { events, task })
}

struct Collecting {
    client: Client,
    tenant: Option<String>,
    /// `results.<batch>.`
    prefix: String,
    /// Where the next look in `RESULTS` starts (results are only added).
    results_from: u64,
    tally: Tally,
    tx: mpsc::Sender<Result<Collected, Error>>,
}

impl Collecting {
    async fn drive(&mut self, mut live: Subscriber, wait: Duration) -> Result<BatchReport, Error> {
        let deadline = Instant::now() + wait;
        self.list().await?;
        let mut every = Duration::from_secs(2);
        let mut relist = Instant::now() + every;
        let mut waiting = self.waiting().await?;
        while !self.tally.complete(&waiting) && Instant::now() < deadline {
            tokio::select! {
                msg = live.next() => match msg {
                    Some(msg) => {
                        if let Some(n) = contract::task_number(&msg.subject, &self.prefix) {
                            self.tell(n, msg.headers.as_ref(), msg.payload).await?;
                        }
                    }
                    None => return Err(Error::new(ErrorKind::Connection, "connection to NATS closed")),
                },
                _ = tokio::time::sleep_until(relist.min(deadline)) => {
                    if Instant::now() >= relist {
                        self.list().await?;
                        waiting = self.waiting().await?;
                        every = (every * 2).min(RELIST_AT_MOST);
                        relist = Instant::now() + every;
                    }
                }
            }
        }
        let waiting = self.waiting().await?;
        Ok(self.tally.finish(&waiting))
    }

    /// Tells every result kept since the last look.
    async fn list(&mut self) -> Result<(), Error> {
        if self.tenant.is_some() {
            return self.list_one_by_one().await;
        }
        let filter = format!("{}>", self.prefix);
        let (stream, from) = (contract::RESULTS_STREAM, self.results_from);
        let kept = direct::from_seq(&self.client, stream, &filter, from, usize::MAX).await?;
        for m in kept {
            self.results_from = self.results_from.max(m.seq + 1);
            if let Some(n) = contract::task_number(&m.subject, &self.prefix) {
                self.tell(n, Some(&m.headers), m.payload).await?;
            }
        }
        Ok(())
    }

    /// A tenant's look: each task's result not seen yet, by its own direct
    /// get (the only read of `RESULTS` a tenant has, scoped by the server
    /// to its space); a batch without a record up to the first task
    /// without a result.
    async fn list_one_by_one(&mut self) -> Result<(), Error> {
        let recorded = self.tally.report.recorded;
        let mut n = 0;
        loop {
            n += 1;
            if recorded && n > self.tally.report.tasks {
                return Ok(());
            }
            if self.tally.seen.contains(&n) {
                continue;
            }
            let subject = format!("{}{n}", self.prefix);
            match super::kept::last(&self.client, &subject).await {
                Some(msg) => self.tell(n, msg.headers.as_ref(), msg.payload).await?,
                None if !recorded => return Ok(()),
                None => {}
            }
        }
    }

    /// The batch's tasks whose schedules still wait: number to time.
    async fn waiting(&self) -> Result<BTreeMap<u64, String>, Error> {
        let batch = &self.tally.report.batch;
        let tenant = self.tenant.as_deref();
        let schedules =
            contract::in_tenant(tenant, &contract::delayed_subject(&format!("{batch}.>")));
        let stream = contract::SCHEDULES_STREAM;
        let kept = direct::from_seq(&self.client, stream, &schedules, 1, usize::MAX).await?;
        let prefix = contract::in_tenant(tenant, &contract::delayed_subject(&format!("{batch}.")));
        Ok(kept
            .iter()
            .filter_map(|m| waiting_task(m, &prefix))
            .collect())
    }

    /// Tells task `n`'s result, the first time only.
    async fn tell(
        &mut self,
        n: u64,
        headers: Option<&async_nats::HeaderMap>,
        payload: bytes::Bytes,
    ) -> Result<(), Error> {
        let report = &self.tally.report;
        let id = contract::batch_task_id(&report.batch, n);
        let kind = report.kind.clone().unwrap_or_default();
        let end = TaskEnd::from_result(n, &id, &kind, headers, payload);
        if !self.tally.count(n, &end.status) {
            return Ok(());
        }
        self.tx
            .send(Ok(Collected::Ended(end)))
            .await
            .map_err(|_| Error::new(ErrorKind::Io, "the collection's events are no longer read"))
    }
}

/// What was found so far (pure).
#[derive(Debug, Default)]
struct Tally {
    report: BatchReport,
    /// Task numbers whose result was told.
    seen: BTreeSet<u64>,
}

impl Tally {
    /// Counts task `n`'s result; `false` when it was counted before or is
    /// not one of the batch's.
    fn count(&mut self, n: u64, status: &TaskStatus) -> bool {
        let ours = n > 0 && (!self.report.recorded || n <= self.report.tasks);
        if !ours || !self.seen.insert(n) {
            return false;
        }
        match status {
            TaskStatus::Ok => self.report.ok += 1,
            _ => self.report.failed += 1,
        }
        true
    }

    /// Whether nothing is left to wait for.
    fn complete(&self, waiting: &BTreeMap<u64, String>) -> bool {
        let tasks = self.tasks(waiting);
        tasks > 0
            && (1..=tasks).all(|n| self.seen.contains(&n))
            && (self.report.recorded || waiting.is_empty())
    }

    /// The batch's size: its record's, or the highest number seen.
    fn tasks(&self, waiting: &BTreeMap<u64, String>) -> u64 {
        if self.report.recorded {
            return self.report.tasks;
        }
        let results = self.seen.last().copied().unwrap_or(0);
        results.max(waiting.keys().last().copied().unwrap_or(0))
    }

    fn finish(&self, waiting: &BTreeMap<u64, String>) -> BatchReport {
        let mut report = self.report.clone();
        report.tasks = self.tasks(waiting);
        let id = |n| contract::batch_task_id(&report.batch, n);
        report.missing = (1..=report.tasks)
            .filter(|n| !self.seen.contains(n))
            .map(id)
            .collect();
        report.scheduled = waiting
            .keys()
            .filter(|n| !self.seen.contains(n))
            .map(|&n| id(n))
            .collect();
        if report.at.is_none() {
            report.at = waiting.values().next().cloned();
        }
        report
    }
}

/// A waiting delayed task of the batch whose schedules are under `prefix`
/// (`sched.task.<batch>.`): its number and its time.
fn waiting_task(m: &Stored, prefix: &str) -> Option<(u64, String)> {
    let n = contract::task_number(&m.subject, prefix)?;
    let at = m.header(header::SCHEDULE)?.strip_prefix("@at ")?;
    Some((n, at.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::HeaderMap;

    fn schedule(subject: &str, pattern: &str) -> Stored {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Schedule", pattern);
        Stored {
            subject: subject.into(),
            seq: 1,
            time: String::new(),
            headers,
            payload: bytes::Bytes::new(),
        }
    }

    fn tally(recorded: Option<u64>, seen: &[u64]) -> Tally {
        let mut t = Tally {
            report: BatchReport {
                batch: "b".into(),
                tasks: recorded.unwrap_or(0),
                recorded: recorded.is_some(),
                ..Default::default()
            },
            ..Default::default()
        };
        for &n in seen {
            assert!(t.count(n, &TaskStatus::Ok));
        }
        t
    }

    #[test]
    fn waiting_tasks_are_read_from_their_schedules() {
        let p = "sched.task.b.";
        assert_eq!(
            waiting_task(&schedule("sched.task.b.3", "@at 2026-12-01T09:00:00Z"), p),
            Some((3, "2026-12-01T09:00:00Z".into()))
        );
        assert_eq!(waiting_task(&schedule("sched.task.c.3", "@at x"), p), None);
        assert_eq!(
            waiting_task(&schedule("sched.task.b.3", "@every 1s"), p),
            None
        );
    }

    #[test]
    fn a_recorded_batch_is_complete_when_every_task_has_a_result() {
        let c = tally(Some(3), &[1, 3]);
        assert!(!c.complete(&BTreeMap::new()));
        let mut c = tally(Some(3), &[1, 2, 3]);
        assert!(c.complete(&BTreeMap::new()));
        assert!(
            !c.count(2, &TaskStatus::Ok),
            "a result told twice counts once"
        );
        assert!(!c.count(4, &TaskStatus::Ok), "not a task of the batch");
        let failed = TaskStatus::Failed {
            code: 500,
            message: "x".into(),
        };
        let mut c = tally(Some(4), &[1]);
        assert!(c.count(3, &failed));
        assert_eq!((c.report.ok, c.report.failed), (1, 1));
        let waiting = BTreeMap::from([(4, "2026-12-01T09:00:00Z".to_string())]);
        let report = c.finish(&waiting);
        assert_eq!(report.missing, ["b.2", "b.4"]);
        assert_eq!(report.scheduled, ["b.4"]);
        assert_eq!(report.at.as_deref(), Some("2026-12-01T09:00:00Z"));
        assert!(!report.all_ok());
    }

    #[test]
    fn an_unrecorded_batch_is_as_large_as_the_highest_number_seen() {
        let c = tally(None, &[1, 2, 5]);
        assert!(!c.complete(&BTreeMap::new()));
        let report = c.finish(&BTreeMap::new());
        assert_eq!(
            (report.tasks, report.missing.clone()),
            (5, vec!["b.3".to_string(), "b.4".to_string()])
        );
        let c = tally(None, &[1, 2]);
        assert!(c.complete(&BTreeMap::new()));
        let waiting = BTreeMap::from([(3, "t".to_string())]);
        assert!(
            !c.complete(&waiting),
            "a task still scheduled is waited for"
        );
        assert!(
            !tally(None, &[]).complete(&BTreeMap::new()),
            "nothing found is not done"
        );
    }
}
