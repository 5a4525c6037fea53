//! Pull credits: how many tasks a node has asked the server for and not yet
//! received, as a small state machine of plain values. `pull.rs` sends the
//! requests and feeds this what arrives on its inbox.
//!
//! | event                                    | credits                 |
//! |------------------------------------------|-------------------------|
//! | request for `n` sent                     | `+ n`                   |
//! | a task arrives                           | `- 1`                   |
//! | a request ends, `k` not delivered        | `- k`                   |
//! | a request refused outright (no count)    | `0`, pause before asking|
//! | inbox silent past expiry + grace         | `0` (requests lost)     |
//!
//! A node asks only for slots that are free and not already asked for, and
//! while a request is open only in batches of at least a quarter of its
//! slots, so a busy node does not send a request per finished task.

use std::time::Duration;

use async_nats::StatusCode;
use tokio::time::Instant;

/// How long the inbox may stay silent past a request's expiry before the
/// node takes the request as lost (with its connection) and asks again.
/// Under load a late status must not be taken for a lost request.
pub(crate) const LOST_GRACE: Duration = Duration::from_secs(5);

/// What one message on the pull inbox is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inbox {
    /// A task.
    Task,
    /// An idle heartbeat: the request is alive.
    Heartbeat,
    /// A request ended (expired, or refused); `Some(k)`: `k` of the messages
    /// it asked for were not delivered; `None`: it said nothing of them.
    Ended(Option<usize>),
}

/// Classifies a message on the pull inbox by its status and its
/// `Nats-Pending-Messages` header.
pub(crate) fn classify(status: Option<StatusCode>, pending: Option<&str>) -> Inbox {
    match status {
        None | Some(StatusCode::OK) => Inbox::Task,
        Some(StatusCode::IDLE_HEARTBEAT) => Inbox::Heartbeat,
        Some(_) => Inbox::Ended(pending.and_then(|p| p.trim().parse().ok())),
    }
}

/// Outstanding pull credit.
#[derive(Debug, Clone)]
pub(crate) struct Credits {
    outstanding: usize,
    low_water: usize,
    expires: Duration,
    asked_at: Instant,
    last_heard: Instant,
    pause: bool,
}

impl Credits {
    /// Credits of a node with `slots` slots whose requests expire after `expires`.
    pub(crate) fn new(slots: usize, expires: Duration, now: Instant) -> Self {
        Credits {
            outstanding: 0,
            low_water: (slots / 4).max(1),
            expires,
            asked_at: now,
            last_heard: now,
            pause: false,
        }
    }

    /// Tasks asked for and not yet received.
    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// How many tasks to ask for now, with `free` slots; `None` when no
    /// request is worth sending.
    pub(crate) fn to_request(&self, free: usize) -> Option<usize> {
        let unasked = free.saturating_sub(self.outstanding);
        (unasked > 0 && (self.outstanding == 0 || unasked >= self.low_water)).then_some(unasked)
    }

    /// A request for `batch` tasks was sent.
    pub(crate) fn asked(&mut self, batch: usize, now: Instant) {
        self.outstanding += batch;
        self.asked_at = now;
    }

    /// Something arrived on the inbox.
    pub(crate) fn on(&mut self, what: Inbox, now: Instant) {
        self.last_heard = now;
        match what {
            Inbox::Task => self.outstanding = self.outstanding.saturating_sub(1),
            Inbox::Heartbeat => {}
            Inbox::Ended(Some(undelivered)) => {
                self.outstanding = self.outstanding.saturating_sub(undelivered)
            }
            Inbox::Ended(None) => {
                // Refused outright (max waiting, leader change): start over
                // after a pause, not in a hot loop.
                self.outstanding = 0;
                self.pause = true;
            }
        }
    }

    /// When outstanding requests count as lost, if any are outstanding.
    pub(crate) fn lost_at(&self) -> Option<Instant> {
        (self.outstanding > 0)
            .then(|| self.asked_at.max(self.last_heard) + self.expires + LOST_GRACE)
    }

    /// Outstanding requests are lost: forget them.
    pub(crate) fn forget(&mut self) {
        self.outstanding = 0;
    }

    /// Whether to pause before the next request (once per refusal).
    pub(crate) fn take_pause(&mut self) -> bool {
        std::mem::take(&mut self.pause)
    }

