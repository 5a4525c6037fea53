//! The wire contract in one screen: every subject, stream, header name,
//! status code, limit and default that fleet, its submitters and its tests
//! agree on.
//!
//! Nothing here imports the rest of the crate. Changing a name here changes
//! it everywhere; changing it at all breaks compatibility with deployed nodes.

use std::time::Duration;

/// Prefix of task subjects: a task of kind `image.resize` is published to
/// `tasks.image.resize`.
pub const TASK_PREFIX: &str = "tasks.";
/// Prefix under which results are kept by the `RESULTS` stream.
pub const RESULT_PREFIX: &str = "results.";
/// Prefix of dead letters: a task of kind `k` that failed for good is copied
/// to `dead.k`.
pub const DEAD_PREFIX: &str = "dead.";

/// Prefix of a tenant's space in the fleet account. A tenant account's
/// users publish `tasks.<kind>` and read `results.…` as everyone does; the
/// server's imports and exports map each subject `S` of tenant `t` to
/// `tenant.<t>.S` in the fleet account, so the tenant of a task is the second
/// token of the subject the server put it under, never something it says.
pub const TENANT_PREFIX: &str = "tenant.";

/// Prefixes of the high and low priority bands' task subjects: a `high`
/// task of kind `echo` is published to `tasks-high.echo`, a `low` one to
/// `tasks-low.echo`; `tasks.echo` is the normal band. A band is a prefix,
/// never a suffix: kinds have several tokens and groups filter `image.>`.
/// Outside `tasks.>`, so that no band's consumer filter overlaps another's
/// on the work queue.
pub const TASK_HIGH_PREFIX: &str = "tasks-high.";
/// Prefix of the low band's task subjects (see [`TASK_HIGH_PREFIX`]).
pub const TASK_LOW_PREFIX: &str = "tasks-low.";
/// Prefixes a high and a low schedule fire into (`due-high.<kind>`),
/// which `TASKS` takes in as that band's task subject.
pub const DUE_HIGH_PREFIX: &str = "due-high.";
/// See [`DUE_HIGH_PREFIX`].
pub const DUE_LOW_PREFIX: &str = "due-low.";

/// Prefix of schedules, kept by the `SCHEDULES` stream: `sched.task.<id>`
/// holds one delayed task until its time, `sched.cron.<name>` a recurring
/// schedule. Nothing consumes them; the server fires each (ADR-51).
pub const SCHEDULE_PREFIX: &str = "sched.";
/// Prefix a schedule fires into: `due.<kind>` in `SCHEDULES`, which `TASKS`
/// sources as `tasks.<kind>` (a schedule's target must be a subject of its
/// own stream, and no consumer may ever cover a schedule on a work queue).
pub const DUE_PREFIX: &str = "due.";
/// Prefix of what a central node writes back to an edge site: a site's
/// result `results.<id>` is published as `edge.<domain>.results.<id>` on the
/// central side, and the site server's account mapping turns it back into
/// `results.<id>` in the site's own `RESULTS` (`deploy/edge/site.conf`), so
/// it never lands in the central streams.
pub const EDGE_PREFIX: &str = "edge.";

/// The work queue: WorkQueue retention, file storage.
pub const TASKS_STREAM: &str = "TASKS";
/// Results kept for submitters that were away: limits retention, a max age.
pub const RESULTS_STREAM: &str = "RESULTS";
/// Tasks that failed for good.
pub const DEAD_STREAM: &str = "DEAD";
/// Delayed tasks and recurring schedules, held by the server until they
/// fire into `due.<kind>`; limits retention.
pub const SCHEDULES_STREAM: &str = "SCHEDULES";
/// A tenant's schedules are kept in a stream of its own,
/// `SCHEDULES_<tenant>`, whose subjects are only that tenant's
/// (`tenant.<t>.sched.>`, `tenant.<t>.due.>`): the server refuses a
/// `Nats-Schedule-Target` outside the schedule's own stream, so a tenant's
/// schedule can fire into its own space and nowhere else.
pub const TENANT_SCHEDULES_PREFIX: &str = "SCHEDULES_";
/// Key-value bucket of cancel marks, watched by every node: key
/// `task.<id>` cancels one task, `batch.<name>` every task of a batch.
pub const CANCEL_BUCKET: &str = "fleet-cancel";
/// Key-value bucket of unique keys taken: key `<kind>.<unique key>`, value
/// the id of the task holding it.
pub const UNIQUE_BUCKET: &str = "fleet-unique";
/// Key-value bucket of limits, written by the admin (`fleet limit set`) and
/// watched by every node: key `<kind>`, value the limit as JSON
/// (`{"concurrency":3,"rate":"20/s"}`).
pub const LIMITS_BUCKET: &str = "fleet-limits";
/// Key-value bucket of the permits and rate states nodes take before a
/// limited task starts (leases with a `Nats-TTL`; see `limit::names`).
pub const PERMITS_BUCKET: &str = "fleet-permits";

