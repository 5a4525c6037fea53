//! `fleet submit`: publish a stream of payloads as tasks of one kind, keep at
//! most `window` of them in flight, and collect one result for each.
//!
//! Each task gets the id `<batch>.<n>` (n counts from 1), the same
//! `Nats-Msg-Id`, and the reply subject `results.<batch>.<n>` (kept by
//! `RESULTS`) or, with `ephemeral`, a subject under this submitter's inbox.
//! The subscription is made before the first publish. A result that arrives
//! twice is counted once. A run with the same `batch` name resumes: results
//! already kept are collected first and their tasks are not published again.

pub mod output;

use std::collections::HashMap;
use std::io::{self, Write};
use std::time::Duration;

use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::jetstream::{self, stream::Stream as JsStream};
use async_nats::{Client, HeaderMap, Message};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::debug;

use crate::contract::{self, code};
use crate::error::{Error, ErrorKind, ResultExt};
use crate::setup::{self, StreamSettings};
use crate::task::check_task_id;
use output::{progress_bar, Format, Printer, Summary, TaskResult};

/// How `fleet submit` runs.
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
    /// How results are printed.
    pub format: Format,
    /// Draw a progress bar on standard error.
    pub progress: bool,
    /// How many tasks there are, when known (for the progress bar).
    pub expected: Option<u64>,
}

impl Default for SubmitConfig {
    fn default() -> Self {
        SubmitConfig {
            kind: "echo".to_string(),
            window: 256,
            timeout: Duration::from_secs(60),
            ephemeral: false,
            batch: None,
            task_timeout: None,
            format: Format::Raw,
            progress: false,
            expected: None,
        }
    }
}

/// How long after a reconnect kept results are swept for: JetStream may
/// take a while to be back, and nodes reconnect at their own pace.
const RECONNECT_SWEEP: Duration = Duration::from_secs(30);

/// Room kept for a task's headers under the server's `max_payload`.
const HEADROOM: usize = 512;

type AckFuture = BoxFuture<'static, (u64, Result<(), PublishError>)>;

/// Everything one run keeps track of.
struct Run<W: Write> {
    config: SubmitConfig,
    batch: String,
    reply_prefix: String,
    /// `tasks.<kind>`, made once.
    task_subject: async_nats::Subject,
    printer: Printer<W>,
    summary: Summary,
    /// Task number to the instant it was published. At most `window`
    /// entries: what is done leaves it, so memory does not grow with the batch.
    in_flight: HashMap<u64, Instant>,
    done: Bitset,
    latencies: hdrhistogram::Histogram<u64>,
    results: Option<JsStream>,
    /// After a reconnect, until when in-flight tasks are looked up in
    /// `RESULTS` once a second (results sent while we were away).
    sweep_until: Option<Instant>,
    last_sweep: Instant,
    bar: indicatif::ProgressBar,
}

