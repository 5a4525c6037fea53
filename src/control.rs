//! What a task may say about its own life besides its timeout, and the pure
//! rules around it: a deadline (`Task-Deadline`), how long its result is
//! kept (`Result-TTL`), and a unique key (`Task-Unique`, `Task-Unique-For`).
//!
//! | header            | form                         | a node…                                           |
//! |-------------------|------------------------------|---------------------------------------------------|
//! | `Task-Deadline`   | RFC 3339 (`…Z`, `…+02:00`)   | does not start the task after it: `408 expired`   |
//! | `Result-TTL`      | whole seconds, ≥ 1s (`1h`)   | keeps the result with that `Nats-TTL`             |
//! | `Task-Unique`     | a key: `[A-Za-z0-9_=/-]`     | frees `<kind>.<key>` in `fleet-unique` at the end |
//! | `Task-Unique-For` | whole seconds, ≥ 1s          | keeps the key taken that long after the end       |
//! | `Task-Key`        | a key: `[A-Za-z0-9_=/-]`     | counts the task under that key's limits (`fleet limit`) |
//! | `Task-Catch-Up`   | whole seconds, ≥ 1s (`10m`)  | a deadline that far after it was stored (or due)  |
//!
//! A malformed value is a 400 for that task only. Every parser here is
//! total: bad input is an error, never a panic.

use std::time::{Duration, SystemTime};

use async_nats::HeaderMap;

use crate::contract::header;
use crate::error::{FailureKind, TaskError};

/// Longest `Result-TTL` or `Task-Unique-For` taken: ten years.
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// Longest unique key, in bytes.
pub const MAX_KEY_BYTES: usize = 128;
/// How long past its deadline a task stays in `TASKS` at most when
/// `fleet submit --expire-after` sets it: its `Nats-TTL` is the time to the
/// deadline plus this. Until then a node answers it with `408 expired`;
/// after it, the server drops it without a result (no node ran for an
/// hour past the deadline).
pub const DEADLINE_GRACE: Duration = Duration::from_secs(60 * 60);

/// A task's unique key, as its headers name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniqueKey {
    /// The key, unique per kind (`report-42`).
    pub key: String,
    /// How long the key stays taken after the task ends; freed at once
    /// when `None`.
    pub hold_for: Option<Duration>,
}

/// The controls a task's headers asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TaskControl {
    /// Not started after this instant.
    pub(crate) deadline: Option<SystemTime>,
    /// The kept result's time to live.
    pub(crate) result_ttl: Option<Duration>,
    /// The unique key the task holds.
    pub(crate) unique: Option<UniqueKey>,
    /// A schedule's catch-up window (`Task-Catch-Up`): counted from when
    /// the task was stored, see [`TaskControl::anchor`].
    pub(crate) catch_up: Option<Duration>,
}

impl TaskControl {
    /// Reads the control headers. The unique key is read first, so a task
    /// refused for another header still frees its key.
    ///
    /// # Errors
    /// A [`TaskError`] with code 400 naming the bad header.
    pub(crate) fn read(&mut self, headers: &HeaderMap) -> Result<(), TaskError> {
        let get = |name| header::get(headers, name);
        if let Some(key) = get(header::TASK_UNIQUE) {
            check_key(key).map_err(|why| {
                TaskError::reject(format!("bad {} {key:?}: {why}", header::TASK_UNIQUE))
            })?;
            self.unique = Some(UniqueKey {
                key: key.to_string(),
                hold_for: None,
            });
        }
        if let Some(value) = get(header::TASK_UNIQUE_FOR) {
            let hold_for = parse_ttl(header::TASK_UNIQUE_FOR, value)?;
            if let Some(unique) = &mut self.unique {
                unique.hold_for = Some(hold_for);
            }
        }
        if let Some(key) = get(header::TASK_KEY) {
            check_key(key).map_err(|why| {
                TaskError::reject(format!("bad {} {key:?}: {why}", header::TASK_KEY))
            })?;
        }
        if let Some(value) = get(header::TASK_DEADLINE) {
            self.deadline = Some(parse_deadline(value)?);
        }
        if let Some(value) = get(header::RESULT_TTL) {
            self.result_ttl = Some(parse_ttl(header::RESULT_TTL, value)?);
        }
        if let Some(value) = get(header::TASK_CATCH_UP) {
            self.catch_up = Some(parse_ttl(header::TASK_CATCH_UP, value)?);
        }
        Ok(())
    }

    /// Turns a catch-up window into a deadline once the task's stored time
    /// (and, for a schedule's run, when it was `due`, if known) is known:
    /// the earlier of the two plus the window, or the task's own
    /// `Task-Deadline` if that is earlier. A run that waited longer than
    /// its window (no node up, a backlog, a pause, the server down at its
    /// time) then ends `408 expired` without running, and one that started
    /// in time is never cut short: the node, not the server's TTL, decides.
    pub(crate) fn anchor(&mut self, stored: SystemTime, due: Option<SystemTime>) {
        if let Some(window) = self.catch_up {
            let by_window = due.map_or(stored, |d| d.min(stored)) + window;
            self.deadline = Some(self.deadline.map_or(by_window, |d| d.min(by_window)));
        }
    }

