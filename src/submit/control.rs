//! The controls a submission puts on each of its tasks ([`TaskControls`]):
//! the headers they become, and the unique key each task takes before it
//! is published ([`Keys`]).
//!
//! | control         | headers on each task                                         |
//! |-----------------|--------------------------------------------------------------|
//! | `expire_after`  | `Task-Deadline` (publish time + it), `Nats-TTL` backstop     |
//! | `result_ttl`    | `Result-TTL`                                                 |
//! | `unique`        | `Task-Unique`, `Task-Unique-For`; the key taken first        |
//! | `priority`      | `Task-Priority` (not normal); the band's subject decides it  |

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, Context};
use async_nats::Client;
use tracing::warn;

use super::report::TaskStatus;
use crate::contract::header;
use crate::control::{self, UniqueKey};
use crate::error::{Error, ErrorKind};
use crate::priority::Priority;
use crate::unique::{self, Claim, Place, SAFETY_TTL};

/// What each task of a submission is controlled by. `..Default::default()`
/// fills what you do not set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskControls {
    /// A task not started this long after it was published is not run: it
    /// ends `408 expired` (`Task-Deadline`).
    pub expire_after: Option<Duration>,
    /// How long each kept result lives (`Result-TTL`), whole seconds.
    pub result_ttl: Option<Duration>,
    /// A key no other queued or running task of the kind may hold
    /// (`Task-Unique`, `Task-Unique-For`).
    pub unique: Option<UniqueKey>,
    /// The key per-key limits count each task under (`Task-Key`: a
    /// customer, a tenant, a domain).
    pub key: Option<String>,
    /// The band the tasks are published in (`tasks-high.<kind>` for high);
    /// normal by default.
    pub priority: Priority,
}

/// Checks the controls of a submission of `kind`.
pub(super) fn check(controls: &TaskControls, kind: &str) -> Result<(), Error> {
    let usage = |msg: String| Err(Error::new(ErrorKind::Usage, msg));
    if controls.expire_after.is_some_and(|d| d.is_zero()) {
        return usage("--expire-after must be more than 0".into());
    }
    let whole = |name: &str, d: Duration| {
        control::check_ttl(name, d)
            .map(|_| ())
            .map_err(|e| Error::new(ErrorKind::Usage, e.message().to_string()))
    };
    if let Some(ttl) = controls.result_ttl {
        whole(header::RESULT_TTL, ttl)?;
    }
    if let Some(key) = &controls.key {
        if let Err(why) = control::check_key(key) {
            return usage(format!("bad --key {key:?}: {why}"));
        }
    }
    if let Some(unique) = &controls.unique {
        if let Err(why) = control::unique_name(kind, &unique.key) {
            return usage(format!("bad unique key {:?}: {why}", unique.key));
        }
        if let Some(hold) = unique.hold_for {
            whole(header::TASK_UNIQUE_FOR, hold)?;
        }
    }
    Ok(())
}

/// The headers of one task published at `now`.
pub(super) fn headers(controls: &TaskControls, now: SystemTime) -> Vec<(&'static str, String)> {
    let mut headers = Vec::new();
    if let Some(after) = controls.expire_after {
        let deadline = now + after;
        headers.push((header::TASK_DEADLINE, control::format_deadline(deadline)));
        let backstop = control::backstop_ttl(deadline, now);
        headers.push((header::TTL, control::ttl_value(backstop)));
    }
    if let Some(ttl) = controls.result_ttl {
        headers.push((header::RESULT_TTL, control::ttl_value(ttl)));
    }
    if let Some(key) = &controls.key {
        headers.push((header::TASK_KEY, key.clone()));
    }
    if controls.priority != Priority::Normal {
        headers.push((header::TASK_PRIORITY, controls.priority.to_string()));
    }
    if let Some(unique) = &controls.unique {
        headers.push((header::TASK_UNIQUE, unique.key.clone()));
        if let Some(hold) = unique.hold_for {
            headers.push((header::TASK_UNIQUE_FOR, control::ttl_value(hold)));
        }
    }
    headers
}

/// The unique keys a submission's tasks took, until their tasks are stored.
pub(super) struct Keys {
    js: Context,
    /// The fleet's bucket, or the tenant's own stream on a tenant's
    /// connection.
    place: Place,
    kind: String,
    unique: Option<UniqueKey>,
    /// Task number to the revision of its key, for tasks not yet stored.
    taken: HashMap<u64, u64>,
}