/// Submits one task per item of `input` and waits for every result.
///
/// # Errors
/// [`ErrorKind::Usage`] for a bad kind, batch name or task timeout (nothing
/// sent); [`ErrorKind::Setup`] or [`ErrorKind::Connection`] when NATS
/// refuses; [`ErrorKind::Other`] when the input cannot be read or the output
/// written. Failed and timed-out tasks are not errors: they are counted in
/// the [`Summary`].
pub async fn submit<S, W>(
    client: Client,
    mut connected: watch::Receiver<u64>,
    config: SubmitConfig,
    mut input: S,
    out: W,
) -> Result<Summary, Error>
where
    S: Stream<Item = io::Result<Bytes>> + Unpin,
    W: Write,
{
    check_config(&config)?;
    let js = jetstream::new(client.clone());
    // Nodes create the streams as their operator configured them; a
    // submitter that comes first creates single-replica ones.
    if js.get_stream(contract::TASKS_STREAM).await.is_err() {
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
    let mut sub = client
        .subscribe(format!("{reply_prefix}>"))
        .await
        .kind(ErrorKind::Connection)?;
    let results = if config.ephemeral {
        None
    } else {
        Some(
            js.get_stream(contract::RESULTS_STREAM)
                .await
                .kind(ErrorKind::Setup)?,
        )
    };
    let started = Instant::now();
    let mut run = Run {
        bar: progress_bar(config.expected, config.progress),
        printer: Printer::new(config.format, out),
        task_subject: contract::task_subject(&config.kind).into(),
        batch,
        reply_prefix,
        summary: Summary::default(),
        in_flight: HashMap::new(),
        done: Bitset::default(),
        latencies: hdrhistogram::Histogram::new(3).expect("3 significant figures is valid"),
        results,
        sweep_until: None,
        last_sweep: started,
        config,
    };
    if run.config.batch.is_some() && !run.config.ephemeral {
        run.collect_kept().await?;
    }
    client.flush().await.kind(ErrorKind::Connection)?;

    let mut acks: FuturesUnordered<AckFuture> = FuturesUnordered::new();
    let mut next = 0u64;
    let mut input_done = false;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        if input_done && run.in_flight.is_empty() {
            break;
        }
        tokio::select! {
            item = input.next(), if !input_done && run.in_flight.len() < run.config.window => match item {
                None => input_done = true,
                Some(Err(err)) => return Err(Error::new(ErrorKind::Other, anyhow::anyhow!("reading the input: {err}"))),
                Some(Ok(payload)) => {
                    next += 1;
                    run.summary.tasks += 1;
                    if run.done.get(next) {
                        continue; // collected from an earlier run
                    }
                    if let Some(ack) = run.publish(&js, next, payload)? {
                        acks.push(ack);
                    }
                }
            },
            Some((n, accepted)) = acks.next(), if !acks.is_empty() => {
                if let Err(err) = accepted {
                    run.not_accepted(n, &err)?;
                }
            }
            msg = sub.next() => match msg {
                Some(msg) => run.on_result(&msg)?,
                None => return Err(Error::new(ErrorKind::Connection, anyhow::anyhow!("connection to NATS closed"))),
            },
            Ok(()) = connected.changed(), if run.results.is_some() => {
                if *connected.borrow_and_update() > 1 {
                    run.sweep_until = Some(Instant::now() + RECONNECT_SWEEP);
                }
            }
            _ = tick.tick() => {
                run.sweep().await?;
                run.expire().await?;
                run.printer.flush().kind(ErrorKind::Other)?;
            }
        }
    }
    run.printer.flush().kind(ErrorKind::Other)?;
    run.bar.finish_and_clear();
    run.summary.seconds = started.elapsed().as_secs_f64();
    let h = &run.latencies;
    run.summary.latency_us = output::Latency {
        p50: h.value_at_quantile(0.5),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    };
    Ok(run.summary)
}

fn check_config(config: &SubmitConfig) -> Result<(), Error> {
    let usage = |msg: String| Err(Error::new(ErrorKind::Usage, anyhow::anyhow!(msg)));
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
        if let Err(e) = crate::task::parse_timeout(timeout) {
            return usage(e.message().to_string());
        }
    }
    if config.window == 0 {
        return usage("--window must be at least 1".to_string());
    }
    Ok(())
}

