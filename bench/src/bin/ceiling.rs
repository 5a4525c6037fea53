//! The ceiling `bin/bench` holds fleet against: the smallest hand-written
//! task loop on async-nats that does the same work as `fleet node` plus
//! `fleet submit`, without the fleet library.
//!
//! * `ceiling worker --mode plain|kept` recreates the streams `CEIL`
//!   (WorkQueue, `ceil.tasks.>`) and `CEILR` (Limits, `ceil.results.>`), binds
//!   one durable pull consumer with explicit acks, and for each task publishes
//!   the payload back to the subject in the task's `Ceil-Reply` header, then
//!   acks. `plain`: the result is a core publish, acked at once. `kept`: the
//!   result is a JetStream publish captured by `CEILR`, and the task is acked
//!   when its PubAck is back (pipelined, never one at a time). With
//!   `--handler sha256` the result is the payload's hex SHA-256 instead.
//! * `ceiling submit --mode plain|kept -n N --window W` publishes N tasks of
//!   `--size` bytes with PubAck, at most W without a result, collects every
//!   result on a core subscription (its inbox, or `ceil.results.<run>.>`),
//!   and prints one JSON line: tasks, seconds, tasks_per_s, latency_us.
//!
//! The worker prints `ceiling worker ready` on standard error once it pulls.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use sha2::{Digest, Sha256};

const TASKS_STREAM: &str = "CEIL";
const RESULTS_STREAM: &str = "CEILR";
const TASK_SUBJECT: &str = "ceil.tasks.echo";
const REPLY_HEADER: &str = "Ceil-Reply";

type AnyResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Debug, Parser)]
#[command(about = "Hand-written task loop on async-nats: the ceiling for bin/bench")]
struct Cli {
    /// NATS server URL.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Results by core publish.
    Plain,
    /// Results kept by a Limits stream; ack after the result's PubAck.
    Kept,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Work {
    /// The result is the payload.
    Echo,
    /// The result is the lowercase hex SHA-256 of the payload.
    Sha256,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Recreate the streams, pull tasks, echo each back, ack.
    Worker {
        #[arg(long, value_enum, default_value_t = Mode::Plain)]
        mode: Mode,
        /// What each task does: echo the payload, or its SHA-256 in hex.
        #[arg(long, value_enum, default_value_t = Work::Echo)]
        handler: Work,
    },
    /// Publish N tasks with a window and wait for all results.
    Submit {
        #[arg(long, value_enum, default_value_t = Mode::Plain)]
        mode: Mode,
        /// Number of tasks.
        #[arg(short = 'n', long, default_value_t = 20_000)]
        tasks: u64,
        /// Most tasks without a result at once.
        #[arg(long, default_value_t = 256)]
        window: usize,
        /// Payload bytes per task.
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Give up when no result arrives for this many seconds.
        #[arg(long, default_value_t = 30)]
        stall_secs: u64,
    },
}

// As fast as a naive loop can be: the allocator and the one-thread runtime
// fleet's binary uses (a second worker thread costs more in wake-ups than it
// gives to one connection's I/O).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> AnyResult<()> {
    let cli = Cli::parse();
    let client = async_nats::connect(cli.nats_url.as_str()).await?;
    match cli.command {
        Cmd::Worker { mode, handler } => worker(client, mode, handler).await,
        Cmd::Submit {
            mode,
            tasks,
            window,
            size,
            stall_secs,
        } => {
            submit(
                client,
                mode,
                tasks,
                window.max(1),
                size,
                Duration::from_secs(stall_secs),
            )
            .await
        }
    }
}

