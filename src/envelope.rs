//! The task envelope: what a handler receives, and how a delivered message
//! becomes one (kind, id, reply subject, timeout; each checked by
//! [`crate::check`]).
//!
//! Every parser here is total: bad input becomes a [`TaskError`] with code
//! 400, never a panic (the tests below fuzz them).

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use tokio::time::Instant;

use crate::check::{check_reply_subject, check_task_id, parse_timeout};
use crate::contract::{self, header};
use crate::control::TaskControl;
use crate::error::{FailureKind, TaskError};
use crate::priority::{split_band, Priority};

/// One task, as a handler sees it.
#[derive(Debug, Clone)]
pub struct Task {
    /// The submitter's `Task-Id`, or the task's `TASKS` stream sequence.
    pub id: String,
    /// The kind: the subject after `tasks.`.
    pub kind: String,
    /// The tenant whose task this is (the fleet account's own: `None`), as
    /// the server's import put it under `tenant.<name>.`.
    pub tenant: Option<String>,
    /// Which delivery this is, 1 for the first.
    pub attempt: u32,
    /// When this attempt is cancelled.
    pub deadline: Instant,
    /// The payload, unchanged.
    pub payload: Bytes,
    /// The task's headers, as published (shared, not copied, per task).
    pub headers: Arc<HeaderMap>,
}

/// What the server's delivery says about a task: which attempt, which
/// stream sequence (read from the ack subject by async-nats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivery {
    /// Which delivery this is, 1 for the first.
    pub(crate) attempt: u32,
    /// Sequence of the task in the `TASKS` stream.
    pub(crate) stream_seq: u64,
    /// When the server stored the task, in nanoseconds since 1970.
    pub(crate) stored_ns: i128,
}

/// Where a delivered task came from: its tenant and its kind, both read
/// from the subject the server stored it under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Route<'a> {
    /// `alice` for `tenant.alice.tasks.echo`; `None` for `tasks.echo`.
    pub(crate) tenant: Option<&'a str>,
    /// `echo`; empty when the subject is not a task subject.
    pub(crate) kind: &'a str,
    /// The band of the subject (`tasks-high.echo`: high).
    pub(crate) band: Priority,
}

/// The tenant and kind of a task stored under `subject`.
pub(crate) fn route(subject: &str) -> Route<'_> {
    let (tenant, rest) = contract::split_tenant(subject);
    let (band, kind) = split_band(rest).unwrap_or((Priority::Normal, ""));
    Route { tenant, kind, band }
}

/// What a node lets a task ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Timeout of a task that names none.
    pub(crate) default_timeout: Duration,
    /// Longest `Task-Timeout` accepted.
    pub(crate) max_timeout: Duration,
    /// Prefixes a `Reply-To` must start with.
    pub(crate) allowed_replies: Vec<String>,
}

/// Total size of a header block as names plus values.
pub(crate) fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, values)| {
            values
                .iter()
                .map(|v| AsRef::<str>::as_ref(name).len() + v.as_str().len() + 4)
                .sum::<usize>()
        })
        .sum()
}

/// The parts of a task that decide where its result goes, read before anything
/// that may fail so even a malformed task can be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Envelope {
    /// Task id (see [`Task::id`]), unique within its tenant.
    pub(crate) id: String,
    /// Where the result goes, as the task's tenant sees it.
    pub(crate) reply: String,
    /// The per-attempt timeout.
    pub(crate) timeout: Duration,
    /// The task's tenant, from its subject.
    pub(crate) tenant: Option<String>,
    /// Deadline, result TTL, unique key ([`crate::control`]).
    pub(crate) control: TaskControl,
}

