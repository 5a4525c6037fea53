//! One run of the submitter: read the input, send tasks through the
//! [`Outbox`], collect results, look up what was missed, time out what
//! never answers, and tell each task's end as an event.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, Message, Statistics, Subscriber};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::control::{self, Keys};
use super::publish::{Heard, Outbox, Task};
use super::report::{TaskEnd, TaskStatus};
use super::summary::{EndTimes, Latency, Summary};
use super::window::{Ended, Window};
use super::{kept, Event, SubmitConfig};
use crate::contract;
use crate::error::{Error, ErrorKind};

/// How long after a reconnect kept results are swept for: JetStream may
/// take a while to be back, and nodes reconnect at their own pace.
const RECONNECT_SWEEP: Duration = Duration::from_secs(30);

/// How long one look in `RESULTS` may take before it counts as nothing found.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// Room kept for a task's headers under the server's `max_payload`.
const HEADROOM: usize = 512;

/// A look for task `n`'s kept result before it is sent (resuming a named
/// batch): the result if there is one, and the task.
type Lookup = BoxFuture<'static, (u64, Option<Message>, Task)>;

/// One run's state.
pub(super) struct Run {
    client: Client,
    config: SubmitConfig,
    batch: String,
    reply_prefix: String,
    task_subject: String,
    outbox: Outbox,
    window: Window,
    summary: Summary,
    latencies: hdrhistogram::Histogram<u64>,
    /// When the run began, and when its tasks ended.
    started: Instant,
    ends: EndTimes,
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
    /// Unique keys taken for tasks not yet stored.
    keys: Keys,
    tx: mpsc::Sender<Result<Event, Error>>,
}

impl Run {
    pub(super) fn new(
        client: Client,
        config: SubmitConfig,
        batch: String,
        reply_prefix: String,
        task_subject: String,
        outbox: Outbox,
        tx: mpsc::Sender<Result<Event, Error>>,
    ) -> Self {
        let stats = client.statistics();
        Run {
            window: Window::new(config.window),
            summary: Summary::default(),
            latencies: hdrhistogram::Histogram::new(3).expect("3 significant figures is valid"),
            started: Instant::now(),
            ends: EndTimes::default(),
            kept: !config.ephemeral,
            stored_any: false,
            connects: stats.connects.load(Ordering::Relaxed),
            stats,
            sweep_until: None,
            last_sweep: Instant::now(),
            keys: Keys::new(
                client.clone(),
                config.tenant.as_deref(),
                &config.kind,
                &config.controls,
            ),
            client,
            config,
            batch,
            reply_prefix,
            task_subject,
            outbox,
            tx,
        }
    }

    /// Sends the run's last event: its summary, or what stopped it.
    pub(super) async fn finish(&mut self, outcome: Result<Summary, Error>) {
        let _ = match outcome {
            Ok(summary) => self.tx.send(Ok(Event::Finished(summary))).await,
            Err(err) => self.tx.send(Err(err)).await,
        };
    }

    pub(super) async fn drive<S>(
        &mut self,
        mut input: S,
        mut results: Subscriber,
        mut replies: Subscriber,
    ) -> Result<Summary, Error>
    where
        S: Stream<Item = io::Result<Bytes>> + Unpin,
    {
        self.started = Instant::now();
        let mut lookups: FuturesUnordered<Lookup> = FuturesUnordered::new();
        let mut next = 0u64;
        let mut input_done = false;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        while !(input_done && self.window.in_flight() == 0) {
            tokio::select! {
                item = input.next(), if !input_done && self.window.has_room() && self.outbox.ready() => match item {
                    None => input_done = true,
                    Some(Err(err)) => return Err(Error::with_source(ErrorKind::Io, "reading the input", err)),
                    Some(Ok(payload)) => {
                        next += 1;
                        self.summary.tasks += 1;
                        if let Some(task) = self.task(next, payload).await? {
                            if self.config.batch.is_some() && self.kept {
                                lookups.push(self.look_first(next, task));
                            } else {
                                self.send(next, task).await?;
                            }
                        }
                    }
                },
                Some((n, kept, task)) = lookups.next(), if !lookups.is_empty() => match kept {
                    Some(kept) => {
                        let mut end = TaskEnd::from_result(n, &self.task_id(n), &self.config.kind, kept.headers.as_ref(), kept.payload);
                        end.resumed = true;
                        self.end(end).await?;
                    }
                    None => self.send(n, task).await?,
                },
                msg = replies.next() => match msg {
                    Some(msg) => {
                        let heard = self.outbox.on_reply(&msg).await?;
                        self.heard(heard).await?;
                    }
                    None => return Err(Error::new(ErrorKind::Connection, "connection to NATS closed")),
                },
                msg = results.next() => match msg {
                    Some(msg) => self.on_result(&msg).await?,
                    None => return Err(Error::new(ErrorKind::Connection, "connection to NATS closed")),
                },
                _ = tick.tick() => {
                    let heard = self.outbox.tick().await?;
                    self.heard(heard).await?;
                    self.sweep().await?;
                    self.look_up_overdue().await?;
                    self.expire().await?;
                }
            }
        }
        self.summary.seconds = self.started.elapsed().as_secs_f64();
        self.summary.steady_tasks_per_s = self
            .ends
            .steady_rate()
            .unwrap_or_else(|| self.summary.rate());
        let h = &self.latencies;
        self.summary.latency_us = Latency {
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        };
        Ok(self.summary.clone())
    }

