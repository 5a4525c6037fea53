//! The submitter's window, as plain values: which task numbers are in flight
//! (published, no result yet) and since when, which have ended, and when an
//! in-flight task's kept result is next looked for. Memory is bounded by the
//! window plus one bit per task.
//!
//! A result normally arrives on the submitter's subscription. One sent while
//! that subscription was not (yet, or any more) known to the server the node
//! published on is kept in `RESULTS` but never arrives: so a task in flight
//! for [`FIRST_LOOK`] is looked up, then again at twice its age each time.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// How long a task is in flight before its kept result is first looked for.
pub(crate) const FIRST_LOOK: Duration = Duration::from_secs(2);

/// When a task in flight was published, whether JetStream stored it yet,
/// and when to look for its result.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    published: Instant,
    stored: bool,
    next_look: Instant,
}

/// Tasks in flight and tasks ended.
#[derive(Debug, Default)]
pub(crate) struct Window {
    /// Task number to when it was published; at most `limit` entries.
    in_flight: HashMap<u64, InFlight>,
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

    /// Whether task `n` has ended.
    #[cfg(test)]
    pub(crate) fn has_ended(&self, n: u64) -> bool {
        self.ended.get(n)
    }

    /// Whether task `n` is in flight.
    pub(crate) fn is_in_flight(&self, n: u64) -> bool {
        self.in_flight.contains_key(&n)
    }

    /// Task `n` was published at `now`.
    pub(crate) fn published(&mut self, n: u64, now: Instant) {
        self.in_flight.insert(
            n,
            InFlight {
                published: now,
                stored: false,
                next_look: now + FIRST_LOOK,
            },
        );
    }

    /// JetStream stored task `n`: from now on it can go without a result.
    pub(crate) fn stored(&mut self, n: u64) {
        if let Some(f) = self.in_flight.get_mut(&n) {
            f.stored = true;
        }
    }

    /// Tasks whose kept result is due to be looked for at `now`, in order;
    /// each is next due at twice its age.
    pub(crate) fn due_for_lookup(&mut self, now: Instant) -> Vec<u64> {
        let mut due: Vec<u64> = self
            .in_flight
            .iter_mut()
            .filter(|(_, f)| f.next_look <= now)
            .map(|(&n, f)| {
                f.next_look = now + now.saturating_duration_since(f.published).max(FIRST_LOOK);
                n
            })
            .collect();
        due.sort_unstable();
        due
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
                .map(|f| now.saturating_duration_since(f.published)),
        )
    }

    /// Stored tasks in flight for `timeout` or longer at `now`, in order (a
    /// task still being published ends when its publish does).
    pub(crate) fn overdue(&self, now: Instant, timeout: Duration) -> Vec<u64> {
        let mut overdue: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.stored && now.saturating_duration_since(f.published) >= timeout)
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
        for n in [3, 1, 4] {
            w.published(n, t0);
        }
        w.published(2, t0 + Duration::from_secs(5));
        for n in [1, 2, 3] {
            w.stored(n);
        }
        assert_eq!(
            w.overdue(t0 + Duration::from_secs(6), Duration::from_secs(6)),
            vec![1, 3]
        );
        assert!(w.overdue(t0, Duration::from_secs(6)).is_empty());
    }

    #[test]
    fn a_task_in_flight_is_looked_up_at_doubling_ages() {
        let t0 = Instant::now();
        let mut w = Window::new(8);
        w.published(1, t0);
        assert!(w
            .due_for_lookup(t0 + Duration::from_millis(1999))
            .is_empty());
        assert_eq!(w.due_for_lookup(t0 + FIRST_LOOK), vec![1]);
        assert!(w
            .due_for_lookup(t0 + Duration::from_millis(3999))
            .is_empty());
        assert_eq!(w.due_for_lookup(t0 + Duration::from_secs(4)), vec![1]);
        assert!(w
            .due_for_lookup(t0 + Duration::from_millis(7999))
            .is_empty());
        assert_eq!(w.due_for_lookup(t0 + Duration::from_secs(8)), vec![1]);
        w.end(1, t0 + Duration::from_secs(9));
        assert!(w.due_for_lookup(t0 + Duration::from_secs(60)).is_empty());
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
