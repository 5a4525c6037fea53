//! The submitter's window, as plain values: which task numbers are in flight
//! (published, no result yet) and since when, and which have ended. Memory
//! is bounded by the window plus one bit per task.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// Tasks in flight and tasks ended.
#[derive(Debug, Default)]
pub(crate) struct Window {
    /// Task number to the instant it was published; at most `limit` entries.
    in_flight: HashMap<u64, Instant>,
    ended: Bitset,
    limit: usize,
}

/// What ending a task did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// First end of this task; `Some(latency)` when it was in flight.
    First(Option<Duration>),
    /// It had ended already: a duplicate.
    Again,
}

impl Window {
    /// A window of at most `limit` tasks in flight.
    pub(crate) fn new(limit: usize) -> Self {
        Window {
            limit,
            ..Default::default()
        }
    }

    /// Whether another task may be published.
    pub(crate) fn has_room(&self) -> bool {
        self.in_flight.len() < self.limit
    }

    /// Tasks in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Task numbers in flight, in no order.
    pub(crate) fn in_flight_numbers(&self) -> Vec<u64> {
        self.in_flight.keys().copied().collect()
    }

    /// Whether task `n` has ended (here or in an earlier run).
    pub(crate) fn has_ended(&self, n: u64) -> bool {
        self.ended.get(n)
    }

    /// Whether task `n` is in flight.
    pub(crate) fn is_in_flight(&self, n: u64) -> bool {
        self.in_flight.contains_key(&n)
    }

    /// Task `n` was published at `now`.
    pub(crate) fn published(&mut self, n: u64, now: Instant) {
        self.in_flight.insert(n, now);
    }

    /// Task `n` ended at `now` (a result, a refusal, a timeout).
    pub(crate) fn end(&mut self, n: u64, now: Instant) -> Ended {
        if self.ended.get(n) {
            self.in_flight.remove(&n);
            return Ended::Again;
        }
        self.ended.set(n);
        Ended::First(
            self.in_flight
                .remove(&n)
                .map(|at| now.saturating_duration_since(at)),
        )
    }

    /// Tasks in flight for `timeout` or longer at `now`, in order.
    pub(crate) fn overdue(&self, now: Instant, timeout: Duration) -> Vec<u64> {
        let mut overdue: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, at)| now.saturating_duration_since(**at) >= timeout)
            .map(|(&n, _)| n)
            .collect();
        overdue.sort_unstable();
        overdue
    }
}

/// One bit per task number: has it ended?
#[derive(Debug, Default)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn get(&self, n: u64) -> bool {
        let (word, bit) = ((n / 64) as usize, n % 64);
        self.0.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }

    fn set(&mut self, n: u64) {
        let (word, bit) = ((n / 64) as usize, n % 64);
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << bit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_window_bounds_tasks_in_flight() {
        let now = Instant::now();
        let mut w = Window::new(2);
        assert!(w.has_room());
        w.published(1, now);
        w.published(2, now);
        assert!(!w.has_room());
        assert_eq!(w.end(1, now), Ended::First(Some(Duration::ZERO)));
        assert!(w.has_room());
        assert_eq!(w.in_flight(), 1);
    }

    #[test]
    fn a_second_end_is_a_duplicate() {
        let now = Instant::now();
        let mut w = Window::new(8);
        w.published(5, now);
        assert!(
            matches!(w.end(5, now + Duration::from_millis(3)), Ended::First(Some(d)) if d == Duration::from_millis(3))
        );
        assert_eq!(w.end(5, now), Ended::Again);
        assert!(w.has_ended(5) && !w.is_in_flight(5));
    }

    #[test]
    fn a_task_ended_before_it_was_published_has_no_latency() {
        let mut w = Window::new(8);
        assert_eq!(w.end(9, Instant::now()), Ended::First(None));
        assert!(w.has_ended(9));
    }

    #[test]
    fn overdue_tasks_come_in_order() {
        let t0 = Instant::now();
        let mut w = Window::new(8);
        w.published(3, t0);
        w.published(1, t0);
        w.published(2, t0 + Duration::from_secs(5));
        assert_eq!(
            w.overdue(t0 + Duration::from_secs(6), Duration::from_secs(6)),
            vec![1, 3]
        );
        assert!(w.overdue(t0, Duration::from_secs(6)).is_empty());
    }

    #[test]
    fn bitset_covers_word_boundaries() {
        let mut b = Bitset::default();
        for n in [0, 63, 64, 65, 1_000_000] {
            assert!(!b.get(n));
            b.set(n);
            assert!(b.get(n));
        }
        assert!(!b.get(62) && !b.get(66) && !b.get(999_999));
    }

    proptest! {
        /// Every task ends exactly once, whatever order results, duplicates
        /// and timeouts come in.
        #[test]
        fn each_task_ends_once(ends in proptest::collection::vec(1u64..50, 0..300)) {
            let now = Instant::now();
            let mut w = Window::new(64);
            for n in 1..50 { w.published(n, now); }
            let mut firsts = std::collections::HashSet::new();
            for n in ends {
                match w.end(n, now) {
                    Ended::First(_) => prop_assert!(firsts.insert(n)),
                    Ended::Again => prop_assert!(firsts.contains(&n)),
                }
            }
            prop_assert_eq!(w.in_flight() + firsts.len(), 49);
        }
    }
}
