//! The `fleet` command line: clap definitions and what each command runs.
//! `main.rs` only parses, sets up logging and turns the outcome into an exit
//! code.

use std::future::Future;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use futures::Stream;
use tokio::io::AsyncBufReadExt;

use crate::connect::{connect, ConnectConfig};
use crate::error::{Error, ErrorKind, ResultExt};
use crate::handlers::{exec, Registry};
use crate::node::{default_node_name, Node, NodeConfig};
use crate::setup::StreamSettings;
use crate::submit::output::Format;
use crate::submit::{submit, SubmitConfig};
use crate::{contract, dead, status};

/// A worker fleet on NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "fleet", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Runtime threads: 1 (default) runs everything on one thread; raise it
    /// for handlers that compute in-process (CPU-bound Rust handlers).
    #[arg(long, global = true, env = "FLEET_THREADS", default_value_t = 1)]
    pub threads: usize,
    #[command(subcommand)]
    pub command: Command,
}

/// Where NATS is, as the `nats` CLI reads it.
#[derive(Debug, Args)]
pub struct NatsArgs {
    /// NATS server URLs, comma-separated (user:pass@ or a token may be in them).
    #[arg(
        long,
        global = true,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// A NATS credentials file.
    #[arg(long, global = true, env = "NATS_CREDS")]
    pub creds: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a worker node: pull tasks, run handlers, publish results.
    Node(NodeArgs),
    /// Submit tasks of one kind and print their results.
    Submit(SubmitArgs),
    /// Show queue depth, groups, kept results and dead letters.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List or replay dead letters.
    #[command(subcommand)]
    Dead(DeadCommand),
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// This node's name, shown in results (default: host name and pid).
    #[arg(long, env = "FLEET_NODE_NAME")]
    pub name: Option<String>,
    /// The group (durable consumer) this node joins.
    #[arg(long, env = "FLEET_GROUP", default_value = contract::DEFAULT_GROUP)]
    pub group: String,
    /// Kinds this group takes, comma-separated (`image.*` works); default all.
    #[arg(long, env = "FLEET_KINDS", value_delimiter = ',')]
    pub kinds: Vec<String>,
    /// Tasks run at once in this process.
    #[arg(long, env = "FLEET_CONCURRENCY", default_value_t = 64)]
    pub concurrency: usize,
    /// How long the server waits for an ack before handing the task to another node.
    #[arg(long, env = "FLEET_ACK_WAIT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub ack_wait: Duration,
    /// Attempts before a failing task is dead-lettered.
    #[arg(long, env = "FLEET_MAX_DELIVER", default_value_t = contract::DEFAULT_MAX_DELIVER)]
    pub max_deliver: u32,
    /// First retry delay, doubled on each further attempt.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub retry_delay: Duration,
    /// Timeout of a task that names no Task-Timeout.
    #[arg(long, env = "FLEET_TASK_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub task_timeout: Duration,
    /// On SIGTERM or Ctrl-C, how long running tasks may finish before they are handed back.
    #[arg(long, env = "FLEET_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub grace: Duration,
    /// An exec handler, KIND=COMMAND (run with sh -c; payload on stdin, result on stdout). Repeatable.
    #[arg(long = "exec", value_name = "KIND=COMMAND")]
    pub exec: Vec<String>,
    /// A TOML file of exec handlers: [kind] command = "...", timeout = "30s".
    #[arg(long, env = "FLEET_HANDLERS")]
    pub handlers: Option<PathBuf>,
    /// Do not register the built-in kinds (echo, sha256, sleep, fail).
    #[arg(long)]
    pub no_builtins: bool,
    /// Prefixes a task's Reply-To may start with. Repeatable.
    #[arg(long = "allow-reply", default_values_t = contract::DEFAULT_ALLOWED_REPLY_PREFIXES.iter().map(|s| s.to_string()).collect::<Vec<_>>())]
    pub allow_reply: Vec<String>,
    /// Stream replicas when this node creates the streams (3 on a cluster).
    #[arg(long, env = "FLEET_REPLICAS", default_value_t = 1)]
    pub replicas: usize,
    /// How long RESULTS keeps a result, when this node creates it.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub results_max_age: Duration,
    /// Cap on tasks in flight across the group (at least nodes x concurrency).
    #[arg(long, default_value_t = contract::DEFAULT_MAX_ACK_PENDING)]
    pub max_ack_pending: i64,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The kind of task: tasks are published to tasks.KIND.
    pub kind: String,
    /// One task per payload; with none, one task per line of standard input.
    pub payloads: Vec<String>,
    /// Most tasks in flight at once.
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// How long to wait for each task's result.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Results only to this submitter (faster; nothing kept in RESULTS).
    #[arg(long)]
    pub ephemeral: bool,
    /// Name the batch, so an interrupted run can be run again and resume.
    #[arg(long)]
    pub batch: Option<String>,
    /// Task-Timeout header for every task, e.g. 30s.
    #[arg(long)]
    pub task_timeout: Option<String>,
    /// How to print results.
    #[arg(long, value_enum, default_value_t = Format::Raw)]
    pub format: Format,
    /// Print results as JSON lines (same as --format json).
    #[arg(long)]
    pub json: bool,
    /// Never draw a progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum DeadCommand {
    /// List dead letters.
    List {
        /// Only this kind.
        #[arg(long)]
        kind: Option<String>,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back on the queue (and remove them from DEAD).
    Replay {
        /// Only this kind.
        #[arg(long)]
        kind: Option<String>,
        /// Only these tasks (task ids or DEAD sequences); default all.
        ids: Vec<String>,
    },
}

/// What a command ended with: the process exit code.
pub type ExitCode = i32;

/// Runs the parsed command until it ends or `shutdown` fires (nodes).
///
/// # Errors
/// An [`Error`] whose kind `main` maps to exit code 2 (usage, connection)
/// or 1.
pub async fn run(cli: Cli, shutdown: impl Future<Output = ()>) -> Result<ExitCode, Error> {
    let wait_for_server = matches!(cli.command, Command::Node(_));
    let name = match &cli.command {
        Command::Node(args) => args.name.clone().unwrap_or_else(default_node_name),
        _ => format!("fleet-{}", std::process::id()),
    };
    let connect_config = ConnectConfig {
        url: cli.nats.nats_url.clone(),
        creds: cli.nats.creds.clone(),
        name: name.clone(),
        wait_for_server,
    };
    // Check a node's flags before connecting: a typo is a usage error, not a wait.
    let node_setup = match &cli.command {
        Command::Node(args) => Some(node_setup(args, name)?),
        _ => None,
    };
    let (client, connected) = connect(&connect_config).await?;
    let js = async_nats::jetstream::new(client.clone());
    match cli.command {
        Command::Node(_) => {
            let (config, registry) = node_setup.expect("built above");
            Node::new(client, config, registry).run(shutdown).await?;
            Ok(0)
        }
        Command::Submit(args) => run_submit(client, connected, args).await,
        Command::Status { json } => {
            let status = status::status(&js).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).kind(ErrorKind::Other)?
                );
            } else {
                println!("{status}");
            }
            Ok(0)
        }
        Command::Dead(DeadCommand::List { kind, json }) => {
            let dead = dead::list(&js, kind.as_deref()).await?;
            let mut out = io::stdout().lock();
            for d in &dead {
                if json {
                    writeln!(out, "{}", serde_json::to_string(d).kind(ErrorKind::Other)?)
                        .kind(ErrorKind::Other)?;
                } else {
                    writeln!(
                        out,
                        "{:>6}  {:<12} {:<24} attempts {}  {} {}",
                        d.seq, d.kind, d.id, d.attempts, d.code, d.error
                    )
                    .kind(ErrorKind::Other)?;
                }
            }
            if !json {
                eprintln!("{} dead letters", dead.len());
            }
            Ok(0)
        }
        Command::Dead(DeadCommand::Replay { kind, ids }) => {
            let replayed = dead::replay(&js, kind.as_deref(), &ids).await?;
            for d in &replayed {
                println!(
                    "replayed {} ({}) to {}",
                    d.id,
                    d.seq,
                    contract::task_subject(&d.kind)
                );
            }
            eprintln!("{} tasks replayed", replayed.len());
            Ok(0)
        }
    }
}