/// The name every node registers under for NATS service discovery
/// (`nats micro ls fleet`).
pub const SERVICE_NAME: &str = "fleet";
/// Prefix of a node's control subjects: `fleet.control.<instance id>.drain`
/// asks that node to drain and stop.
pub const CONTROL_PREFIX: &str = "fleet.control.";

/// The durable consumer shared by the nodes of one group.
pub const DEFAULT_GROUP: &str = "workers";

pub mod header;

/// Status codes carried by `Nats-Service-Error-Code`. Which failure has which
/// code, and whether it is retried, is [`crate::FailureKind`]'s to say.
pub mod code {
    /// The task itself is wrong: a malformed header, a forbidden reply subject.
    pub const BAD_INPUT: u16 = 400;
    /// No handler for the task's kind.
    pub const NO_SUCH_KIND: u16 = 404;
    /// The task ran past its deadline, or no result came in time.
    pub const TIMED_OUT: u16 = 408;
    /// The result is larger than the server accepts.
    pub const TOO_LARGE: u16 = 413;
    /// A unique task refused at submit time: another task holds its key
    /// (the submitter's own verdict; nothing was published).
    pub const UNIQUE_HELD: u16 = 409;
    /// The task was cancelled (`fleet cancel`) before or while it ran.
    pub const CANCELLED: u16 = 499;
    /// The handler failed, or the task never finished.
    pub const HANDLER_FAILED: u16 = 500;
    /// The task was never stored by JetStream (the submitter's own verdict).
    pub const NOT_SUBMITTED: u16 = 503;
}

/// The de-duplication ids fleet writes (`Nats-Msg-Id`). Those a node writes
/// name the task by its `TASKS` sequence *and* the nanosecond the server
/// stored it, which no one can know before the task exists: an id published
/// ahead of time cannot squat a genuine result or dead letter.
pub mod msg_id {
    /// Prefix of a result's id on a shared reply subject.
    pub const RESULT: &str = "result-";
    /// Prefix of a dead letter's id.
    pub const DEAD: &str = "dead-";
    /// Prefix of a replayed dead letter's id: `replay-<DEAD seq>`.
    pub const REPLAY: &str = "replay-";

    /// `result-<seq>-<stored ns>`.
    pub fn result(seq: u64, stored_ns: i128) -> String {
        format!("{RESULT}{seq}-{stored_ns}")
    }

    /// `dead-<seq>-<stored ns>`.
    pub fn dead(seq: u64, stored_ns: i128) -> String {
        format!("{DEAD}{seq}-{stored_ns}")
    }
}

/// The JetStream API subjects fleet uses without a client helper.
pub mod api {
    /// The subject a pull request for `consumer` of `stream` is sent to.
    pub fn consumer_next(stream: &str, consumer: &str) -> String {
        consumer_next_in(None, stream, consumer)
    }

    /// The JetStream API prefix of `domain` (`$JS.<domain>.API`), or of the
    /// server the client is connected to (`$JS.API`).
    pub fn prefix(domain: Option<&str>) -> String {
        match domain {
            Some(domain) => format!("$JS.{domain}.API"),
            None => "$JS.API".to_string(),
        }
    }

    /// [`consumer_next`] through the API of JetStream domain `domain`.
    pub fn consumer_next_in(domain: Option<&str>, stream: &str, consumer: &str) -> String {
        format!("{}.CONSUMER.MSG.NEXT.{stream}.{consumer}", prefix(domain))
    }

    /// The direct get (ADR-31) of `stream`: `$JS.API.DIRECT.GET.<stream>`,
    /// followed by `.<subject>` for the last message on one subject.
    pub fn direct_get(stream: &str) -> String {
        format!("{}.DIRECT.GET.{stream}", prefix(None))
    }

    /// The advisory the server sends when `consumer` of `stream` is paused
    /// or resumed (by hand or at its time).
    pub fn consumer_pause_advisory(stream: &str, consumer: &str) -> String {
        format!("$JS.EVENT.ADVISORY.CONSUMER.PAUSE.{stream}.{consumer}")
    }

