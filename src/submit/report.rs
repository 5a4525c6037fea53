//! What a submitter learns about each task: how it ended, read from its
//! result. The run's totals are [`super::summary`]'s.

use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;

use crate::contract::{code, header};
use crate::error::FailureKind;

/// How a task ended, as the submitter saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskStatus {
    /// A node kept an ok result.
    Ok,
    /// A node kept an error result.
    Failed {
        /// `Nats-Service-Error-Code`.
        code: u16,
        /// `Nats-Service-Error`.
        message: String,
    },
    /// JetStream never stored the task.
    NotSubmitted {
        /// Why.
        message: String,
    },
    /// No result came within the submitter's timeout.
    NoResult {
        /// How long it waited.
        waited: Duration,
    },
    /// Not run: its deadline passed before a node started it (`408
    /// expired`, a result carrying the missed `Task-Deadline`).
    Expired {
        /// `Nats-Service-Error`.
        message: String,
    },
    /// Not published: another task holds its unique key (409).
    Refused {
        /// The key, `<kind>.<key>`.
        key: String,
        /// The id of the task holding it.
        holder: String,
    },
}

impl TaskStatus {
    /// Whether the task succeeded.
    pub fn is_ok(&self) -> bool {
        matches!(self, TaskStatus::Ok)
    }

    /// The status code of a task that did not succeed.
    pub fn code(&self) -> Option<u16> {
        match self {
            TaskStatus::Ok => None,
            TaskStatus::Failed { code, .. } => Some(*code),
            TaskStatus::NotSubmitted { .. } => Some(FailureKind::NotSubmitted.code()),
            TaskStatus::NoResult { .. } => Some(code::TIMED_OUT),
            TaskStatus::Expired { .. } => Some(FailureKind::Expired.code()),
            TaskStatus::Refused { .. } => Some(code::UNIQUE_HELD),
        }
    }

    /// One word for the status: `ok`, `error`, `expired` or `refused`.
    pub fn label(&self) -> &'static str {
        match self {
            TaskStatus::Ok => "ok",
            TaskStatus::Expired { .. } => "expired",
            TaskStatus::Refused { .. } => "refused",
            _ => "error",
        }
    }

    /// What went wrong, for a task that did not succeed.
    pub fn message(&self) -> Option<String> {
        match self {
            TaskStatus::Ok => None,
            TaskStatus::Failed { message, .. } => Some(message.clone()),
            TaskStatus::NotSubmitted { message } => Some(format!("not submitted: {message}")),
            TaskStatus::NoResult { waited } => Some(format!(
                "no result within {}",
                humantime::format_duration(*waited)
            )),
            TaskStatus::Expired { message } => Some(message.clone()),
            TaskStatus::Refused { key, holder } => {
                Some(format!("unique key {key} is held by task {holder}"))
            }
        }
    }
}

/// One task's end.
#[derive(Debug, Clone)]
pub struct TaskEnd {
    /// Its number in the batch, from 1.
    pub n: u64,
    /// The task id, `<batch>.<n>`.
    pub id: String,
    /// The task kind.
    pub kind: String,
    /// How it ended.
    pub status: TaskStatus,
    /// The node that ran it, when a node answered.
    pub node: Option<String>,
    /// Which attempt answered.
    pub attempt: Option<u32>,
    /// When the node started that attempt (`Task-Started`, RFC 3339).
    pub started: Option<String>,
    /// When its result was written (`Task-Finished`, RFC 3339).
    pub finished: Option<String>,
    /// The result bytes.
    pub payload: Bytes,
    /// Collected from `RESULTS`, kept by an earlier run of the same batch.
    pub resumed: bool,
}

impl TaskEnd {
    /// A task that ended without any node's answer.
    pub(crate) fn without_result(n: u64, id: String, kind: &str, status: TaskStatus) -> TaskEnd {
        TaskEnd {
            n,
            id,
            kind: kind.to_string(),
            status,
            node: None,
            attempt: None,
            started: None,
            finished: None,
            payload: Bytes::new(),
            resumed: false,
        }
    }