fn node_setup(args: &NodeArgs, name: String) -> Result<(NodeConfig, Registry), Error> {
    let mut registry = if args.no_builtins {
        Registry::new()
    } else {
        Registry::with_builtins()
    };
    exec::register_all(&mut registry, &args.exec, args.handlers.as_deref())
        .kind(ErrorKind::Usage)?;
    let config = NodeConfig {
        name,
        group: args.group.clone(),
        kinds: args.kinds.clone(),
        concurrency: args.concurrency,
        ack_wait: args.ack_wait,
        max_deliver: args.max_deliver.max(1),
        retry_delay: args.retry_delay,
        task_timeout: args.task_timeout,
        grace: args.grace,
        allowed_replies: args.allow_reply.clone(),
        streams: StreamSettings {
            replicas: args.replicas,
            results_max_age: args.results_max_age,
        },
        max_ack_pending: args.max_ack_pending,
    };
    Ok((config, registry))
}

async fn run_submit(
    client: async_nats::Client,
    connected: tokio::sync::watch::Receiver<u64>,
    args: SubmitArgs,
) -> Result<ExitCode, Error> {
    let from_args = !args.payloads.is_empty();
    let config = SubmitConfig {
        kind: args.kind,
        window: args.window,
        timeout: args.timeout,
        ephemeral: args.ephemeral,
        batch: args.batch,
        task_timeout: args.task_timeout,
        format: if args.json { Format::Json } else { args.format },
        // A bar for large or unknown-sized batches, on a terminal only.
        progress: !args.no_progress
            && io::stderr().is_terminal()
            && (!from_args || args.payloads.len() > 100),
        expected: from_args.then_some(args.payloads.len() as u64),
    };
    let out = io::BufWriter::new(io::stdout().lock());
    let summary = if from_args {
        let items = args.payloads.into_iter().map(|p| Ok(Bytes::from(p)));
        submit(
            client.clone(),
            connected,
            config,
            futures::stream::iter(items),
            out,
        )
        .await?
    } else {
        submit(client.clone(), connected, config, stdin_lines(), out).await?
    };
    let _ = client.flush().await;
    eprintln!("{summary}");
    if let Some(path) = args.summary_json {
        let json = serde_json::to_vec_pretty(&summary).kind(ErrorKind::Other)?;
        std::fs::write(&path, json).kind(ErrorKind::Other)?;
    }
    if summary.all_ok() {
        Ok(0)
    } else {
        if summary.failed + summary.timed_out > 0 {
            eprintln!(
                "error: {} of {} tasks failed or timed out",
                summary.failed + summary.timed_out,
                summary.tasks
            );
        }
        Ok(1)
    }
}

/// Standard input, one payload per line (bytes, not necessarily UTF-8),
/// read as needed: a million lines are never held at once.
fn stdin_lines() -> impl Stream<Item = io::Result<Bytes>> + Unpin {
    let reader = tokio::io::BufReader::with_capacity(64 * 1024, tokio::io::stdin());
    Box::pin(futures::stream::unfold(reader, |mut reader| async move {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) => None,
            Ok(_) => {
                if line.ends_with(b"\n") {
                    line.pop();
                    if line.ends_with(b"\r") {
                        line.pop();
                    }
                }
                Some((Ok(Bytes::from(line)), reader))
            }
            Err(err) => Some((Err(err), reader)),
        }
    }))
}
