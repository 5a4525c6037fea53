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

mod collect;
mod control;
mod fast;
mod kept;
mod later;
mod publish;
mod report;
mod run;
mod summary;
mod window;
pub(crate) mod wire;

use std::io;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::Client;
use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;

use crate::check::{check_task_id, parse_timeout};
use crate::contract;
use crate::error::{Error, ErrorKind, ResultExt};
use crate::setup::{self, StreamSettings};
pub use collect::{results, BatchReport, CollectConfig, Collected, Collection};
pub use control::TaskControls;
pub(crate) use kept::last as kept_last;
pub use later::{submit_at, Scheduled};
pub use report::{TaskEnd, TaskStatus};
pub use summary::{Latency, Summary};

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
    /// Deadline, result TTL and unique key of every task.
    pub controls: TaskControls,
    /// The tenant this connection is (its account's subjects are mapped
    /// into `tenant.<name>.` of the fleet account): what a delayed task's
    /// schedule names as its target, `tenant.<name>.due.<kind>`. `None`:
    /// a user of the fleet account.
    pub tenant: Option<String>,
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
            controls: TaskControls::default(),
            tenant: None,
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
    let batch = batch_name(&client, &config);
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
    let task_subject = config.controls.priority.task_subject(&config.kind);
    let outbox = publish::Outbox::new(client.clone(), task_subject.clone().into(), config.timeout);
    let replies = client
        .subscribe(outbox.replies())
        .await
        .or_fail(ErrorKind::Connection, || {
            "subscribing to the server's replies".into()
        })?;
    let (tx, events) = mpsc::channel(1024);
    let mut run = run::Run::new(
        client.clone(),
        config,
        batch,
        reply_prefix,
        task_subject,
        outbox,
        tx,
    );
    client
        .flush()
        .await
        .or_fail(ErrorKind::Connection, || "flushing the subscription".into())?;
    let task = tokio::spawn(async move {
        let outcome = run.drive(input, sub, replies).await;
        run.finish(outcome).await;
    });
    Ok(Submission { events, task })
}

/// The run's batch name: the one given, or the random head of a fresh
/// NUID (short, and unique enough).
fn batch_name(client: &Client, config: &SubmitConfig) -> String {
    match &config.batch {
        Some(name) => name.clone(),
        None => client
            .new_inbox()
            .rsplit('.')
            .next()
            .unwrap_or("batch")
            .chars()
            .take(12)
            .collect(),
    }
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
    control::check(&config.controls, &config.kind)
}