async fn recreate_streams(js: &jetstream::Context) -> AnyResult<stream::Stream> {
    for name in [TASKS_STREAM, RESULTS_STREAM] {
        let _ = js.delete_stream(name).await; // absent on a fresh server
    }
    let tasks = js
        .create_stream(stream::Config {
            name: TASKS_STREAM.to_string(),
            subjects: vec!["ceil.tasks.>".to_string()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    js.create_stream(stream::Config {
        name: RESULTS_STREAM.to_string(),
        subjects: vec!["ceil.results.>".to_string()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    Ok(tasks)
}

async fn worker(client: async_nats::Client, mode: Mode, work: Work) -> AnyResult<()> {
    let js = jetstream::new(client.clone());
    let tasks = recreate_streams(&js).await?;
    let consumer = tasks
        .create_consumer(pull::Config {
            durable_name: Some("ceil".to_string()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 20_000,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    eprintln!("ceiling worker ready (mode {mode:?}, handler {work:?})");

    // Kept mode: tasks whose result's PubAck is still on its way.
    let mut pending = FuturesUnordered::new();
    loop {
        tokio::select! {
            msg = messages.next() => {
                let Some(msg) = msg else { return Ok(()) };
                let msg = msg?;
                let Some(reply) = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(REPLY_HEADER))
                    .map(|v| v.as_str().to_string())
                else {
                    msg.ack().await?; // not ours: drop it
                    continue;
                };
                let payload = match work {
                    Work::Echo => msg.payload.clone(),
                    Work::Sha256 => Bytes::from(hex::encode(Sha256::digest(&msg.payload))),
                };
                match mode {
                    Mode::Plain => {
                        client.publish(reply, payload).await?;
                        msg.ack().await?;
                    }
                    Mode::Kept => {
                        let ack = js.publish(reply, payload).await?;
                        pending.push(async move { (ack.await, msg) });
                    }
                }
            }
            Some((kept, msg)) = pending.next(), if !pending.is_empty() => {
                kept?;
                msg.ack().await?;
            }
        }
    }
}

async fn submit(
    client: async_nats::Client,
    mode: Mode,
    total: u64,
    window: usize,
    size: usize,
    stall: Duration,
) -> AnyResult<()> {
    let js = jetstream::new(client.clone());
    let prefix = match mode {
        Mode::Plain => format!("{}.", client.new_inbox()),
        Mode::Kept => format!("ceil.results.r{}x{}.", std::process::id(), nanos_now()),
    };
    let mut results = client.subscribe(format!("{prefix}>")).await?;
    client.flush().await?;

    let payload = Bytes::from(vec![b'x'; size]);
    // Task number to publish instant: at most `window` entries.
    let mut sent_at: HashMap<u64, Instant> = HashMap::with_capacity(window);
    let mut latencies = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut acks = FuturesUnordered::new();
    let (mut next, mut in_flight, mut done) = (0u64, 0usize, 0u64);
    let started = Instant::now();
    let mut last_result = Instant::now();
    // When the 10th and the 90th percentile of the results came: the rate
    // between them leaves out the warm-up and the tail.
    let (mut t10, mut t90) = (None, None);
    while done < total {
        while in_flight < window && next < total {
            next += 1;
            let mut headers = HeaderMap::new();
            headers.insert(REPLY_HEADER, format!("{prefix}{next}").as_str());
            sent_at.insert(next, Instant::now());
            let ack = js
                .publish_with_headers(TASK_SUBJECT, headers, payload.clone())
                .await?;
            acks.push(ack.into_future());
            in_flight += 1;
        }
        tokio::select! {
            Some(accepted) = acks.next(), if !acks.is_empty() => {
                accepted?;
            }
            msg = results.next() => {
                let Some(msg) = msg else { return Err("connection closed".into()) };
                let n: u64 = msg.subject.rsplit('.').next().and_then(|s| s.parse().ok()).unwrap_or(0);
                if let Some(at) = sent_at.remove(&n) {
                    latencies.record(at.elapsed().as_micros() as u64)?;
                    in_flight -= 1;
                    done += 1;
                    last_result = Instant::now();
                    if done == (total / 10).max(1) {
                        t10 = Some(last_result);
                    }
                    if done == (total * 9 / 10).max(1) {
                        t90 = Some(last_result);
                    }
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if last_result.elapsed() > stall {
                    return Err(format!("stalled: {done} of {total} results after {:?}", started.elapsed()).into());
                }
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    while let Some(accepted) = acks.next().await {
        accepted?;
    }
    let summary = serde_json::json!({
        "mode": format!("{mode:?}").to_lowercase(),
        "tasks": total,
        "window": window,
        "seconds": seconds,
        "tasks_per_s": total as f64 / seconds,
        "steady_tasks_per_s": match (t10, t90) {
            (Some(a), Some(b)) if b > a => (total as f64 * 0.8) / (b - a).as_secs_f64(),
            _ => total as f64 / seconds,
        },
        "latency_us": {
            "p50": latencies.value_at_quantile(0.5),
            "p99": latencies.value_at_quantile(0.99),
            "p999": latencies.value_at_quantile(0.999),
            "max": latencies.max(),
        },
    });
    println!("{summary}");
    Ok(())
}

fn nanos_now() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}
