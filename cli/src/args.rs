//! The command line's arguments (clap). Defaults come from the library's
//! contract, so they are written once.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use fleet::{contract, StreamSettings};
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
    /// Log lines as text (colour only on a terminal) or as JSON, one object a line.
    #[arg(long, global = true, env = "FLEET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Where NATS is and how to authenticate, spelled as the `nats` CLI spells
/// it (flags and environment variables alike). Secrets are never shown.
#[derive(Debug, Args)]
pub(crate) struct NatsArgs {
    /// NATS server URLs, comma-separated (user:pass@ or token@ may be in them).
    #[arg(
        short = 's',
        long = "server",
        visible_alias = "nats-url",
        global = true,
        env = "NATS_URL",
        hide_env_values = true,
        default_value = "nats://127.0.0.1:4222"
    )]
    pub(crate) url: String,
    /// User name, with --password.
    #[arg(long, global = true, env = "NATS_USER")]
    pub(crate) user: Option<String>,
    /// Password.
    #[arg(long, global = true, env = "NATS_PASSWORD", hide_env_values = true)]
    pub(crate) password: Option<String>,
    /// Token.
    #[arg(long, global = true, env = "NATS_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// A file holding an nkey seed.
    #[arg(long, global = true, env = "NATS_NKEY")]
    pub(crate) nkey: Option<PathBuf>,
    /// A NATS credentials file (JWT and seed).
    #[arg(long, global = true, env = "NATS_CREDS")]
    pub(crate) creds: Option<PathBuf>,
    /// CA certificates to trust (PEM); turns TLS on.
    #[arg(long, global = true, env = "NATS_CA")]
    pub(crate) tlsca: Option<PathBuf>,
    /// Client certificate (PEM), with --tlskey: mutual TLS.
    #[arg(long, global = true, env = "NATS_CERT")]
    pub(crate) tlscert: Option<PathBuf>,
    /// Client key (PEM).
    #[arg(long, global = true, env = "NATS_KEY")]
    pub(crate) tlskey: Option<PathBuf>,
    /// Start TLS before the server's greeting (servers with handshake_first).
    #[arg(long, global = true)]
    pub(crate) tlsfirst: bool,
    /// Prefix of this connection's inboxes (a role allowed only its own).
    #[arg(long, global = true, env = "NATS_INBOX_PREFIX")]
    pub(crate) inbox_prefix: Option<String>,
    /// How often to ping the server; two pings unanswered and the
    /// connection moves to another server of --server's list.
    #[arg(long, global = true, env = "FLEET_PING_INTERVAL", default_value_t = contract::DEFAULT_PING_INTERVAL.into())]
    pub(crate) ping_interval: Duration,
}

/// How log lines are written (standard error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// For people.
    Text,
    /// For machines: one JSON object a line.
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create or update the streams and a group's consumer (admin).
    Setup(SetupArgs),
    /// Run a worker node: pull tasks, run handlers, publish results.
    Node(Box<NodeArgs>),
    /// Submit tasks of one kind and print their results.
    Submit(SubmitArgs),
    /// Show queue depth, groups, kept results and dead letters.
    Status {
        /// Print JSON instead of text (field names are stable; see the README).
        #[arg(long)]
        json: bool,
        /// Print again every second until Ctrl-C (on a terminal, in place).
        #[arg(long)]
        watch: bool,
    },
    /// List or replay dead letters.
    #[command(subcommand)]
    Dead(DeadCommand),
    /// Serve a live web page of the fleet, and fleet-wide metrics at /metrics.
    Dashboard(DashboardArgs),
    /// Cancel tasks: queued, delayed or running ones end as 499 (admin).
    Cancel(crate::cancel::CancelArgs),
    /// Print the kept results of a batch (one submitted with --delay or --at
    /// and --no-wait, or any --batch); say which are missing.
    Results(crate::schedule::ResultsArgs),
    /// Add, list or remove recurring schedules (cron lines, intervals).
    #[command(subcommand)]
    Schedule(crate::schedule::ScheduleCommand),
    /// Pause a group (or the group of one kind): its nodes start no task (admin).
    Pause(crate::control::PauseArgs),
    /// Resume a paused group (or the group of one kind) (admin).
    Resume(crate::control::TargetArgs),
    /// Set, list or remove concurrency and rate limits per kind and per key (admin).
    #[command(subcommand)]
    Limit(crate::limit::LimitCommand),
}

/// Where the dashboard listens and whom it lets in.
#[derive(Debug, Args)]
pub(crate) struct DashboardArgs {
    /// Address to listen on. Anything but loopback needs --web-token or --web-token-file.
    #[arg(long, env = "FLEET_DASHBOARD_LISTEN", default_value = "127.0.0.1:8080")]
    pub(crate) listen: std::net::SocketAddr,
    /// The operator's web token (at least 16 characters): sees everything,
    /// may replay, delete and drain. Without one, a token is made and
    /// printed. (`--token` is NATS's, as the nats CLI spells it.)
    #[arg(long, env = "FLEET_DASHBOARD_TOKEN", hide_env_values = true)]
    pub(crate) web_token: Option<String>,
    /// A file holding the operator's web token.
    #[arg(long, env = "FLEET_DASHBOARD_TOKEN_FILE")]
    pub(crate) web_token_file: Option<PathBuf>,
    /// A tenant's web token, TENANT=FILE: sees and acts on only that
    /// tenant's tasks, dead letters and results. Repeatable.
    #[arg(long = "tenant-token", value_name = "TENANT=FILE")]
    pub(crate) tenant_tokens: Vec<String>,
}