    /// When the last request was sent.
    pub(crate) fn asked_at(&self) -> Instant {
        self.asked_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EXPIRES: Duration = Duration::from_secs(2);

    #[test]
    fn inbox_messages_are_classified_by_status() {
        assert_eq!(classify(None, None), Inbox::Task);
        assert_eq!(classify(Some(StatusCode::OK), None), Inbox::Task);
        assert_eq!(
            classify(Some(StatusCode::IDLE_HEARTBEAT), None),
            Inbox::Heartbeat
        );
        assert_eq!(
            classify(Some(StatusCode::TIMEOUT), Some("7")),
            Inbox::Ended(Some(7))
        );
        assert_eq!(
            classify(Some(StatusCode::REQUEST_TERMINATED), Some("x")),
            Inbox::Ended(None)
        );
        assert_eq!(
            classify(Some(StatusCode::NO_RESPONDERS), None),
            Inbox::Ended(None)
        );
    }

    #[test]
    fn an_idle_node_asks_for_every_free_slot() {
        let c = Credits::new(64, EXPIRES, Instant::now());
        assert_eq!(c.to_request(64), Some(64));
        assert_eq!(c.to_request(0), None);
    }

    #[test]
    fn with_a_request_open_it_asks_only_in_batches_of_a_quarter() {
        let now = Instant::now();
        let mut c = Credits::new(64, EXPIRES, now);
        c.asked(64, now);
        for _ in 0..10 {
            c.on(Inbox::Task, now);
        }
        // 10 arrived and finished: all 64 slots free, 54 still asked for,
        // 10 not asked for: under a quarter, so no request yet.
        assert_eq!(c.to_request(64), None);
        for _ in 0..6 {
            c.on(Inbox::Task, now);
        }
        assert_eq!(c.to_request(64), Some(16));
    }

    #[test]
    fn an_ended_request_returns_what_it_did_not_deliver() {
        let now = Instant::now();
        let mut c = Credits::new(8, EXPIRES, now);
        c.asked(8, now);
        c.on(Inbox::Task, now);
        c.on(Inbox::Ended(Some(7)), now);
        assert_eq!(c.outstanding(), 0);
        assert!(!c.take_pause());
        assert_eq!(c.to_request(8), Some(8));
    }

    #[test]
    fn a_refused_request_pauses_once_and_starts_over() {
        let now = Instant::now();
        let mut c = Credits::new(8, EXPIRES, now);
        c.asked(8, now);
        c.on(Inbox::Ended(None), now);
        assert_eq!(c.outstanding(), 0);
        assert!(c.take_pause());
        assert!(!c.take_pause());
    }

    #[test]
    fn requests_are_lost_only_after_silence_past_expiry_and_grace() {
        let t0 = Instant::now();
        let mut c = Credits::new(8, EXPIRES, t0);
        assert_eq!(c.lost_at(), None);
        c.asked(8, t0);
        assert_eq!(c.lost_at(), Some(t0 + EXPIRES + LOST_GRACE));
        let later = t0 + Duration::from_secs(3);
        c.on(Inbox::Heartbeat, later);
        assert_eq!(c.lost_at(), Some(later + EXPIRES + LOST_GRACE));
        c.forget();
        assert_eq!((c.outstanding(), c.lost_at()), (0, None));
    }

    #[test]
    fn more_deliveries_than_asked_never_underflow() {
        let now = Instant::now();
        let mut c = Credits::new(4, EXPIRES, now);
        c.on(Inbox::Task, now);
        c.on(Inbox::Ended(Some(100)), now);
        assert_eq!(c.outstanding(), 0);
    }

    proptest! {
        /// Whatever arrives, a node never has more asked for than it had
        /// free slots when it asked.
        #[test]
        fn never_asks_beyond_free_slots(slots in 1usize..300, events in proptest::collection::vec(0u8..5, 0..200)) {
            let now = Instant::now();
            let mut c = Credits::new(slots, EXPIRES, now);
            let mut running = 0usize;
            for e in events {
                let free = slots - running;
                if let Some(n) = c.to_request(free) {
                    prop_assert!(n <= free);
                    c.asked(n, now);
                }
                prop_assert!(c.outstanding() + running <= slots);
                match e {
                    0 if c.outstanding() > 0 && running < slots => { c.on(Inbox::Task, now); running += 1; }
                    1 if running > 0 => running -= 1,
                    2 => c.on(Inbox::Ended(Some(c.outstanding() / 2)), now),
                    3 => c.on(Inbox::Heartbeat, now),
                    4 => { c.on(Inbox::Ended(None), now); c.take_pause(); }
                    _ => {}
                }
                prop_assert!(c.outstanding() <= slots);
            }
        }
    }
}
