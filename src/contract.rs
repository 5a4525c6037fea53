//! The wire contract in one screen: every subject, stream, header name and
//! default that fleet and its submitters agree on.
//!
//! Nothing here imports the rest of the crate. Changing a name here changes
//! it everywhere; changing it at all breaks compatibility with deployed nodes.

use std::time::Duration;

/// Prefix of task subjects: a task of kind `image.resize` is published to
/// `tasks.image.resize`.
pub const TASK_PREFIX: &str = "tasks.";
/// Prefix under which results are kept by the `RESULTS` stream.
pub const RESULT_PREFIX: &str = "results.";
/// Prefix of dead letters: a task of kind `k` that used up its attempts is
/// copied to `dead.k`.
pub const DEAD_PREFIX: &str = "dead.";

/// The work queue: WorkQueue retention, file storage.
pub const TASKS_STREAM: &str = "TASKS";
/// Results kept for submitters that were away: limits retention with a max age.
pub const RESULTS_STREAM: &str = "RESULTS";
/// Tasks that used up their attempts.
pub const DEAD_STREAM: &str = "DEAD";

/// The durable consumer shared by the nodes of one group.
pub const DEFAULT_GROUP: &str = "workers";

/// Subject for the result; when absent, `results.<task-id>`.
pub const HDR_REPLY_TO: &str = "Reply-To";
/// The submitter's own id for a task; when absent, the stream sequence.
pub const HDR_TASK_ID: &str = "Task-Id";
/// Per-task deadline, a duration such as `30s` or `250ms`.
pub const HDR_TASK_TIMEOUT: &str = "Task-Timeout";
/// On results: the name of the node that ran the task.
pub const HDR_TASK_NODE: &str = "Task-Node";
/// On results: which delivery of the task produced it (1 for the first).
pub const HDR_TASK_ATTEMPT: &str = "Task-Attempt";
/// On dead letters: the task's kind.
pub const HDR_TASK_KIND: &str = "Task-Kind";
/// On dead letters: the `TASKS` stream sequence the task had.
pub const HDR_TASK_SEQ: &str = "Task-Seq";
/// NATS micro convention: the error text of a failed task.
pub const HDR_SERVICE_ERROR: &str = "Nats-Service-Error";
/// NATS micro convention: the status code of a failed task.
pub const HDR_SERVICE_ERROR_CODE: &str = "Nats-Service-Error-Code";
/// JetStream de-duplication id.
pub const HDR_MSG_ID: &str = "Nats-Msg-Id";

/// Reply subjects a task may name, unless the operator configures others.
pub const DEFAULT_ALLOWED_REPLY_PREFIXES: &[&str] = &["results.", "_INBOX."];

/// How long JetStream remembers `Nats-Msg-Id`s of tasks and results.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// How long results are kept in `RESULTS`.
pub const DEFAULT_RESULTS_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a task may run when it names no `Task-Timeout`.
pub const DEFAULT_TASK_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// How long the server waits for an ack before handing a task to another node.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
/// How many times a task is tried before it is dead-lettered.
pub const DEFAULT_MAX_DELIVER: u32 = 5;
/// Deliveries beyond the attempt limit a task may have when none of them
/// failed in its handler (its nodes died or stopped while running it),
/// before it is dead-lettered as a poison task.
pub const UNFINISHED_ALLOWANCE: u32 = 5;
/// First retry delay; doubled on each further attempt.
pub const RETRY_BASE_DELAY: Duration = Duration::from_millis(500);
/// Upper bound of the retry delay.
pub const RETRY_MAX_DELAY: Duration = Duration::from_secs(60);
/// Upper bound of the tasks in flight across all nodes of a group.
pub const DEFAULT_MAX_ACK_PENDING: i64 = 20_000;
/// Largest header block a node accepts on a task (names and values).
pub const MAX_HEADER_BYTES: usize = 8 * 1024;

/// Status codes carried by `Nats-Service-Error-Code`.
pub mod code {
    /// The task itself is wrong: a malformed header, a forbidden reply subject.
    pub const BAD_INPUT: u16 = 400;
    /// No handler for the task's kind.
    pub const NO_SUCH_KIND: u16 = 404;
    /// The task ran past its deadline.
    pub const TIMED_OUT: u16 = 408;
    /// The result is larger than the server accepts.
    pub const TOO_LARGE: u16 = 413;
    /// The handler failed.
    pub const HANDLER_FAILED: u16 = 500;
}

/// The subject a task of `kind` is published to.
pub fn task_subject(kind: &str) -> String {
    format!("{TASK_PREFIX}{kind}")
}

/// The subject a result goes to when the task names no `Reply-To`.
pub fn default_reply(task_id: &str) -> String {
    format!("{RESULT_PREFIX}{task_id}")
}

/// The subject a dead letter of `kind` is kept under.
pub fn dead_subject(kind: &str) -> String {
    format!("{DEAD_PREFIX}{kind}")
}
