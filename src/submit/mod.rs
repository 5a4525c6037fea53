//! The submitter: publishes a stream of payloads as tasks of one kind, keeps
//! at most `window` of them in flight, and yields a stream of typed
//! [`Event`]s, one per task's end, then the run's [`Summary`].
//!
//! Each task gets the id `<batch>.<n>` (n counts from 1), the same
//! `Nats-Msg-Id`, and the reply subject `results.<batch>.<n>` (kept by
//! `RESULTS`) or, with `ephemeral`, a subject under this submitter's inbox.
//! The subscription is made before the first publish. A result that arrives
//! twice is counted once. A run with the same `batch` name resumes: results
//! already kept are collected first and their tasks are not published again.
//! After a reconnect, and before a task is declared without result, `RESULTS`
//! is read for what was missed.

mod kept;
mod publish;
mod report;
mod window;

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::{Client, Message, Statistics, Subject, Subscriber};
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::contract;
use crate::envelope::{check_task_id, parse_timeout};
use crate::error::{Error, ErrorKind, ResultExt};
use crate::setup::{self, StreamSettings};
pub use report::{Latency, Summary, TaskEnd, TaskStatus};
use window::{Ended, Window};

/// How a submitter runs. `..Default::default()` fills what you do not set.
#[derive(Debug, Clone)]
pub struct SubmitConfig {
    /// The kind of every task of this run.
    pub kind: String,
    /// Most tasks in flight (published, result not yet in).
    pub window: usize,
    /// How long to wait for a task's result after publishing it.
    pub timeout: Duration,
    /// Results only to this submitter's inbox: faster, nothing kept.
    pub ephemeral: bool,
    /// A batch name, to run the same batch again and resume it.
    pub batch: Option<String>,
    /// `Task-Timeout` for every task, e.g. `30s`.
    pub task_timeout: Option<String>,
    /// Added to each task's `Nats-Msg-Id` (`<id>.<salt>`): a value only
    /// this submitter's credentials give (see
    /// [`crate::ConnectConfig::msg_id_salt`]), so that no one else can
    /// publish an id ahead of a named batch and have its task dropped as a
    /// duplicate.
    pub msg_id_salt: Option<String>,
    /// Create the streams when there are none (one trusted machine).
    pub create: bool,
}

impl Default for SubmitConfig {
    fn default() -> Self {
        SubmitConfig {
            kind: "echo".to_string(),
            window: contract::DEFAULT_WINDOW,
            timeout: contract::DEFAULT_RESULT_TIMEOUT,
            ephemeral: false,
            batch: None,
            task_timeout: None,
            msg_id_salt: None,
            create: false,
        }
    }
}

/// What a run tells as it goes.
#[derive(Debug, Clone)]
pub enum Event {
    /// A task ended: a result, an error, a refusal or no result in time.
    /// Each task ends once.
    Ended(TaskEnd),
    /// Every task ended: the run's counts. The last event.
    Finished(Summary),
}

/// A running submission: a stream of [`Event`]s. Dropping it stops the run.
pub struct Submission {
    events: mpsc::Receiver<Result<Event, Error>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Submission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submission").finish_non_exhaustive()
    }
}

impl Stream for Submission {
    type Item = Result<Event, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_recv(cx)
    }
}