/// How the streams are made, and one group's consumer.
#[derive(Debug, Args)]
pub(crate) struct StreamArgs {
    /// Stream replicas (3 on a cluster).
    #[arg(long, env = "FLEET_REPLICAS", default_value_t = 1)]
    pub(crate) replicas: usize,
    /// Most tasks TASKS holds; a full queue refuses new tasks.
    #[arg(long, default_value_t = StreamSettings::default().tasks_max_msgs)]
    pub(crate) tasks_max_msgs: i64,
    /// Most bytes TASKS holds (e.g. 2GiB).
    #[arg(long, value_parser = parse_bytes, default_value = "2GiB")]
    pub(crate) tasks_max_bytes: i64,
    /// How long RESULTS keeps a result.
    #[arg(long, default_value_t = contract::DEFAULT_RESULTS_MAX_AGE.into())]
    pub(crate) results_max_age: Duration,
    /// Most bytes RESULTS holds; the oldest results go first.
    #[arg(long, value_parser = parse_bytes, default_value = "2GiB")]
    pub(crate) results_max_bytes: i64,
    /// How long DEAD keeps a dead letter.
    #[arg(long, default_value_t = StreamSettings::default().dead_max_age.into())]
    pub(crate) dead_max_age: Duration,
    /// Most bytes DEAD holds; the oldest letters go first.
    #[arg(long, value_parser = parse_bytes, default_value = "512MiB")]
    pub(crate) dead_max_bytes: i64,
}