impl Envelope {
    /// Reads id, reply subject and timeout from the headers of a task of
    /// `tenant` stored at `stream_seq`.
    ///
    /// # Errors
    /// When a header is malformed or asks for more than `limits` allow, the
    /// error is returned together with an envelope whose id and reply are
    /// safe to answer on (`results.<id>` in the task's tenant).
    pub(crate) fn read(
        headers: Option<&HeaderMap>,
        tenant: Option<&str>,
        stream_seq: u64,
        limits: &Limits,
    ) -> Result<Envelope, Box<(Envelope, TaskError)>> {
        // An oversized header block is refused before any of it is read.
        let oversized = headers.is_some_and(|h| header_bytes(h) > contract::MAX_HEADER_BYTES);
        let named = headers
            .filter(|_| !oversized)
            .and_then(|h| header::get(h, header::TASK_ID));
        // The id is formatted once: the submitter's own when it names a
        // valid one. The default reply is made from the final id, and only
        // when no `Reply-To` replaced it (below).
        let id = match named {
            Some(id) if check_task_id(id).is_ok() => id.to_string(),
            _ => stream_seq.to_string(),
        };
        let mut envelope = Envelope {
            reply: String::new(),
            id,
            timeout: limits.default_timeout,
            tenant: tenant.map(str::to_string),
            control: TaskControl::default(),
        };
        let Some(headers) = headers else {
            envelope.reply = contract::default_reply(&envelope.id);
            return Ok(envelope);
        };
        let applied = if oversized {
            Err(TaskError::reject(format!(
                "headers larger than {} bytes",
                contract::MAX_HEADER_BYTES
            )))
        } else {
            envelope.apply(headers, limits)
        };
        // Also when the task was refused: its error result goes there.
        if envelope.reply.is_empty() {
            envelope.reply = contract::default_reply(&envelope.id);
        }
        match applied {
            Ok(()) => Ok(envelope),
            Err(err) => Err(Box::new((envelope, err))),
        }
    }

    fn apply(&mut self, headers: &HeaderMap, limits: &Limits) -> Result<(), TaskError> {
        let get = |name| header::get(headers, name);
        if let Some(id) = get(header::TASK_ID) {
            // `read` took it when valid: another id here means it was not.
            if id != self.id {
                check_task_id(id)?;
            }
        } else if let Some(id) = crate::schedule::occurrence::task_id(headers) {
            // An occurrence of a recurring schedule: `sched.<name>.<seq>`.
            check_task_id(&id)?;
            self.id = id;
        }
        self.control.read(headers)?;
        if let Some(priority) = get(header::TASK_PRIORITY) {
            // Only checked here: the subject decides the band, and a normal
            // task asking for another was moved there before it got here.
            priority
                .parse::<Priority>()
                .map_err(|e| TaskError::reject(format!("{}: {e}", header::TASK_PRIORITY)))?;
        }
        if let Some(timeout) = get(header::TASK_TIMEOUT) {
            let timeout = parse_timeout(timeout)?;
            if timeout > limits.max_timeout {
                return Err(TaskError::reject(format!(
                    "{} {} is longer than this node allows ({}, --max-task-timeout)",
                    header::TASK_TIMEOUT,
                    humantime::format_duration(timeout),
                    humantime::format_duration(limits.max_timeout)
                )));
            }
            self.timeout = timeout;
        }
        if let Some(reply) = get(header::REPLY_TO) {
            check_reply_subject(reply, &limits.allowed_replies)?;
            self.reply = reply.to_string();
        }
        Ok(())
    }

    /// The subject the result is published to in the fleet account: the
    /// reply subject inside the task's tenant.
    pub(crate) fn result_subject(&self) -> String {
        contract::in_tenant(self.tenant.as_deref(), &self.reply)
    }

    /// Whether the result subject belongs to this task alone, so a second
    /// result can be fenced off by subject sequence.
    pub(crate) fn reply_is_own(&self) -> bool {
        self.reply
            .strip_prefix(contract::RESULT_PREFIX)
            .is_some_and(|rest| rest == self.id)
    }

    /// Whether the result is kept by `RESULTS` (and so waits for its PubAck).
    pub(crate) fn reply_is_kept(&self) -> bool {
        self.reply.starts_with(contract::RESULT_PREFIX)
    }
}

/// The error a task of unknown kind ends with.
pub(crate) fn no_such_kind(kind: &str) -> TaskError {
    TaskError::new(
        FailureKind::NoSuchKind,
        format!("no handler for kind {kind:?}"),
    )
}