    /// Adds what the result of this task carries: its `Nats-TTL`, and on an
    /// expired one the deadline it missed (`Task-Deadline`).
    pub(crate) fn result_headers(&self, error: Option<&TaskError>, headers: &mut HeaderMap) {
        if let Some(ttl) = self.result_ttl {
            headers.insert(header::TTL, ttl_value(ttl).as_str());
        }
        if let (Some(err), Some(deadline)) = (error, self.deadline) {
            if err.kind() == FailureKind::Expired {
                headers.insert(header::TASK_DEADLINE, format_deadline(deadline).as_str());
            }
        }
    }
}

/// Parses a `Task-Deadline`: RFC 3339 with a zone (`2026-12-01T09:00:00Z`,
/// `…+02:00`), fractions of a second allowed.
///
/// # Errors
/// A [`TaskError`] with code 400.
pub fn parse_deadline(value: &str) -> Result<SystemTime, TaskError> {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::parse(value.trim(), &Rfc3339)
        .map(SystemTime::from)
        .map_err(|e| {
            TaskError::reject(format!(
                "bad {}: {value:?}: {e} (RFC 3339, e.g. 2026-12-01T09:00:00Z)",
                header::TASK_DEADLINE
            ))
        })
}

/// A deadline as `Task-Deadline` carries it (RFC 3339, UTC, milliseconds).
pub fn format_deadline(deadline: SystemTime) -> String {
    humantime::format_rfc3339_millis(deadline).to_string()
}

/// Parses a time to live for header `name`: a duration in whole seconds,
/// at least 1s and at most [`MAX_TTL`] (`90s`, `1h`, `3600`), as
/// `Nats-TTL` takes it.
///
/// # Errors
/// A [`TaskError`] with code 400 saying what is wrong.
pub fn parse_ttl(name: &str, value: &str) -> Result<Duration, TaskError> {
    let text = value.trim();
    let parsed = match text.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(text).map_err(|e| e.to_string()),
    };
    let ttl = parsed.map_err(|e| TaskError::reject(format!("bad {name}: {value:?}: {e}")))?;
    check_ttl(name, ttl)
}

/// Checks a time to live for header `name`: whole seconds, at least 1s,
/// at most [`MAX_TTL`].
///
/// # Errors
/// A [`TaskError`] with code 400 saying what is wrong.
pub fn check_ttl(name: &str, ttl: Duration) -> Result<Duration, TaskError> {
    let bad = |why: &str| {
        TaskError::reject(format!(
            "bad {name}: {}: {why}",
            humantime::format_duration(ttl)
        ))
    };
    if ttl < Duration::from_secs(1) || ttl.subsec_nanos() != 0 {
        return Err(bad("must be whole seconds, at least 1s"));
    }
    if ttl > MAX_TTL {
        return Err(bad("must be at most 10 years"));
    }
    Ok(ttl)
}

/// A duration as a `Nats-TTL` value: whole seconds (`3600`).
pub fn ttl_value(ttl: Duration) -> String {
    ttl.as_secs().to_string()
}

/// The error a task whose `deadline` passed before `now` ends with, or
/// `None` when it may still start.
pub(crate) fn expired(deadline: Option<SystemTime>, now: SystemTime) -> Option<TaskError> {
    let deadline = deadline?;
    (now > deadline).then(|| {
        TaskError::new(
            FailureKind::Expired,
            format!(
                "expired: its deadline {} passed before it started",
                format_deadline(deadline)
            ),
        )
    })
}

/// The `Nats-TTL` a submitter puts on a task with `deadline`, published at
/// `now`: the time left, rounded up to a second, plus [`DEADLINE_GRACE`].
pub fn backstop_ttl(deadline: SystemTime, now: SystemTime) -> Duration {
    let left = deadline.duration_since(now).unwrap_or_default();
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    Duration::from_secs(secs) + DEADLINE_GRACE
}

/// Checks a unique key: 1 to [`MAX_KEY_BYTES`] bytes of letters, digits,
/// `_`, `-`, `=` and `/` (a key-value key of one subject token).
///
/// # Errors
/// Why the key is refused.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("empty".into());
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!("longer than {MAX_KEY_BYTES} bytes"));
    }
    if let Some(c) = key.chars().find(|c| !key_char(*c)) {
        return Err(format!(
            "{c:?} is not allowed: use letters, digits, _ - = and /"
        ));
    }
    Ok(())
}

fn key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '=' | '/')
}

/// The name of `key` of `kind` in [`crate::contract::UNIQUE_BUCKET`]:
/// `<kind>.<key>`.
///
/// # Errors
/// Why the kind or the key cannot name a key-value key.
pub fn unique_name(kind: &str, key: &str) -> Result<String, String> {
    check_key(key)?;
    let kind_ok = !kind.is_empty()
        && kind
            .split('.')
            .all(|token| !token.is_empty() && token.chars().all(key_char));
    if !kind_ok {
        return Err(format!(
            "kind {kind:?} cannot hold unique keys: use letters, digits, _ - = / and dots"
        ));
    }
    Ok(format!("{kind}.{key}"))
}

#[cfg(test)]
mod tests;