    /// The body of a pull request: up to `batch` messages, the request
    /// ending after `expires`; on a consumer with a priority group (ADR-42)
    /// the group, and for an overflow puller the backlog it waits for.
    #[derive(Debug, Clone, Copy, Default, serde::Serialize)]
    pub struct PullRequest<'a> {
        /// Messages asked for.
        pub batch: usize,
        /// How long the server keeps the request open, in nanoseconds.
        #[serde(serialize_with = "nanos")]
        pub expires: std::time::Duration,
        /// The consumer's priority group (required when it has one).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub group: Option<&'a str>,
        /// Overflow: serve this request only while at least this many
        /// messages wait undelivered.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub min_pending: Option<u64>,
    }

    fn nanos<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_nanos().min(u64::MAX as u128) as u64)
    }
}

/// What `fleet node` writes to its log (standard error) once it is bound to
/// its group's consumer and pulling: tests, `bin/dev` and the benchmark wait
/// for this text.
pub const READY_SIGNAL: &str = "node ready";

/// Reply subjects a task may name, unless the operator configures others.
pub const DEFAULT_ALLOWED_REPLY_PREFIXES: &[&str] = &["results.", "_INBOX."];

/// Longest task id (`Task-Id`), in bytes.
pub const MAX_TASK_ID_BYTES: usize = 128;
/// Longest reply subject (`Reply-To`), in bytes.
pub const MAX_REPLY_BYTES: usize = 256;
/// Largest header block a node accepts on a task (names and values).
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// Longest `Task-Timeout` any node accepts.
pub const MAX_TASK_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// Longest `Task-Timeout` a node accepts unless its operator allows more.
pub const DEFAULT_MAX_TASK_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// How often a client pings its server. Two pings unanswered and it drops
/// the connection and moves to another server of its list: a dead link or
/// an isolated server is left within about three intervals (async-nats
/// alone pings once a minute: three minutes on a server nobody can reach).
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(10);
/// Longest error text carried in `Nats-Service-Error`, in characters.
pub const MAX_ERROR_CHARS: usize = 1024;

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
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_millis(500);
/// Upper bound of the retry delay.
pub const RETRY_MAX_DELAY: Duration = Duration::from_secs(60);
/// Upper bound of the tasks in flight across all nodes of a group.
pub const DEFAULT_MAX_ACK_PENDING: i64 = 20_000;
/// Handlers a node runs at once.
pub const DEFAULT_CONCURRENCY: usize = 64;
/// How long a stopping node lets running tasks finish.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// Tasks a submitter keeps in flight.
pub const DEFAULT_WINDOW: usize = 256;
/// How long a submitter waits for one task's result.
pub const DEFAULT_RESULT_TIMEOUT: Duration = Duration::from_secs(60);

/// `subject` in `tenant`'s space of the fleet account (itself without one).
pub fn in_tenant(tenant: Option<&str>, subject: &str) -> String {
    match tenant {
        Some(t) => format!("{TENANT_PREFIX}{t}.{subject}"),
        None => subject.to_string(),
    }
}