impl<W: Write> Run<W> {
    fn publish(
        &mut self,
        js: &jetstream::Context,
        n: u64,
        payload: Bytes,
    ) -> Result<Option<AckFuture>, Error> {
        let id = format!("{}.{n}", self.batch);
        // Refuse what the server would refuse, before anything is sent.
        let max_payload = js.client().server_info().max_payload;
        if payload.len() + HEADROOM > max_payload {
            let result = TaskResult {
                id,
                kind: self.config.kind.clone(),
                error: Some((code::TOO_LARGE, format!("not submitted: the payload is {} bytes; the server takes at most {max_payload} (max_payload) with headers", payload.len()))),
                node: None,
                attempt: None,
                payload: Bytes::new(),
            };
            self.record(n, &result)?;
            return Ok(None);
        }
        let reply = format!("{}{n}", self.reply_prefix);
        let timeout = self.config.task_timeout.clone();
        let now = Instant::now();
        let deadline = now + self.config.timeout;
        self.in_flight.insert(n, now);
        let js = js.clone();
        let subject = self.task_subject.clone();
        Ok(Some(Box::pin(async move {
            loop {
                // Built per attempt (almost always one), not cloned.
                let publish = Publish::build()
                    .payload(payload.clone())
                    .headers(task_headers(&id, &reply, timeout.as_deref()))
                    .message_id(&id);
                let accepted = match js.send_publish(subject.clone(), publish).await {
                    Ok(ack) => ack.await.map(|_| ()),
                    Err(err) => Err(err),
                };
                match accepted {
                    // The same Nats-Msg-Id makes a second publish harmless.
                    Err(err) if transient(&err) && Instant::now() < deadline => {
                        debug!(%err, task = %id, "publish not confirmed; publishing again");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    other => return (n, other),
                }
            }
        })))
    }

    fn not_accepted(&mut self, n: u64, err: &PublishError) -> Result<(), Error> {
        if self.in_flight.remove(&n).is_none() {
            return Ok(());
        }
        let code = match err.kind() {
            PublishErrorKind::MaxPayloadExceeded => code::TOO_LARGE,
            _ => 503,
        };
        let result = TaskResult {
            id: format!("{}.{n}", self.batch),
            kind: self.config.kind.clone(),
            error: Some((code, format!("not submitted: {err}"))),
            node: None,
            attempt: None,
            payload: Bytes::new(),
        };
        self.record(n, &result)
    }

    fn on_result(&mut self, msg: &Message) -> Result<(), Error> {
        let Some(n) = msg
            .subject
            .strip_prefix(self.reply_prefix.as_str())
            .and_then(|tail| tail.parse::<u64>().ok())
        else {
            return Ok(());
        };
        let result = parse_result(
            &self.batch,
            n,
            &self.config.kind,
            msg.headers.as_ref(),
            msg.payload.clone(),
        );
        self.record(n, &result)
    }

    /// Prints and counts a task's first result; drops any later one.
    fn record(&mut self, n: u64, result: &TaskResult) -> Result<(), Error> {
        if self.done.get(n) {
            self.summary.duplicates += 1;
            return Ok(());
        }
        self.done.set(n);
        if let Some(published) = self.in_flight.remove(&n) {
            let micros = published.elapsed().as_micros() as u64;
            let _ = self.latencies.record(micros.max(1));
        }
        match result.error {
            None => self.summary.ok += 1,
            Some(_) => self.summary.failed += 1,
        }
        self.bar.inc(1);
        self.printer.print(result).kind(ErrorKind::Other)
    }

    /// Times out tasks past their deadline, after one last look in `RESULTS`
    /// for a result this submitter missed (it was disconnected).
    async fn expire(&mut self) -> Result<(), Error> {
        let timeout = self.config.timeout;
        let mut expired: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, published)| published.elapsed() >= timeout)
            .map(|(&n, _)| n)
            .collect();
        expired.sort_unstable();
        if expired.is_empty() {
            return Ok(());
        }
        self.catch_up(Some(&expired)).await?;
        for n in expired {
            if self.in_flight.remove(&n).is_some() {
                self.summary.timed_out += 1;
                self.bar.inc(1);
                let result = TaskResult {
                    id: format!("{}.{n}", self.batch),
                    kind: self.config.kind.clone(),
                    error: Some((
                        code::TIMED_OUT,
                        format!(
                            "no result within {}",
                            humantime::format_duration(self.config.timeout)
                        ),
                    )),
                    node: None,
                    attempt: None,
                    payload: Bytes::new(),
                };
                self.done.set(n);
                self.printer.print(&result).kind(ErrorKind::Other)?;
            }
        }
        Ok(())
    }

    /// Once a second while a reconnect is recent, looks up every in-flight
    /// task's kept result.
    async fn sweep(&mut self) -> Result<(), Error> {
        let Some(until) = self.sweep_until else {
            return Ok(());
        };
        let now = Instant::now();
        if now > until {
            self.sweep_until = None;
        } else if now.duration_since(self.last_sweep) >= Duration::from_secs(1) {
            self.last_sweep = now;
            self.catch_up(None).await?;
        }
        Ok(())
    }

    /// Looks up kept results of in-flight tasks (all, or `only` these).
    async fn catch_up(&mut self, only: Option<&[u64]>) -> Result<(), Error> {
        let Some(stream) = self.results.clone() else {
            return Ok(());
        };
        let wanted: Vec<u64> = match only {
            Some(list) => list.to_vec(),
            None => self.in_flight.keys().copied().collect(),
        };
        for n in wanted {
            let subject = format!("{}{n}", self.reply_prefix);
            if let Ok(kept) = stream.direct_get_last_for_subject(subject).await {
                let result = parse_result(
                    &self.batch,
                    n,
                    &self.config.kind,
                    Some(&kept.headers),
                    kept.payload,
                );
                self.record(n, &result)?;
            }
        }
        Ok(())
    }

    /// Collects the results an earlier run of this batch left in `RESULTS`.
    async fn collect_kept(&mut self) -> Result<(), Error> {
        let Some(stream) = self.results.clone() else {
            return Ok(());
        };
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: format!("{}>", self.reply_prefix),
                ..Default::default()
            })
            .await
            .kind(ErrorKind::Setup)?;
        let mut consumer = consumer;
        if consumer.info().await.kind(ErrorKind::Setup)?.num_pending == 0 {
            return Ok(());
        }
        let mut messages = consumer.messages().await.kind(ErrorKind::Setup)?;
        while let Some(msg) = messages.next().await {
            let msg = msg.kind(ErrorKind::Connection)?;
            let pending = msg.info().map(|i| i.pending).unwrap_or(0);
            if let Some(n) = msg
                .subject
                .strip_prefix(self.reply_prefix.as_str())
                .and_then(|t| t.parse::<u64>().ok())
            {
                if !self.done.get(n) {
                    self.summary.resumed += 1;
                }
                let result = parse_result(
                    &self.batch,
                    n,
                    &self.config.kind,
                    msg.headers.as_ref(),
                    msg.payload.clone(),
                );
                self.record(n, &result)?;
            }
            if pending == 0 {
                break;
            }
        }
        Ok(())
    }
}

