//! The task envelope: what a handler receives, and the pure checks that turn
//! a delivered message into one (ack subject, headers, reply subject).
//!
//! Every parser here is total: bad input becomes a [`TaskError`] with code
//! 400, never a panic. `tests/parsing.rs` fuzzes them with proptest.

use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use tokio::time::Instant;

use crate::contract::{self, code};
use crate::error::TaskError;

/// One task, as a handler sees it.
#[derive(Debug, Clone)]
pub struct Task {
    /// The submitter's `Task-Id`, or the task's `TASKS` stream sequence.
    pub id: String,
    /// The kind: the subject after `tasks.`.
    pub kind: String,
    /// Which delivery this is, 1 for the first.
    pub attempt: u32,
    /// When this attempt is cancelled.
    pub deadline: Instant,
    /// The payload, unchanged.
    pub payload: Bytes,
    /// The task's headers, as published (shared, not copied, per task).
    pub headers: std::sync::Arc<HeaderMap>,
}

/// What the ack subject of a JetStream delivery tells about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Which delivery this is, 1 for the first.
    pub attempt: u32,
    /// Sequence of the task in the `TASKS` stream.
    pub stream_seq: u64,
}

impl Delivery {
    /// Parses `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`
    /// and the longer form with domain and account hash that newer servers send.
    pub fn parse(ack_subject: &str) -> Option<Delivery> {
        let tokens: Vec<&str> = ack_subject.split('.').collect();
        if tokens.len() < 9 || tokens[0] != "$JS" || tokens[1] != "ACK" {
            return None;
        }
        // v1 has 9 tokens; v2 inserts domain and account hash after ACK.
        let first = if tokens.len() == 9 { 4 } else { 6 };
        let attempt = tokens.get(first)?.parse().ok()?;
        let stream_seq = tokens.get(first + 1)?.parse().ok()?;
        Some(Delivery {
            attempt,
            stream_seq,
        })
    }
}

/// The kind of a task published to `subject`, or `None` outside `tasks.`.
pub fn kind_of(subject: &str) -> Option<&str> {
    subject
        .strip_prefix(contract::TASK_PREFIX)
        .filter(|kind| !kind.is_empty())
}

/// Parses a duration such as `250ms`, `30s` or `1m 30s`: positive, at most a day.
///
/// # Errors
/// A [`TaskError`] with code 400 naming the bad value.
pub fn parse_timeout(value: &str) -> Result<Duration, TaskError> {
    let parsed = humantime::parse_duration(value.trim()).map_err(|e| {
        TaskError::reject(format!(
            "bad {}: {value:?}: {e}",
            contract::HDR_TASK_TIMEOUT
        ))
    })?;
    if parsed.is_zero() || parsed > Duration::from_secs(24 * 60 * 60) {
        return Err(TaskError::reject(format!(
            "bad {}: {value:?}: must be more than 0 and at most 24h",
            contract::HDR_TASK_TIMEOUT
        )));
    }
    Ok(parsed)
}

/// Checks that `id` can name a task: subject-safe tokens, at most 128 bytes.
///
/// # Errors
/// A [`TaskError`] with code 400.
pub fn check_task_id(id: &str) -> Result<(), TaskError> {
    if id.len() > 128 {
        return Err(TaskError::reject(format!(
            "bad {}: longer than 128 bytes",
            contract::HDR_TASK_ID
        )));
    }
    check_tokens(id)
        .map_err(|why| TaskError::reject(format!("bad {} {id:?}: {why}", contract::HDR_TASK_ID)))
}

/// Checks that a result may be published to `subject`: a literal subject
/// (no wildcards, no empty tokens, no `$` system subjects) under one of the
/// `allowed` prefixes.
///
/// # Errors
/// A [`TaskError`] with code 400 saying why it was refused.
pub fn check_reply_subject(subject: &str, allowed: &[String]) -> Result<(), TaskError> {
    let refuse = |why: &str| TaskError::reject(format!("reply subject {subject:?} refused: {why}"));
    if subject.len() > 256 {
        return Err(refuse("longer than 256 bytes"));
    }
    check_tokens(subject).map_err(|why| refuse(&why))?;
    if subject.starts_with('$') {
        return Err(refuse("system subjects ($JS, $SYS, ...) are never a reply"));
    }
    if !allowed
        .iter()
        .any(|prefix| subject.starts_with(prefix.as_str()) && subject.len() > prefix.len())
    {
        return Err(refuse(&format!(
            "not under an allowed prefix ({})",
            allowed.join(", ")
        )));
    }
    Ok(())
}

fn check_tokens(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("empty".into());
    }
    for token in s.split('.') {
        if token.is_empty() {
            return Err("empty token".into());
        }
        if token == "*" || token == ">" || token.contains(['*', '>']) {
            return Err("wildcards are not allowed".into());
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("white space or control characters".into());
        }
    }
    Ok(())
}

/// Total size of a header block as names plus values.
pub fn header_bytes(headers: &HeaderMap) -> usize {
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
#[derive(Debug, Clone)]
pub struct Envelope {
    /// Task id (see [`Task::id`]).
    pub id: String,
    /// Where the result goes.
    pub reply: String,
    /// The per-attempt timeout.
    pub timeout: Duration,
}

impl Envelope {
    /// Reads id, reply subject and timeout from a task's headers.
    ///
    /// # Errors
    /// When a header is malformed, the error is returned together with an
    /// envelope whose id and reply are safe to answer on (`results.<id>`).
    pub fn read(
        headers: Option<&HeaderMap>,
        stream_seq: u64,
        default_timeout: Duration,
        allowed_replies: &[String],
    ) -> Result<Envelope, (Envelope, TaskError)> {
        let mut envelope = Envelope {
            id: stream_seq.to_string(),
            reply: contract::default_reply(&stream_seq.to_string()),
            timeout: default_timeout,
        };
        let Some(headers) = headers else {
            return Ok(envelope);
        };
        if header_bytes(headers) > contract::MAX_HEADER_BYTES {
            let err = TaskError::reject(format!(
                "headers larger than {} bytes",
                contract::MAX_HEADER_BYTES
            ));
            return Err((envelope, err));
        }
        if let Some(id) = headers.get(contract::HDR_TASK_ID) {
            if let Err(err) = check_task_id(id.as_str()) {
                return Err((envelope, err));
            }
            envelope.id = id.as_str().to_string();
            envelope.reply = contract::default_reply(&envelope.id);
        }
        if let Some(timeout) = headers.get(contract::HDR_TASK_TIMEOUT) {
            match parse_timeout(timeout.as_str()) {
                Ok(timeout) => envelope.timeout = timeout,
                Err(err) => return Err((envelope, err)),
            }
        }
        if let Some(reply) = headers.get(contract::HDR_REPLY_TO) {
            if let Err(err) = check_reply_subject(reply.as_str(), allowed_replies) {
                return Err((envelope, err));
            }
            envelope.reply = reply.as_str().to_string();
        }
        Ok(envelope)
    }

    /// Whether the result subject belongs to this task alone, so a second
    /// result can be fenced off by subject sequence.
    pub fn reply_is_own(&self) -> bool {
        self.reply
            .strip_prefix(contract::RESULT_PREFIX)
            .is_some_and(|rest| rest == self.id)
    }
}

/// The error a task of unknown kind ends with.
pub fn no_such_kind(kind: &str) -> TaskError {
    TaskError::new(
        code::NO_SUCH_KIND,
        false,
        format!("no handler for kind {kind:?}"),
    )
}
