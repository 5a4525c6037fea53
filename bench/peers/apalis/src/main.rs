//! apalis-peer: the echo workload of bin/bench on apalis 1.x with its NATS
//! JetStream backend, apalis-nats 0.1, set up as apalis-nats documents a job
//! queue: `Config::new(queue).with_pull_consumer().durable()` (a durable
//! pull consumer, explicit acks, the stream's default Limits retention).
//!
//! apalis-nats keeps no results: the handler's return value goes nowhere
//! but the ack middleware (`+ACK` on success), so there is no submitter
//! waiting for results and no per-task latency here. The run is measured on
//! the worker side only, from the first job started to the N-th job done.
//!
//! * `apalis-peer worker --expect N` recreates the queue's stream, creates
//!   its durable consumer, prints `apalis worker ready` on standard error,
//!   runs one apalis worker on it, and after N jobs prints one JSON line:
//!   tasks, expected, seconds, tasks_per_s, steady_tasks_per_s (the rate
//!   between the 10%-th and the 90%-th job done), then stops the worker and
//!   exits 0. If no job is done for 10 s (some pushed jobs never came: the
//!   sink does not wait for PubAcks), it prints the same line for the jobs
//!   that came, tasks < expected, and exits 0.
//! * `apalis-peer push -n N --size S` pushes N echo jobs (a string of S
//!   bytes each) with apalis's `TaskSink::push`, one after the other, and
//!   exits. apalis-nats's sink does not wait for the PubAck of a job (it
//!   hands the ack future to async-nats's background acker, which allows
//!   5000 in flight), so `push` returning means "sent", not "stored"; the
//!   pusher flushes the connection before it exits so nothing sent is lost.
//!
//! Runtime: a current-thread tokio runtime, like the other contestants;
//! apalis 1.x itself spawns nothing and runs on it as is.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use apalis::prelude::*;
use apalis_nats::{Config, NatsJetStream};
use async_nats::jetstream::{self, consumer::pull, consumer::push};
use clap::{Parser, Subcommand};

/// The queue: apalis-nats names the stream after it and publishes jobs to a
/// subject of the same name.
const QUEUE: &str = "APALIS_ECHO";

type AnyResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Debug, Parser)]
#[command(about = "The echo workload on apalis + apalis-nats: a peer for bin/bench")]
struct Cli {
    /// NATS server URL.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Recreate the queue, run one worker, report after N jobs, exit.
    Worker {
        /// Jobs to process before reporting and exiting.
        #[arg(long)]
        expect: usize,
    },
    /// Push N echo jobs and exit.
    Push {
        /// Number of jobs.
        #[arg(short = 'n', long, default_value_t = 20_000)]
        tasks: usize,
        /// Bytes of the string each job carries.
        #[arg(long, default_value_t = 100)]
        size: usize,
    },
}

fn queue_config() -> Config<pull::Config> {
    Config::new(QUEUE).with_pull_consumer().durable()
}

fn backend(client: async_nats::Client) -> NatsJetStream<String, pull::Config> {
    NatsJetStream::<String, push::Config>::new(client).with_config(queue_config())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> AnyResult<()> {
    let cli = Cli::parse();
    let client = async_nats::connect(cli.nats_url.as_str()).await?;
    match cli.command {
        Cmd::Worker { expect } => worker(client, expect.max(1)).await,
        Cmd::Push { tasks, size } => push(client, tasks, size).await,
    }
}

/// What the handlers share: when the first job started, when each finished.
#[derive(Debug)]
struct Progress {
    expect: usize,
    first_start: OnceLock<Instant>,
    done_at: Mutex<Vec<Instant>>,
}

async fn echo(
    job: String,
    progress: Data<Arc<Progress>>,
    wrk: WorkerContext,
) -> Result<String, BoxDynError> {
    progress.first_start.get_or_init(Instant::now);
    let result = job; // the echo: the job's string is its result
    let mut done_at = progress.done_at.lock().expect("poisoned");
    done_at.push(Instant::now());
    if done_at.len() == progress.expect {
        report(
            progress.first_start.get().copied(),
            &done_at,
            progress.expect,
        );
        wrk.stop()?;
    }
    Ok(result)
}

fn report(first_start: Option<Instant>, done_at: &[Instant], expect: usize) {
    let n = done_at.len();
    let start = first_start.unwrap_or(done_at[0]);
    let seconds = done_at[n - 1].duration_since(start).as_secs_f64();
    let at = |q: f64| done_at[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
    let span = at(0.9).duration_since(at(0.1)).as_secs_f64();
    let steady = if span > 0.0 {
        0.8 * n as f64 / span
    } else {
        0.0
    };
    let summary = serde_json::json!({
        "tasks": n,
        "expected": expect,
        "seconds": seconds,
        "tasks_per_s": n as f64 / seconds,
        "steady_tasks_per_s": steady,
    });
    println!("{summary}");
}

/// How long without a job done (or, before the first, 6 times as long)
/// counts as the rest never coming.
const STALL: Duration = Duration::from_secs(10);

/// Returns once no job was done for [`STALL`].
async fn stalled(progress: Arc<Progress>) {
    let began = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let last = progress.done_at.lock().expect("poisoned").last().copied();
        match last {
            Some(last) if last.elapsed() >= STALL => return,
            None if began.elapsed() >= STALL * 6 => return,
            _ => {}
        }
    }
}

async fn worker(client: async_nats::Client, expect: usize) -> AnyResult<()> {
    // A fresh queue each run. Then the stream and consumer exactly as the
    // backend would create them lazily on its first poll (it finds them), so
    // that readiness means "jobs pushed now will be pulled".
    let js = jetstream::new(client.clone());
    let _ = js.delete_stream(QUEUE).await; // absent on a fresh server
    let config = queue_config();
    let stream = js.get_or_create_stream(config.stream.clone()).await?;
    stream.create_consumer(config.consumer.clone()).await?;

    let progress = Arc::new(Progress {
        expect,
        first_start: OnceLock::new(),
        done_at: Mutex::new(Vec::with_capacity(expect)),
    });
    let watch = progress.clone();
    let worker = WorkerBuilder::new("apalis-peer")
        .backend(backend(client.clone()))
        .data(progress)
        .build(echo);
    eprintln!("apalis worker ready (queue {QUEUE}, expect {expect})");
    tokio::select! {
        run = worker.run() => run?,
        () = stalled(watch.clone()) => {
            // Jobs pushed and never delivered (apalis-nats does not wait
            // for a job's PubAck): report the ones that came, and say so.
            let done_at = watch.done_at.lock().expect("poisoned");
            eprintln!("apalis-peer: {} of {expect} jobs arrived, then none for {STALL:?}", done_at.len());
            if done_at.is_empty() {
                return Err("no job arrived".into());
            }
            report(watch.first_start.get().copied(), &done_at, expect);
        }
    }
    // The acks of the last jobs are only queued on the connection when the
    // worker stops: send them before the process exits.
    tokio::time::timeout(Duration::from_secs(30), client.flush()).await??;
    Ok(())
}

async fn push(client: async_nats::Client, tasks: usize, size: usize) -> AnyResult<()> {
    let mut backend = backend(client.clone());
    let job = "x".repeat(size);
    let started = Instant::now();
    for _ in 0..tasks {
        backend.push(job.clone()).await?;
    }
    tokio::time::timeout(Duration::from_secs(30), client.flush()).await??;
    eprintln!(
        "apalis-peer: pushed {tasks} jobs in {:.3}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