impl Drop for Submission {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How long after a reconnect kept results are swept for: JetStream may
/// take a while to be back, and nodes reconnect at their own pace.
const RECONNECT_SWEEP: Duration = Duration::from_secs(30);

/// How long one look in `RESULTS` may take before it counts as nothing found.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// Room kept for a task's headers under the server's `max_payload`.
const HEADROOM: usize = 512;

/// Starts submitting one task per item of `input`.
///
/// Uses no JetStream API but publishing and direct gets of its own results,
/// so it works from a tenant account.
///
/// # Errors
/// [`ErrorKind::Usage`] for a bad kind, batch name, task timeout or window
/// (nothing sent); [`ErrorKind::NotSetUp`] when no stream takes the tasks
/// or keeps the results (run `fleet setup`); [`ErrorKind::Connection`] when
/// NATS refuses. Errors later in the run (reading the input, a closed
/// connection, no stream for the first task) end the event stream with an
/// `Err`. Failed tasks are not errors: they are [`Event::Ended`] with a
/// [`TaskStatus`].
pub async fn submit<S>(client: Client, config: SubmitConfig, input: S) -> Result<Submission, Error>
where
    S: Stream<Item = io::Result<Bytes>> + Send + Unpin + 'static,
{
    check_config(&config)?;
    let js = jetstream::new(client.clone());
    if config.create {
        setup::ensure_streams(&js, &StreamSettings::default()).await?;
    }
    let batch = match &config.batch {
        Some(name) => name.clone(),
        // The random head of a fresh NUID: short, and unique enough.
        None => client
            .new_inbox()
            .rsplit('.')
            .next()
            .unwrap_or("batch")
            .chars()
            .take(12)
            .collect(),
    };
    let reply_prefix = if config.ephemeral {
        format!("{}.", client.new_inbox())
    } else {
        format!("{}{batch}.", contract::RESULT_PREFIX)
    };
    let sub = client
        .subscribe(format!("{reply_prefix}>"))
        .await
        .or_fail(ErrorKind::Connection, || "subscribing to results".into())?;
    if !config.ephemeral {
        kept::check(&client, &format!("{reply_prefix}0")).await?;
    }
    let stats = client.statistics();
    let (tx, events) = mpsc::channel(1024);
    let mut run = Run {
        task_subject: contract::task_subject(&config.kind).into(),
        window: Window::new(config.window),
        summary: Summary::default(),
        latencies: hdrhistogram::Histogram::new(3).expect("3 significant figures is valid"),
        connects: stats.connects.load(Ordering::Relaxed),
        stats,
        sweep_until: None,
        last_sweep: Instant::now(),
        stored_any: false,
        kept: !config.ephemeral,
        js,
        batch,
        reply_prefix,
        config,
        tx,
    };
    client
        .flush()
        .await
        .or_fail(ErrorKind::Connection, || "flushing the subscription".into())?;
    let task = tokio::spawn(async move {
        let outcome = run.drive(input, sub).await;
        let _ = match outcome {
            Ok(summary) => run.tx.send(Ok(Event::Finished(summary))).await,
            Err(err) => run.tx.send(Err(err)).await,
        };
    });
    Ok(Submission { events, task })
}

fn check_config(config: &SubmitConfig) -> Result<(), Error> {
    let usage = |msg: String| Err(Error::new(ErrorKind::Usage, msg));
    if let Err(e) = check_task_id(&config.kind) {
        return usage(format!("bad kind {:?}: {}", config.kind, e.message()));
    }
    if let Some(batch) = &config.batch {
        if check_task_id(batch).is_err() || batch.contains('.') {
            return usage(format!(
                "bad batch name {batch:?}: use letters, digits, - and _"
            ));
        }
    }
    if let Some(timeout) = &config.task_timeout {
        if let Err(e) = parse_timeout(timeout) {
            return usage(e.message().to_string());
        }
    }
    if config.window == 0 {
        return usage("the window must be at least 1".to_string());
    }
    Ok(())
}

/// One run's state.
struct Run {
    config: SubmitConfig,
    js: jetstream::Context,
    batch: String,
    reply_prefix: String,
    /// `tasks.<kind>`, made once.
    task_subject: Subject,
    window: Window,
    summary: Summary,
    latencies: hdrhistogram::Histogram<u64>,
    /// Results are kept in `RESULTS` (not `ephemeral`).
    kept: bool,
    /// Whether JetStream stored any task of this run yet.
    stored_any: bool,
    /// Connections made so far: a rise is a reconnect.
    stats: Arc<Statistics>,
    connects: u64,
    /// After a reconnect, until when in-flight tasks are looked up in
    /// `RESULTS` once a second (results sent while we were away).
    sweep_until: Option<Instant>,
    last_sweep: Instant,
    tx: mpsc::Sender<Result<Event, Error>>,
}

impl Run {
    async fn drive<S>(&mut self, mut input: S, mut sub: Subscriber) -> Result<Summary, Error>
    where
        S: Stream<Item = io::Result<Bytes>> + Unpin,
    {
        let started = Instant::now();
        let mut acks: FuturesUnordered<publish::AckFuture> = FuturesUnordered::new();
        let mut next = 0u64;
        let mut input_done = false;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        while !(input_done && self.window.in_flight() == 0) {
            tokio::select! {
                item = input.next(), if !input_done && self.window.has_room() => match item {
                    None => input_done = true,
                    Some(Err(err)) => return Err(Error::with_source(ErrorKind::Io, "reading the input", err)),
                    Some(Ok(payload)) => {
                        next += 1;
                        self.summary.tasks += 1;
                        if self.window.has_ended(next) {
                            continue; // collected from an earlier run
                        }
                        if let Some(ack) = self.publish(next, payload).await? {
                            acks.push(ack);
                        }
                    }
                },
                Some((n, accepted)) = acks.next(), if !acks.is_empty() => match accepted {
                    publish::Accepted::Stored => {
                        self.stored_any = true;
                        self.window.stored(n);
                    }
                    publish::Accepted::AlreadyDone(kept) => {
                        let mut end = TaskEnd::from_result(n, &self.task_id(n), &self.config.kind, kept.headers.as_ref(), kept.payload);
                        end.resumed = true;
                        self.end(end).await?;
                    }
                    publish::Accepted::Refused(err) => self.not_accepted(n, &err).await?,
                },
                msg = sub.next() => match msg {
                    Some(msg) => self.on_result(&msg).await?,
                    None => return Err(Error::new(ErrorKind::Connection, "connection to NATS closed")),
                },
                _ = tick.tick() => {
                    self.sweep().await?;
                    self.look_up_overdue().await?;
                    self.expire().await?;
                }
            }
        }
        self.summary.seconds = started.elapsed().as_secs_f64();
        let h = &self.latencies;
        self.summary.latency_us = Latency {
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        };
        Ok(self.summary.clone())
    }

