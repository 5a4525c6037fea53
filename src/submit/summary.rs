//! What a submitter learns about the whole run: counts, rates and
//! latencies, summed from each task's end ([`super::report`]).

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::report::{TaskEnd, TaskStatus};

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

    fn end_with(status: TaskStatus) -> TaskEnd {
        TaskEnd::without_result(1, "b.1".into(), "k", status)
    }

    #[test]
    fn expired_and_refused_tasks_are_counted_apart() {
        let refused = TaskStatus::Refused {
            key: "echo.r-1".into(),
            holder: "b.1".into(),
        };
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
