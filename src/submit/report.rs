//! What a submitter learns about each task, and about the whole run: the
//! values its events carry.

use std::fmt;
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use serde::Serialize;

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
        let get = |name: &str| {
            headers
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_string())
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

/// Counts and timings of one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Tasks read from the input.
    pub tasks: u64,
    /// Tasks whose result was ok.
    pub ok: u64,
    /// Tasks whose result was an error, or that could not be submitted.
    pub failed: u64,
    /// Tasks with no result within the timeout.
    pub timed_out: u64,
    /// Tasks not run because their deadline passed first.
    pub expired: u64,
    /// Unique tasks not published: their key was held.
    pub refused: u64,
    /// Results already collected by an earlier run of the same batch.
    pub resumed: u64,
    /// Results that arrived a second time and were dropped.
    pub duplicates: u64,
    /// Wall time of the run, in seconds.
    pub seconds: f64,
    /// Tasks per second between the tenth and the ninetieth percentile of
    /// the tasks' ends: the run's rate without its warm-up and its tail.
    pub steady_tasks_per_s: f64,
    /// Submit-to-result latency percentiles, in microseconds.
    pub latency_us: Latency,
}

/// When tasks ended, sampled: every `stride`-th end, the stride doubling
/// whenever the samples reach [`EndTimes::CAP`]. Bounded memory for any
/// run, and the rank of every sample is known.
#[derive(Debug, Clone, Default)]
pub(crate) struct EndTimes {
    stride: u64,
    ended: u64,
    /// Seconds since the run began, of ends `stride`, `2·stride`, …
    at: Vec<f64>,
}

impl EndTimes {
    const CAP: usize = 2048;

    /// One more task ended, `secs` after the run began.
    pub(crate) fn push(&mut self, secs: f64) {
        self.stride = self.stride.max(1);
        self.ended += 1;
        if self.ended.is_multiple_of(self.stride) {
            self.at.push(secs);
        }
        if self.at.len() >= Self::CAP {
            // Keep the ends of rank 2·stride, 4·stride, …
            self.at = self.at.iter().skip(1).step_by(2).copied().collect();
            self.stride *= 2;
        }
    }

    /// Tasks per second between the tenth and the ninetieth percentile of
    /// the ends; `None` with too few samples to tell.
    pub(crate) fn steady_rate(&self) -> Option<f64> {
        let rank_index = |q: f64| ((self.ended as f64 * q) / self.stride as f64).round() as usize;
        let (lo, hi) = (rank_index(0.1).max(1), rank_index(0.9).min(self.at.len()));
        if hi <= lo {
            return None;
        }
        let span = self.at[hi - 1] - self.at[lo - 1];
        let tasks = ((hi - lo) as u64 * self.stride) as f64;
        (span > 0.0).then(|| tasks / span)
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl Summary {
    /// Whether every task succeeded.
    pub fn all_ok(&self) -> bool {
        self.failed == 0 && self.timed_out == 0 && self.ok == self.tasks
    }

    /// Tasks per second over the whole run.
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.tasks as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Counts one task's end.
    pub(crate) fn count(&mut self, end: &TaskEnd) {
        match end.status {
            TaskStatus::Ok => self.ok += 1,
            TaskStatus::NoResult { .. } => self.timed_out += 1,
            TaskStatus::Expired { .. } => self.expired += 1,
            TaskStatus::Refused { .. } => self.refused += 1,
            _ => self.failed += 1,
        }
        if end.resumed {
            self.resumed += 1;
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut extra = String::new();
        if self.expired > 0 {
            extra.push_str(&format!(", {} expired", self.expired));
        }
        if self.refused > 0 {
            extra.push_str(&format!(", {} refused (unique key held)", self.refused));
        }
        write!(
            f,
            "{} tasks: {} ok, {} failed, {} timed out{extra} in {} ({:.0} tasks/s)",
            self.tasks,
            self.ok,
            self.failed,
            self.timed_out,
            humantime::format_duration(Duration::from_millis((self.seconds * 1000.0) as u64)),
            self.rate()
        )?;
        if self.resumed > 0 {
            write!(f, ", {} collected from an earlier run", self.resumed)?;
        }
        if self.duplicates > 0 {
            write!(f, ", {} duplicate results dropped", self.duplicates)?;
        }
        Ok(())
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
        let mut s = Summary {
            tasks: 3,
            ..Default::default()
        };
        s.count(&TaskEnd::without_result(1, "b.1".into(), "k", refused));
        s.count(&end_with(TaskStatus::Expired {
            message: String::new(),
        }));
        s.count(&end_with(TaskStatus::Ok));
        assert_eq!((s.ok, s.failed, s.expired, s.refused), (1, 0, 1, 1));
        assert!(!s.all_ok());
        assert!(
            s.to_string().starts_with(
                "3 tasks: 1 ok, 0 failed, 0 timed out, 1 expired, 1 refused (unique key held) in"
            ),
            "{s}"
        );
    }

    fn end_with(status: TaskStatus) -> TaskEnd {
        TaskEnd::without_result(1, "b.1".into(), "k", status)
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

    #[test]
    fn the_steady_rate_leaves_out_warm_up_and_tail() {
        let mut ends = EndTimes::default();
        // 1000 tasks per second for 100 000 tasks, after a one-second
        // warm-up and before a one-second tail of the last task.
        for n in 1..=100_000u64 {
            let mut secs = 1.0 + n as f64 / 1000.0;
            if n == 100_000 {
                secs += 1.0;
            }
            ends.push(secs);
        }
        let rate = ends.steady_rate().unwrap();
        assert!((rate - 1000.0).abs() < 1.0, "{rate}");
        assert!(ends.at.len() < EndTimes::CAP, "bounded: {}", ends.at.len());
    }

    #[test]
    fn a_short_run_has_no_steady_rate() {
        let mut ends = EndTimes::default();
        assert_eq!(ends.steady_rate(), None);
        ends.push(1.0);
        assert_eq!(ends.steady_rate(), None);
        for n in 2..=20 {
            ends.push(n as f64);
        }
        assert_eq!(ends.steady_rate(), Some(1.0));
    }

    #[test]
    fn the_summary_counts_each_kind_of_end() {
        let mut s = Summary {
            tasks: 4,
            ..Default::default()
        };
        let end = |status| TaskEnd::without_result(1, "b.1".into(), "k", status);
        s.count(&end(TaskStatus::Ok));
        s.count(&end(TaskStatus::NoResult {
            waited: Duration::ZERO,
        }));
        s.count(&end(TaskStatus::NotSubmitted {
            message: String::new(),
        }));
        let mut resumed = end(TaskStatus::Ok);
        resumed.resumed = true;
        s.count(&resumed);
        assert_eq!((s.ok, s.failed, s.timed_out, s.resumed), (2, 1, 1, 1));
        assert!(!s.all_ok());
        s.seconds = 2.0;
        assert!(
            s.to_string()
                .starts_with("4 tasks: 2 ok, 1 failed, 1 timed out in 2s (2 tasks/s)"),
            "{s}"
        );
    }
}