    /// Sends task `n` once it holds its unique key, if it has one; ends
    /// it at once when another task holds the key.
    async fn send(&mut self, n: u64, task: Task) -> Result<(), Error> {
        if let Some(status) = self.keys.claim(n, &task.id).await {
            let end = TaskEnd::without_result(n, task.id, &self.config.kind, status);
            return self.end(end).await;
        }
        let sent = self.outbox.send(n, task).await;
        if sent.is_err() {
            self.keys.undo(n).await;
        }
        sent
    }

    fn task_id(&self, n: u64) -> String {
        contract::batch_task_id(&self.batch, n)
    }

    /// Task `n`, or `None` when it is too large to be taken (it ends at once).
    async fn task(&mut self, n: u64, payload: Bytes) -> Result<Option<Task>, Error> {
        let id = self.task_id(n);
        // Refuse what the server would refuse, before anything is sent.
        let max_payload = self.client.max_payload();
        if payload.len() + HEADROOM > max_payload {
            let message = format!(
                "the payload is {} bytes; the server takes at most {max_payload} (max_payload) with headers",
                payload.len()
            );
            self.end(TaskEnd::without_result(
                n,
                id,
                &self.config.kind,
                TaskStatus::NotSubmitted { message },
            ))
            .await?;
            return Ok(None);
        }
        self.window.published(n, Instant::now());
        let msg_id = self
            .config
            .batch
            .as_ref()
            .map(|_| match &self.config.msg_id_salt {
                Some(salt) => format!("{id}.{salt}"),
                None => id.clone(),
            });
        Ok(Some(Task {
            reply: contract::concat(&[
                contract::Part::Text(&self.reply_prefix),
                contract::Part::Number(n),
            ]),
            timeout: self.config.task_timeout.clone(),
            id,
            payload,
            msg_id,
            extra: control::headers(&self.config.controls, std::time::SystemTime::now()),
        }))
    }

    fn look_first(&self, n: u64, task: Task) -> Lookup {
        let client = self.client.clone();
        Box::pin(async move {
            let kept = tokio::time::timeout(LOOKUP_TIMEOUT, kept::last(&client, &task.reply))
                .await
                .ok()
                .flatten();
            (n, kept, task)
        })
    }

    /// Acts on what the outbox heard: tasks stored, refused, no stream.
    async fn heard(&mut self, heard: Heard) -> Result<(), Error> {
        if heard.no_stream && !self.stored_any {
            return Err(Error::new(
                ErrorKind::NotSetUp,
                format!(
                    "no stream takes {}: run `fleet setup` (or submit with --create on a single trusted machine)",
                    self.task_subject
                ),
            ));
        }
        for n in heard.stored {
            self.keys.forget(n);
            self.stored_any = true;
            self.window.stored(n);
        }
        for (n, message) in heard.refused {
            self.keys.undo(n).await;
            if self.window.is_in_flight(n) {
                let end = TaskEnd::without_result(
                    n,
                    self.task_id(n),
                    &self.config.kind,
                    TaskStatus::NotSubmitted { message },
                );
                self.end(end).await?;
            }
        }
        Ok(())
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
        self.outbox.forget(end.n);
        self.keys.forget(end.n);
        self.summary.count(&end);
        self.ends.push(self.started.elapsed().as_secs_f64());
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
    /// [`super::window`]): a result missed on the subscription shows within
    /// seconds, not at the task's deadline.
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

    /// Looks up the kept results of tasks `numbers`, all at once, each
    /// bounded: while the server is away a lookup waits for nothing.
    async fn catch_up(&mut self, numbers: &[u64]) -> Result<(), Error> {
        if !self.kept || numbers.is_empty() {
            return Ok(());
        }
        let lookups = numbers.iter().map(|&n| {
            let subject = format!("{}{n}", self.reply_prefix);
            let client = self.client.clone();
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
