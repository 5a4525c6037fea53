//! The command line's arguments (clap). Defaults come from the library's
//! contract, so they are written once.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use fleet::contract;
use humantime::Duration;

use crate::output::Format;

/// A worker fleet on NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "fleet", version, about)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) nats: NatsArgs,
    /// Runtime threads: 1 (default) runs everything on one thread; raise it
    /// for handlers that compute in-process (CPU-bound Rust handlers).
    #[arg(long, global = true, env = "FLEET_THREADS", default_value_t = 1)]
    pub(crate) threads: usize,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Where NATS is and how to authenticate, as the `nats` CLI reads it.
#[derive(Debug, Args)]
pub(crate) struct NatsArgs {
    /// NATS server URLs, comma-separated (user:pass@ or token@ may be in them).
    #[arg(
        long = "nats-url",
        visible_alias = "server",
        global = true,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub(crate) url: String,
    /// A NATS credentials file (JWT and seed).
    #[arg(long, global = true, env = "NATS_CREDS")]
    pub(crate) creds: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
pub(crate) struct NodeArgs {
    /// This node's name, shown in results (default: host name and pid).
    #[arg(long, env = "FLEET_NODE_NAME")]
    pub(crate) name: Option<String>,
    /// The group (durable consumer) this node joins.
    #[arg(long, env = "FLEET_GROUP", default_value = contract::DEFAULT_GROUP)]
    pub(crate) group: String,
    /// Kinds this group takes, comma-separated (`image.>` works); default all.
    #[arg(long, env = "FLEET_KINDS", value_delimiter = ',')]
    pub(crate) kinds: Vec<String>,
    /// Handlers run at once in this process.
    #[arg(long, env = "FLEET_CONCURRENCY", default_value_t = contract::DEFAULT_CONCURRENCY)]
    pub(crate) concurrency: usize,
    /// How long the server waits for an ack before handing the task to another node.
    #[arg(long, env = "FLEET_ACK_WAIT", default_value_t = contract::DEFAULT_ACK_WAIT.into())]
    pub(crate) ack_wait: Duration,
    /// Attempts before a failing task is dead-lettered.
    #[arg(long, env = "FLEET_MAX_DELIVER", default_value_t = contract::DEFAULT_MAX_DELIVER)]
    pub(crate) max_deliver: u32,
    /// First retry delay, doubled on each further attempt.
    #[arg(long, default_value_t = contract::DEFAULT_RETRY_DELAY.into())]
    pub(crate) retry_delay: Duration,
    /// Timeout of a task that names no Task-Timeout.
    #[arg(long, env = "FLEET_TASK_TIMEOUT", default_value_t = contract::DEFAULT_TASK_TIMEOUT.into())]
    pub(crate) task_timeout: Duration,
    /// On SIGTERM or Ctrl-C, how long running tasks may finish before they are handed back.
    #[arg(long, env = "FLEET_GRACE", default_value_t = contract::DEFAULT_GRACE.into())]
    pub(crate) grace: Duration,
    /// An exec handler, KIND=COMMAND (run with sh -c; payload on stdin, result on stdout). Repeatable.
    #[arg(long = "exec", value_name = "KIND=COMMAND")]
    pub(crate) exec: Vec<String>,
    /// A TOML file of exec handlers: [kind] command = "...", timeout = "30s".
    #[arg(long, env = "FLEET_HANDLERS")]
    pub(crate) handlers: Option<PathBuf>,
    /// Do not register the built-in kinds (echo, sha256, sleep, fail).
    #[arg(long)]
    pub(crate) no_builtins: bool,
    /// Prefixes a task's Reply-To may start with. Repeatable.
    #[arg(long = "allow-reply", default_values_t = contract::DEFAULT_ALLOWED_REPLY_PREFIXES.iter().map(|s| s.to_string()))]
    pub(crate) allow_reply: Vec<String>,
    /// Stream replicas when this node creates the streams (3 on a cluster).
    #[arg(long, env = "FLEET_REPLICAS", default_value_t = 1)]
    pub(crate) replicas: usize,
    /// How long RESULTS keeps a result, when this node creates it.
    #[arg(long, default_value_t = contract::DEFAULT_RESULTS_MAX_AGE.into())]
    pub(crate) results_max_age: Duration,
    /// Cap on tasks in flight across the group (at least nodes x concurrency).
    #[arg(long, default_value_t = contract::DEFAULT_MAX_ACK_PENDING)]
    pub(crate) max_ack_pending: i64,
}

#[derive(Debug, Args)]
pub(crate) struct SubmitArgs {
    /// The kind of task: tasks are published to tasks.KIND.
    pub(crate) kind: String,
    /// One task per payload; with none, one task per line of standard input.
    pub(crate) payloads: Vec<String>,
    /// Most tasks in flight at once.
    #[arg(long, default_value_t = contract::DEFAULT_WINDOW)]
    pub(crate) window: usize,
    /// How long to wait for each task's result.
    #[arg(long, default_value_t = contract::DEFAULT_RESULT_TIMEOUT.into())]
    pub(crate) timeout: Duration,
    /// Results only to this submitter (faster; nothing kept in RESULTS).
    #[arg(long)]
    pub(crate) ephemeral: bool,
    /// Name the batch, so an interrupted run can be run again and resume.
    #[arg(long)]
    pub(crate) batch: Option<String>,
    /// Task-Timeout header for every task, e.g. 30s.
    #[arg(long)]
    pub(crate) task_timeout: Option<String>,
    /// How to print results.
    #[arg(long, value_enum, default_value_t = Format::Raw)]
    pub(crate) format: Format,
    /// Print results as JSON lines (same as --format json).
    #[arg(long)]
    pub(crate) json: bool,
    /// Never draw a progress bar.
    #[arg(long)]
    pub(crate) no_progress: bool,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    pub(crate) summary_json: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DeadCommand {
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