    fn task_id(&self, n: u64) -> String {
        contract::batch_task_id(&self.batch, n)
    }

    /// Publishes task `n`, unless it is too large to be taken.
    async fn publish(
        &mut self,
        n: u64,
        payload: Bytes,
    ) -> Result<Option<publish::AckFuture>, Error> {
        let id = self.task_id(n);
        // Refuse what the server would refuse, before anything is sent.
        let max_payload = self.js.client().max_payload();
        if payload.len() + HEADROOM > max_payload {
            let message = format!(
                "the payload is {} bytes; the server takes at most {max_payload} (max_payload) with headers",
                payload.len()
            );
            let end = TaskEnd::without_result(
                n,
                id,
                &self.config.kind,
                TaskStatus::NotSubmitted { message },
            );
            self.end(end).await?;
            return Ok(None);
        }
        let reply = format!("{}{n}", self.reply_prefix);
        let deadline = Instant::now() + self.config.timeout;
        self.window.published(n, Instant::now());
        let task = publish::Task {
            n,
            msg_id: match &self.config.msg_id_salt {
                Some(salt) => format!("{id}.{salt}"),
                None => id.clone(),
            },
            id,
            reply,
            timeout: self.config.task_timeout.clone(),
            payload,
            look_first: self.config.batch.is_some() && self.kept,
            first: !self.stored_any,
        };
        Ok(Some(publish::confirmed(
            self.js.clone(),
            self.task_subject.clone(),
            task,
            deadline,
        )))
    }

    async fn not_accepted(&mut self, n: u64, err: &PublishError) -> Result<(), Error> {
        if err.kind() == PublishErrorKind::StreamNotFound && !self.stored_any {
            return Err(Error::new(
                ErrorKind::NotSetUp,
                format!(
                    "no stream takes {}: run `fleet setup` (or submit with --create on a single trusted machine)",
                    self.task_subject
                ),
            ));
        }
        if !self.window.is_in_flight(n) {
            return Ok(());
        }
        let status = TaskStatus::NotSubmitted {
            message: publish::refusal(err),
        };
        self.end(TaskEnd::without_result(
            n,
            self.task_id(n),
            &self.config.kind,
            status,
        ))
        .await
    }