/// An error text as a header value: one line of printable text, at most
/// [`contract::MAX_ERROR_CHARS`] characters.
pub(crate) fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(contract::MAX_ERROR_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn allowed() -> Vec<String> {
        contract::DEFAULT_ALLOWED_REPLY_PREFIXES
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, *v);
        }
        h
    }

    const MINUTE: Duration = Duration::from_secs(60);

    fn limits() -> Limits {
        Limits {
            default_timeout: MINUTE,
            max_timeout: contract::DEFAULT_MAX_TASK_TIMEOUT,
            allowed_replies: allowed(),
        }
    }

    #[test]
    fn a_task_without_headers_is_named_by_its_sequence() {
        let env = Envelope::read(None, None, 42, &limits()).unwrap();
        assert_eq!(env.id, "42");
        assert_eq!(env.reply, "results.42");
        assert_eq!(env.timeout, MINUTE);
        assert!(env.reply_is_own() && env.reply_is_kept());
    }

    #[test]
    fn task_id_names_the_result_subject() {
        let h = headers(&[("Task-Id", "batch.7")]);
        let env = Envelope::read(Some(&h), None, 1, &limits()).unwrap();
        assert_eq!(
            (env.id.as_str(), env.reply.as_str()),
            ("batch.7", "results.batch.7")
        );
    }

    #[test]
    fn an_occurrence_of_a_schedule_is_named_by_its_firing() {
        let h = headers(&[
            ("Task-Schedule", "tick"),
            ("Nats-Stream-Source", "SCHEDULES 9 due.> tasks.> due.echo x"),
        ]);
        let env = Envelope::read(Some(&h), None, 3, &limits()).unwrap();
        assert_eq!(
            (env.id.as_str(), env.reply.as_str()),
            ("sched.tick.9", "results.sched.tick.9")
        );
        assert!(env.reply_is_own());
        let bad = headers(&[
            ("Task-Schedule", "a b"),
            ("Nats-Stream-Source", "SCHEDULES 9 due.> tasks.>"),
        ]);
        let (env, err) = *Envelope::read(Some(&bad), None, 3, &limits()).unwrap_err();
        assert_eq!((err.code(), env.reply.as_str()), (400, "results.3"));
    }

    #[test]
    fn a_shared_reply_subject_is_not_own() {
        let h = headers(&[("Task-Id", "a"), ("Reply-To", "results.demo")]);
        let env = Envelope::read(Some(&h), None, 1, &limits()).unwrap();
        assert!(!env.reply_is_own() && env.reply_is_kept());
        let h = headers(&[("Reply-To", "_INBOX.abc.1")]);
        let env = Envelope::read(Some(&h), None, 1, &limits()).unwrap();
        assert!(!env.reply_is_own() && !env.reply_is_kept());
    }

    #[test]
    fn bad_headers_still_leave_a_safe_answer_subject() {
        for (name, value) in [
            ("Task-Timeout", "forever"),
            ("Task-Timeout", "0s"),
            ("Task-Timeout", "25h"),
            ("Task-Timeout", "2h"),
            ("Reply-To", "$JS.API.STREAM.DELETE.TASKS"),
            ("Reply-To", "results.>"),
            ("Reply-To", "elsewhere.x"),
            ("Reply-To", "results..x"),
            ("Task-Id", "a b"),
            ("Task-Id", "*"),
        ] {
            let h = headers(&[(name, value)]);
            let (env, err) = *Envelope::read(Some(&h), None, 9, &limits()).unwrap_err();
            assert_eq!(err.code(), 400, "{name}: {value}");
            assert_eq!(env.tenant, None);
            assert!(!err.is_retryable());
            assert!(
                env.reply.starts_with("results."),
                "{name}: {value}: {}",
                env.reply
            );
            assert!(!env.reply.contains(['*', '>', ' ']), "{}", env.reply);
        }
    }

    #[test]
    fn a_tenant_task_answers_inside_its_tenant_whatever_it_names() {
        for (headers, result) in [
            (vec![], "tenant.alice.results.3"),
            (
                vec![("Task-Id", "bob-batch.1")],
                "tenant.alice.results.bob-batch.1",
            ),
            (
                vec![("Reply-To", "results.bob-batch.2")],
                "tenant.alice.results.bob-batch.2",
            ),
            (
                vec![("Reply-To", "_INBOX.bob.1")],
                "tenant.alice._INBOX.bob.1",
            ),
        ] {
            let h = headers.iter().fold(HeaderMap::new(), |mut h, (k, v)| {
                h.insert(*k, *v);
                h
            });
            let env = Envelope::read(Some(&h), Some("alice"), 3, &limits()).unwrap();
            assert_eq!(env.result_subject(), result);
        }
        let h = headers(&[("Reply-To", "tenant.bob.results.x")]);
        let (env, err) = *Envelope::read(Some(&h), Some("alice"), 4, &limits()).unwrap_err();
        assert_eq!(err.code(), 400);
        assert_eq!(env.result_subject(), "tenant.alice.results.4");
    }

    #[test]
    fn routes_come_from_the_stored_subject() {
        assert_eq!(
            route("tenant.alice.tasks.image.resize"),
            Route {
                tenant: Some("alice"),
                kind: "image.resize",
                band: Priority::Normal,
            }
        );
        assert_eq!(
            route("tasks.echo"),
            Route {
                tenant: None,
                kind: "echo",
                band: Priority::Normal,
            }
        );
        let high = route("tenant.bob.tasks-high.image.resize");
        assert_eq!(
            (high.tenant, high.kind, high.band),
            (Some("bob"), "image.resize", Priority::High)
        );
        assert_eq!(route("tasks-low.echo").band, Priority::Low);
        assert_eq!(route("tenant.alice.other.x").kind, "");
    }

    #[test]
    fn a_timeout_over_the_nodes_limit_is_refused() {
        let h = headers(&[("Task-Timeout", "24h")]);
        let (_, err) = *Envelope::read(Some(&h), None, 1, &limits()).unwrap_err();
        assert!(err.message().contains("--max-task-timeout"), "{err}");
        let h = headers(&[("Task-Timeout", "59m")]);
        assert!(Envelope::read(Some(&h), None, 1, &limits()).is_ok());
    }

    #[test]
    fn a_priority_that_is_not_a_band_is_refused() {
        let h = headers(&[("Task-Priority", "urgent")]);
        let (_, err) = *Envelope::read(Some(&h), None, 1, &limits()).unwrap_err();
        assert_eq!(err.code(), 400);
        let h = headers(&[("Task-Priority", "high")]);
        assert!(Envelope::read(Some(&h), None, 1, &limits()).is_ok());
    }

    #[test]
    fn huge_header_blocks_are_refused() {
        let big = "x".repeat(contract::MAX_HEADER_BYTES);
        let h = headers(&[("Pad", &big)]);
        let (_, err) = *Envelope::read(Some(&h), None, 1, &limits()).unwrap_err();
        assert!(err.message().contains("headers larger"), "{err}");
    }

    #[test]
    fn kinds_come_from_the_subject() {
        assert_eq!(route("tasks.image.resize").kind, "image.resize");
        assert_eq!(route("tasks.").kind, "");
        assert_eq!(route("other.echo").kind, "");
        assert_eq!(route("tasks-high.echo").kind, "echo");
        assert_eq!(route("tasks-low.").kind, "");
        assert_eq!(no_such_kind("x").kind(), FailureKind::NoSuchKind);
    }

    #[test]
    fn one_line_flattens_and_bounds_error_text() {
        assert_eq!(one_line("a\nb\tc"), "a b c");
        assert_eq!(
            one_line(&"é".repeat(5000)).chars().count(),
            contract::MAX_ERROR_CHARS
        );
    }

    proptest! {
        #[test]
        fn route_never_panics(s in "\\PC{0,300}") {
            let _ = route(&s);
        }

        #[test]
        fn envelope_never_panics_on_any_headers(id in "\\PC{0,40}", timeout in "\\PC{0,20}", reply in "\\PC{0,40}") {
            let mut h = HeaderMap::new();
            for (name, value) in [("Task-Id", &id), ("Task-Timeout", &timeout), ("Reply-To", &reply)] {
                if !value.contains(['\r', '\n']) {
                    h.insert(name, value.as_str());
                }
            }
            match Envelope::read(Some(&h), None, 5, &limits()) {
                Ok(env) => prop_assert!(env.reply.starts_with("results.") || env.reply.starts_with("_INBOX.")),
                Err(boxed) => prop_assert!(boxed.0.reply.starts_with("results.")),
            }
        }
    }
}