    /// Reads a result message of task `n` (`id` when the result names none).
    pub(crate) fn from_result(
        n: u64,
        id: &str,
        kind: &str,
        headers: Option<&HeaderMap>,
        payload: Bytes,
    ) -> TaskEnd {
        let get = |name| {
            headers
                .and_then(|h| header::get(h, name))
                .map(str::to_string)
        };
        let status = match get(header::SERVICE_ERROR_CODE) {
            None => TaskStatus::Ok,
            Some(text) => {
                let code = text.trim().parse().unwrap_or(code::HANDLER_FAILED);
                let message = get(header::SERVICE_ERROR).unwrap_or_default();
                // An expired result names the deadline it missed.
                if code == code::TIMED_OUT && get(header::TASK_DEADLINE).is_some() {
                    TaskStatus::Expired { message }
                } else {
                    TaskStatus::Failed { code, message }
                }
            }
        };
        TaskEnd {
            n,
            id: get(header::TASK_ID).unwrap_or_else(|| id.to_string()),
            kind: kind.to_string(),
            status,
            node: get(header::TASK_NODE),
            attempt: get(header::TASK_ATTEMPT).and_then(|a| a.trim().parse().ok()),
            started: get(header::TASK_STARTED),
            finished: get(header::TASK_FINISHED),
            payload,
            resumed: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, *v);
        }
        h
    }

    #[test]
    fn an_ok_result_reads_its_node_and_attempt() {
        let h = headers(&[
            ("Task-Id", "b.1"),
            ("Task-Node", "node2"),
            ("Task-Attempt", "3"),
        ]);
        let end = TaskEnd::from_result(1, "b.1", "echo", Some(&h), Bytes::from_static(b"hi"));
        assert_eq!(end.status, TaskStatus::Ok);
        assert_eq!((end.node.as_deref(), end.attempt), (Some("node2"), Some(3)));
        assert_eq!(end.payload, "hi");
    }

    #[test]
    fn an_error_result_reads_its_code_and_message() {
        let h = headers(&[
            ("Nats-Service-Error-Code", "404"),
            ("Nats-Service-Error", "no handler"),
        ]);
        let end = TaskEnd::from_result(2, "b.2", "x", Some(&h), Bytes::new());
        assert_eq!(
            end.status,
            TaskStatus::Failed {
                code: 404,
                message: "no handler".into()
            }
        );
        assert_eq!(end.id, "b.2", "the id falls back to the batch's");
        let odd = headers(&[("Nats-Service-Error-Code", "teapot")]);
        assert_eq!(
            TaskEnd::from_result(3, "b.3", "x", Some(&odd), Bytes::new())
                .status
                .code(),
            Some(500)
        );
    }

    #[test]
    fn an_expired_result_reads_as_expired() {
        let h = headers(&[
            ("Nats-Service-Error-Code", "408"),
            ("Nats-Service-Error", "expired: its deadline passed"),
            ("Task-Deadline", "2026-12-01T09:00:00.000Z"),
        ]);
        let end = TaskEnd::from_result(1, "b.1", "echo", Some(&h), Bytes::new());
        assert_eq!(
            end.status,
            TaskStatus::Expired {
                message: "expired: its deadline passed".into()
            }
        );
        assert_eq!(
            (end.status.code(), end.status.label()),
            (Some(408), "expired")
        );
        let timed_out = headers(&[("Nats-Service-Error-Code", "408")]);
        let end = TaskEnd::from_result(2, "b.2", "echo", Some(&timed_out), Bytes::new());
        assert_eq!(
            end.status.label(),
            "error",
            "a handler's timeout is no expiry"
        );
        let refused = TaskStatus::Refused {
            key: "echo.r-1".into(),
            holder: "b.1".into(),
        };
        assert_eq!((refused.code(), refused.label()), (Some(409), "refused"));
        assert_eq!(
            refused.message().unwrap(),
            "unique key echo.r-1 is held by task b.1"
        );
    }

    #[test]
    fn statuses_have_their_codes() {
        assert_eq!(TaskStatus::Ok.code(), None);
        let not = TaskStatus::NotSubmitted {
            message: "full".into(),
        };
        assert_eq!(not.code(), Some(503));
        assert_eq!(not.message().unwrap(), "not submitted: full");
        let none = TaskStatus::NoResult {
            waited: Duration::from_secs(60),
        };
        assert_eq!(
            (none.code(), none.message().unwrap().as_str()),
            (Some(408), "no result within 1m")
        );
    }
}