    async fn on_result(&mut self, msg: &Message) -> Result<(), Error> {
        let Some(n) = contract::task_number(&msg.subject, &self.reply_prefix) else {
            return Ok(());
        };
        let end = TaskEnd::from_result(
            n,
            &self.task_id(n),
            &self.config.kind,
            msg.headers.as_ref(),
            msg.payload.clone(),
        );
        self.end(end).await
    }

    /// Counts and sends a task's first end; drops any later one.
    async fn end(&mut self, end: TaskEnd) -> Result<(), Error> {
        match self.window.end(end.n, Instant::now()) {
            Ended::Again => {
                self.summary.duplicates += 1;
                return Ok(());
            }
            Ended::First(Some(latency)) => {
                let _ = self.latencies.record((latency.as_micros() as u64).max(1));
            }
            Ended::First(None) => {}
        }
        self.summary.count(&end);
        self.tx
            .send(Ok(Event::Ended(end)))
            .await
            .map_err(|_| Error::new(ErrorKind::Io, "the submission's events are no longer read"))
    }

    /// Ends tasks past their deadline, after one last look in `RESULTS`
    /// for a result this submitter missed (it was disconnected).
    async fn expire(&mut self) -> Result<(), Error> {
        let overdue = self.window.overdue(Instant::now(), self.config.timeout);
        if overdue.is_empty() {
            return Ok(());
        }
        self.catch_up(&overdue).await?;
        for n in overdue {
            if self.window.is_in_flight(n) {
                let status = TaskStatus::NoResult {
                    waited: self.config.timeout,
                };
                self.end(TaskEnd::without_result(
                    n,
                    self.task_id(n),
                    &self.config.kind,
                    status,
                ))
                .await?;
            }
        }
        Ok(())
    }

    /// Looks for the kept results of tasks in flight for a while (see
    /// [`window`]): a result missed on the subscription shows within seconds,
    /// not at the task's deadline.
    async fn look_up_overdue(&mut self) -> Result<(), Error> {
        if !self.kept {
            return Ok(());
        }
        let due = self.window.due_for_lookup(Instant::now());
        self.catch_up(&due).await
    }

    /// After a reconnect, once a second for a while, looks up every
    /// in-flight task's kept result.
    async fn sweep(&mut self) -> Result<(), Error> {
        let connects = self.stats.connects.load(Ordering::Relaxed);
        if connects > self.connects {
            self.connects = connects;
            if self.kept {
                self.sweep_until = Some(Instant::now() + RECONNECT_SWEEP);
            }
        }
        let Some(until) = self.sweep_until else {
            return Ok(());
        };
        let now = Instant::now();
        if now > until {
            self.sweep_until = None;
        } else if now.duration_since(self.last_sweep) >= Duration::from_secs(1) {
            self.last_sweep = now;
            let in_flight = self.window.in_flight_numbers();
            self.catch_up(&in_flight).await?;
        }
        Ok(())
    }

    /// Looks up the kept results of tasks `numbers`.
    async fn catch_up(&mut self, numbers: &[u64]) -> Result<(), Error> {
        if !self.kept || numbers.is_empty() {
            return Ok(());
        }
        // All at once, each bounded: while the server is away a lookup
        // waits for nothing, and the run goes on.
        let client = self.js.client();
        let lookups = numbers.iter().map(|&n| {
            let subject = format!("{}{n}", self.reply_prefix);
            let client = client.clone();
            async move {
                let found = tokio::time::timeout(LOOKUP_TIMEOUT, async {
                    kept::last(&client, &subject).await
                });
                (n, found.await.ok().flatten())
            }
        });
        for (n, kept) in futures::future::join_all(lookups).await {
            if let Some(kept) = kept {
                let end = TaskEnd::from_result(
                    n,
                    &self.task_id(n),
                    &self.config.kind,
                    kept.headers.as_ref(),
                    kept.payload,
                );
                self.end(end).await?;
            }
        }
        Ok(())
    }
}