/// A group's consumer.
#[derive(Debug, Args)]
pub(crate) struct GroupArgs {
    /// The group (durable consumer).
    #[arg(long, env = "FLEET_GROUP", default_value = contract::DEFAULT_GROUP)]
    pub(crate) group: String,
    /// Kinds the group takes, comma-separated (`image.>` works); default all.
    #[arg(long, env = "FLEET_KINDS", value_delimiter = ',')]
    pub(crate) kinds: Vec<String>,
    /// How long the server waits for an ack before handing a task to another node.
    #[arg(long, env = "FLEET_ACK_WAIT", default_value_t = contract::DEFAULT_ACK_WAIT.into())]
    pub(crate) ack_wait: Duration,
    /// Cap on tasks in flight across the group (at least nodes x concurrency).
    #[arg(long, default_value_t = contract::DEFAULT_MAX_ACK_PENDING)]
    pub(crate) max_ack_pending: i64,
    /// Make the group with this ADR-42 priority group, policy overflow: an
    /// edge site's group that central nodes back up (`fleet node --overflow`).
    #[arg(long, value_name = "NAME")]
    pub(crate) priority_group: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct SetupArgs {
    #[command(flatten)]
    pub(crate) streams: StreamArgs,
    #[command(flatten)]
    pub(crate) group: GroupArgs,
    /// Make room for this tenant's delayed tasks and schedules (its stream
    /// SCHEDULES_<tenant>, sourced by TASKS); repeatable. Tenants set up
    /// before are kept.
    #[arg(long = "tenant", value_name = "TENANT")]
    pub(crate) tenants: Vec<String>,
    /// Print what was done as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Parses a size such as `512MiB`, `2GB` or `1048576`.
pub(crate) fn parse_bytes(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 512MiB"))?;
    let factor: i64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1000 * 1000,
        "mib" => 1 << 20,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => 1 << 30,
        "t" | "tb" => 1000 * 1000 * 1000 * 1000,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?}: use B, KiB, MiB, GiB, TiB (or KB, MB, GB, TB)"
            ))
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[derive(Debug, Args)]
pub(crate) struct NodeArgs {
    /// This node's name, shown in results (default: host name and pid).
    #[arg(long, env = "FLEET_NODE_NAME")]
    pub(crate) name: Option<String>,
    /// The group (durable consumer) this node joins, and how to make it with --create.
    #[command(flatten)]
    pub(crate) group: GroupArgs,
    /// Create the streams and the group's consumer when missing (one trusted
    /// machine; otherwise run `fleet setup` once, with admin rights).
    #[arg(long)]
    pub(crate) create: bool,
    /// How the streams are made with --create.
    #[command(flatten)]
    pub(crate) streams: StreamArgs,
    /// Handlers run at once in this process.
    #[arg(long, env = "FLEET_CONCURRENCY", default_value_t = contract::DEFAULT_CONCURRENCY)]
    pub(crate) concurrency: usize,
    /// How the slots are shared by the priority bands that have work:
    /// high,normal,low (a band with no work gives its share to the others).
    #[arg(long, env = "FLEET_PRIORITY_WEIGHTS", default_value = "6,3,1")]
    pub(crate) priority_weights: fleet::priority::Weights,
    /// Attempts before a failing task is dead-lettered.
    #[arg(long, env = "FLEET_MAX_DELIVER", default_value_t = contract::DEFAULT_MAX_DELIVER)]
    pub(crate) max_deliver: u32,
    /// First retry delay, doubled on each further attempt.
    #[arg(long, default_value_t = contract::DEFAULT_RETRY_DELAY.into())]
    pub(crate) retry_delay: Duration,
    /// Timeout of a task that names no Task-Timeout.
    #[arg(long, env = "FLEET_TASK_TIMEOUT", default_value_t = contract::DEFAULT_TASK_TIMEOUT.into())]
    pub(crate) task_timeout: Duration,
    /// Longest Task-Timeout a task may name; a longer one is refused (400).
    #[arg(long, env = "FLEET_MAX_TASK_TIMEOUT", default_value_t = contract::DEFAULT_MAX_TASK_TIMEOUT.into())]
    pub(crate) max_task_timeout: Duration,
    /// On SIGTERM or Ctrl-C, how long running tasks may finish before they are handed back.
    #[arg(long, env = "FLEET_GRACE", default_value_t = contract::DEFAULT_GRACE.into())]
    pub(crate) grace: Duration,
    /// An exec handler, KIND=COMMAND (run with sh -c; payload on stdin, result on stdout). Repeatable.
    #[arg(long = "exec", value_name = "KIND=COMMAND")]
    pub(crate) exec: Vec<String>,
    /// A TOML file of exec handlers: [kind] command = "...", timeout = "30s".
    #[arg(long, env = "FLEET_HANDLERS")]
    pub(crate) handlers: Option<PathBuf>,
    /// A variable of this node's environment exec handlers may see (on top
    /// of PATH, HOME, LANG, LC_ALL, TZ, TMPDIR). Repeatable.
    #[arg(long = "exec-env", value_name = "NAME")]
    pub(crate) exec_env: Vec<String>,
    /// Do not register the built-in kinds (echo, sha256).
    #[arg(long)]
    pub(crate) no_builtins: bool,
    /// Also register the development kinds `sleep` and `fail` (never on a
    /// node others submit to: `sleep` holds a slot as long as a task asks).
    #[arg(long, env = "FLEET_DEV_BUILTINS")]
    pub(crate) dev_builtins: bool,
    /// Serve Prometheus metrics at /metrics, and /healthz and /readyz for
    /// probes, on this address (e.g. 127.0.0.1:9090). Off by default.
    #[arg(long, env = "FLEET_METRICS_ADDR", value_name = "HOST:PORT")]
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
    /// Serve the group of the edge site with this JetStream domain, through
    /// the leaf connection (`$JS.<domain>.API`); results go back as
    /// `edge.<domain>.results.…`, which the site maps into its RESULTS.
    #[arg(long, env = "FLEET_DOMAIN")]
    pub(crate) domain: Option<String>,
    /// Take tasks only while at least this many wait in the group (an
    /// overflow member of its priority group): the site's own nodes first.
    #[arg(long, env = "FLEET_OVERFLOW", value_name = "BACKLOG")]
    pub(crate) overflow: Option<u64>,
    /// Prefixes a task's Reply-To may start with. Repeatable.
    #[arg(long = "allow-reply", default_values_t = contract::DEFAULT_ALLOWED_REPLY_PREFIXES.iter().map(|s| s.to_string()))]
    pub(crate) allow_reply: Vec<String>,
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
    /// Create the streams when there are none (one trusted machine).
    #[arg(long)]
    pub(crate) create: bool,
    /// Run the tasks this long from now (e.g. 10m), to the whole second.
    #[arg(long, conflicts_with = "at")]
    pub(crate) delay: Option<Duration>,
    /// Run the tasks at this time: RFC 3339, e.g. 2026-12-01T09:00:00Z.
    #[arg(long)]
    pub(crate) at: Option<String>,
    /// With --delay or --at: print the task ids once every task is
    /// scheduled, and exit (collect them later with `fleet results`).
    #[arg(long)]
    pub(crate) no_wait: bool,
    /// On a tenant's connection, with --delay, --at or --unique: the
    /// tenant's name, as the server maps its subjects (tenant.NAME.…); its
    /// schedules fire into its own space, its unique keys are its own.
    #[arg(long, env = "FLEET_TENANT")]
    pub(crate) tenant: Option<String>,
    #[command(flatten)]
    pub(crate) control: crate::control::SubmitControlArgs,
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
    /// Remove dead letters from DEAD for good.
    Delete {
        /// Only this kind.
        #[arg(long)]
        kind: Option<String>,
        /// Only these tasks (task ids or DEAD sequences); default all of the kind.
        #[arg(required_unless_present = "kind")]
        ids: Vec<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_bytes("1048576"), Ok(1_048_576));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("5XB").is_err());
        assert!(parse_bytes("99999999999TiB").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