/// Whether `name` can be one token of the subjects and stream names fleet
/// builds from it (a tenant, a schedule, a JetStream domain): 1 to `max`
/// bytes of ASCII letters, digits, `-` and `_`.
pub fn is_name_token(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Splits a fleet-account subject into its tenant (if under
/// `tenant.<t>.`) and the subject as the tenant sees it.
pub fn split_tenant(subject: &str) -> (Option<&str>, &str) {
    match subject
        .strip_prefix(TENANT_PREFIX)
        .and_then(|rest| rest.split_once('.'))
    {
        Some((tenant, rest)) if !tenant.is_empty() && !rest.is_empty() => (Some(tenant), rest),
        _ => (None, subject),
    }
}

/// The subjects a stream under `prefix` (`tasks.`) captures: the fleet
/// account's own and every tenant's.
pub fn stream_subjects(prefix: &str) -> Vec<String> {
    vec![format!("{prefix}>"), format!("{TENANT_PREFIX}*.{prefix}>")]
}

/// The subject a task of `kind` is published to.
pub fn task_subject(kind: &str) -> String {
    format!("{TASK_PREFIX}{kind}")
}

/// The subject a result goes to when the task names no `Reply-To`.
pub fn default_reply(task_id: &str) -> String {
    // Not `format!`: this runs once per task on a node.
    concat(&[Part::Text(RESULT_PREFIX), Part::Text(task_id)])
}

/// The subject a dead letter of `kind` is kept under.
pub fn dead_subject(kind: &str) -> String {
    format!("{DEAD_PREFIX}{kind}")
}

/// Where a central node writes `subject` (a result or a dead letter) of a
/// task it took from edge site `domain`: `edge.<domain>.<subject>`.
pub fn edge_subject(domain: &str, subject: &str) -> String {
    format!("{EDGE_PREFIX}{domain}.{subject}")
}

/// The schedule subject holding a delayed task until its time.
pub fn delayed_subject(task_id: &str) -> String {
    format!("{SCHEDULE_PREFIX}task.{task_id}")
}

/// The schedule subject of recurring schedule `name`.
pub fn cron_subject(name: &str) -> String {
    format!("{SCHEDULE_PREFIX}cron.{name}")
}

/// The stream holding `tenant`'s schedules ([`TENANT_SCHEDULES_PREFIX`]).
pub fn tenant_schedules_stream(tenant: &str) -> String {
    format!("{TENANT_SCHEDULES_PREFIX}{tenant}")
}

/// The subject a schedule of `kind` fires into; `TASKS` takes it in as
/// [`task_subject`]`(kind)`.
pub fn due_subject(kind: &str) -> String {
    format!("{DUE_PREFIX}{kind}")
}

/// A tenant's unique key `<kind>.<key>` in its own schedule stream
/// `SCHEDULES_<tenant>`, as the tenant names it: `sched.unique.<kind>.<key>`
/// (a plain message holding the id of the task that took it; never a
/// schedule).
pub fn tenant_unique_subject(name: &str) -> String {
    format!("{SCHEDULE_PREFIX}unique.{name}")
}

/// Names a schedule may not have: `sched.<name>.` is also where a
/// schedule's occurrences are named (`sched.<name>.<seq>`), and these
/// tokens under `sched.` hold what is not a schedule (a tenant's unique
/// keys, its cancel marks).
pub const RESERVED_SCHEDULE_NAMES: [&str; 2] = ["unique", "cancel"];

/// The record of a batch of delayed tasks in `SCHEDULES` (a plain message,
/// never fired): how many tasks, of which kind, for when; what `fleet
/// results` reads to know what to expect.
pub fn batch_record_subject(batch: &str) -> String {
    format!("{SCHEDULE_PREFIX}batch.{batch}")
}

/// The task id of the occurrence of recurring schedule `name` that fired
/// as `SCHEDULES` sequence `seq`: `sched.<name>.<seq>`, its result kept at
/// `results.sched.<name>.<seq>`.
pub fn occurrence_task_id(name: &str, seq: u64) -> String {
    format!("{SCHEDULE_PREFIX}{name}.{seq}")
}

/// The cancel mark of one task in [`CANCEL_BUCKET`].
pub fn cancel_task_key(task_id: &str) -> String {
    format!("task.{task_id}")
}

/// Where a tenant writes the cancel mark `key` ([`cancel_task_key`],
/// [`cancel_batch_key`]) on its own connection: `sched.cancel.<key>`, which
/// its import puts in its own stream as `tenant.<t>.sched.cancel.<key>`.
pub fn own_cancel_subject(key: &str) -> String {
    format!("{SCHEDULE_PREFIX}cancel.{key}")
}

/// The cancel mark of every task of a batch in [`CANCEL_BUCKET`].
pub fn cancel_batch_key(batch: &str) -> String {
    format!("batch.{batch}")
}

/// The id `fleet submit` gives task `n` of `batch`: `<batch>.<n>`.
pub fn batch_task_id(batch: &str, n: u64) -> String {
    concat(&[Part::Text(batch), Part::Text("."), Part::Number(n)])
}

/// A piece of a subject or id made by [`concat`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Part<'a> {
    Text(&'a str),
    Number(u64),
}

/// `parts` joined, in one allocation of the right size and without the
/// formatting machinery of `format!`: for the subjects and ids made once
/// per task (a submitter makes three, a node one).
pub(crate) fn concat(parts: &[Part<'_>]) -> String {
    // Room for the longest number: `u64::MAX` has 20 digits.
    let len = parts
        .iter()
        .map(|p| match p {
            Part::Text(t) => t.len(),
            Part::Number(_) => 20,
        })
        .sum();
    let mut out = String::with_capacity(len);
    for part in parts {
        match part {
            Part::Text(t) => out.push_str(t),
            Part::Number(mut n) => {
                let mut buf = [0u8; 20];
                let mut at = buf.len();
                loop {
                    at -= 1;
                    buf[at] = b'0' + (n % 10) as u8;
                    n /= 10;
                    if n == 0 {
                        break;
                    }
                }
                // ASCII digits only.
                out.push_str(std::str::from_utf8(&buf[at..]).unwrap_or_default());
            }
        }
    }
    out
}

/// The task number `n` of a subject `<prefix><n>`, for subjects under one
/// batch's reply prefix.
pub fn task_number(subject: &str, prefix: &str) -> Option<u64> {
    subject.strip_prefix(prefix)?.parse().ok()
}

#[cfg(test)]
mod tests;