impl Keys {
    pub(super) fn new(
        client: Client,
        tenant: Option<&str>,
        kind: &str,
        controls: &TaskControls,
    ) -> Self {
        Keys {
            js: jetstream::new(client),
            place: tenant.map_or_else(Place::fleet, Place::tenant),
            kind: kind.to_string(),
            unique: controls.unique.clone(),
            taken: HashMap::new(),
        }
    }

    /// Takes the key for task `n` (id `task_id`) when the submission has
    /// one; `Some(status)` when the task must not be published.
    pub(super) async fn claim(&mut self, n: u64, task_id: &str) -> Option<TaskStatus> {
        let unique = self.unique.as_ref()?;
        let (place, kind) = (&self.place, &self.kind);
        match unique::claim(&self.js, place, kind, &unique.key, task_id, SAFETY_TTL).await {
            Ok(Claim::Taken { revision }) => {
                self.taken.insert(n, revision);
                None
            }
            Ok(Claim::Held { holder }) => Some(TaskStatus::Refused {
                key: format!("{}.{}", self.kind, unique.key),
                holder,
            }),
            Err(err) => Some(TaskStatus::NotSubmitted {
                message: format!("{err}: {}", source_text(&err)),
            }),
        }
    }

    /// Task `n` was never stored: frees its key.
    pub(super) async fn undo(&mut self, n: u64) {
        let (Some(unique), Some(revision)) = (&self.unique, self.taken.remove(&n)) else {
            return;
        };
        let (place, kind) = (&self.place, &self.kind);
        if let Err(err) = unique::undo(&self.js, place, kind, &unique.key, revision).await {
            warn!(%err, key = %unique.key, "could not free the unique key of a task never stored; it frees itself after 24h");
        }
    }

    /// Task `n` ended (stored or not): its key is no longer this run's to free.
    pub(super) fn forget(&mut self, n: u64) {
        self.taken.remove(&n);
    }
}

fn source_text(err: &Error) -> String {
    std::error::Error::source(err).map_or_else(String::new, |s| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> SystemTime {
        humantime::parse_rfc3339(rfc3339).unwrap()
    }

    #[test]
    fn each_control_becomes_its_headers() {
        let now = at("2026-12-01T09:00:00Z");
        let controls = TaskControls {
            expire_after: Some(Duration::from_secs(30)),
            result_ttl: Some(Duration::from_secs(3600)),
            unique: Some(UniqueKey {
                key: "r-1".into(),
                hold_for: Some(Duration::from_secs(60)),
            }),
            key: Some("acme".into()),
            priority: Priority::High,
        };
        assert_eq!(
            headers(&controls, now),
            [
                ("Task-Deadline", "2026-12-01T09:00:30.000Z".to_string()),
                ("Nats-TTL", "3630".to_string()),
                ("Result-TTL", "3600".to_string()),
                ("Task-Key", "acme".to_string()),
                ("Task-Priority", "high".to_string()),
                ("Task-Unique", "r-1".to_string()),
                ("Task-Unique-For", "60".to_string()),
            ]
        );
        assert!(headers(&TaskControls::default(), now).is_empty());
    }

    #[test]
    fn bad_controls_are_usage_errors() {
        let bad = |c: TaskControls| check(&c, "echo").unwrap_err().kind();
        assert_eq!(
            bad(TaskControls {
                result_ttl: Some(Duration::from_millis(500)),
                ..Default::default()
            }),
            ErrorKind::Usage
        );
        assert_eq!(
            bad(TaskControls {
                result_ttl: Some(Duration::from_millis(1500)),
                ..Default::default()
            }),
            ErrorKind::Usage
        );
        assert_eq!(
            bad(TaskControls {
                expire_after: Some(Duration::ZERO),
                ..Default::default()
            }),
            ErrorKind::Usage
        );
        let key = |k: &str| TaskControls {
            unique: Some(UniqueKey {
                key: k.into(),
                hold_for: None,
            }),
            ..Default::default()
        };
        assert_eq!(bad(key("a.b")), ErrorKind::Usage);
        let limit_key = |k: &str| TaskControls {
            key: Some(k.into()),
            ..Default::default()
        };
        assert_eq!(bad(limit_key("a b")), ErrorKind::Usage);
        assert!(check(&limit_key("alice@x/1"), "echo").is_err());
        assert!(check(&limit_key("acme-1"), "echo").is_ok());
        assert_eq!(bad(key("")), ErrorKind::Usage);
        assert!(check(&key("r-1"), "echo").is_ok());
        assert!(check(&key("r-1"), "a:b").is_err(), "a kind no key can name");
        assert!(check(
            &TaskControls {
                result_ttl: Some(Duration::from_secs(2)),
                expire_after: Some(Duration::from_millis(10)),
                ..Default::default()
            },
            "echo"
        )
        .is_ok());
    }
}