/// The headers of task `id`, answered on `reply`.
fn task_headers(id: &str, reply: &str, timeout: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(contract::HDR_TASK_ID, id);
    headers.insert(contract::HDR_REPLY_TO, reply);
    if let Some(timeout) = timeout {
        headers.insert(contract::HDR_TASK_TIMEOUT, timeout);
    }
    headers
}

/// Errors after which the same publish may succeed (the server restarting,
/// a lost PubAck). The message id keeps a second publish from doubling.
fn transient(err: &PublishError) -> bool {
    !matches!(err.kind(), PublishErrorKind::MaxPayloadExceeded)
}

fn parse_result(
    batch: &str,
    n: u64,
    kind: &str,
    headers: Option<&HeaderMap>,
    payload: Bytes,
) -> TaskResult {
    let get = |name: &str| {
        headers
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_string())
    };
    let error = get(contract::HDR_SERVICE_ERROR_CODE).map(|code| {
        let code = code.parse().unwrap_or(code::HANDLER_FAILED);
        (code, get(contract::HDR_SERVICE_ERROR).unwrap_or_default())
    });
    TaskResult {
        id: get(contract::HDR_TASK_ID).unwrap_or_else(|| format!("{batch}.{n}")),
        kind: kind.to_string(),
        error,
        node: get(contract::HDR_TASK_NODE),
        attempt: get(contract::HDR_TASK_ATTEMPT).and_then(|a| a.parse().ok()),
        payload,
    }
}

/// One bit per task number: has it ended?
#[derive(Default)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn get(&self, n: u64) -> bool {
        let (word, bit) = ((n / 64) as usize, n % 64);
        self.0.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }

    fn set(&mut self, n: u64) {
        let (word, bit) = ((n / 64) as usize, n % 64);
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << bit;
    }
}
