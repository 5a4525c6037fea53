//! The task lifecycle's decisions, as pure functions of plain values: what a
//! delivery's outcome leads to, and how each write's result moves it on.
//! `lifecycle.rs` only performs what these say.
//!
//! | outcome                              | verdict  | writes                      | ends with |
//! |--------------------------------------|----------|-----------------------------|-----------|
//! | ok                                   | Commit   | ok result                   | ack       |
//! | retryable failure, attempts left     | Retry    | none                        | nak(delay)|
//! | retryable failure, attempts used up  | Fail     | dead letter, error result   | term      |
//! | final failure (400, 404, 413, …)     | Fail     | dead letter, error result   | term      |
//! | deadline passed before it started    | Expire   | error result (408 expired)  | ack       |
//! | handed back (shutdown)               | HandBack | none                        | nak now   |
//! | delivered past the attempt allowance | Fail     | dead letter, error result   | term      |
//! | cancelled (499; see `cancel.rs`)     | Cancel   | error result                | ack       |
//!
//! A write refused by the fence (an earlier attempt already kept its result)
//! counts as written. A write that fails otherwise hands the task back after
//! [`REWRITE_DELAY`], to do the whole step again: both writes are fenced, so
//! a second try never doubles them. An ok result too large to keep turns the
//! task into a final 413 failure.

use std::time::Duration;

use async_nats::jetstream::AckKind;

use crate::contract;
use crate::error::{FailureKind, TaskError};

/// How long a task whose result or dead letter could not be written waits
/// before it runs again.
pub(crate) const REWRITE_DELAY: Duration = Duration::from_secs(1);

/// How failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts before a failing task is dead-lettered (at least 1).
    pub max_attempts: u32,
    /// First retry delay, doubled on each further attempt.
    pub base_delay: Duration,
    /// Upper bound of the retry delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: contract::DEFAULT_MAX_DELIVER,
            base_delay: contract::DEFAULT_RETRY_DELAY,
            max_delay: contract::RETRY_MAX_DELAY,
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt `attempt + 1`: `base * 2^(attempt-1)`, capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// Attempts, never fewer than one.
    pub fn attempts(&self) -> u32 {
        self.max_attempts.max(1)
    }
}

/// Whether a delivery runs at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Run its handler.
    Run,
    /// Do not run it: fail it for good with this error.
    Refuse(TaskError),
}

/// A delivery past its attempts plus [`contract::UNFINISHED_ALLOWANCE`] has
/// been taken again and again without ever failing in its handler (its
/// nodes died or stopped running it): a poison task, failed without running.
pub(crate) fn admit(attempt: u32, policy: &RetryPolicy) -> Admission {
    if attempt <= policy.attempts() + contract::UNFINISHED_ALLOWANCE {
        return Admission::Run;
    }
    Admission::Refuse(TaskError::new(
        FailureKind::Unfinished,
        format!(
            "delivered {} times without finishing (attempts: {}): nodes died or stopped while running it",
            attempt - 1,
            policy.attempts()
        ),
    ))
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ran<'a> {
    /// The handler returned a result.
    Ok,
    /// The handler (or the envelope, or the node) failed the attempt.
    Failed(&'a TaskError),
    /// The node is stopping and cancelled the attempt.
    Cancelled,
}

/// What follows an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Keep the ok result, then ack.
    Commit,
    /// Hand back for another attempt after `delay`; nothing is written.
    Retry {
        /// The backoff before the next attempt.
        delay: Duration,
    },
    /// Failed for good: dead letter, error result, then term.
    Fail,
    /// Hand back at once, untouched (shutdown).
    HandBack,
    /// Cancelled: error result 499, then ack; never retried or dead-lettered.
    Cancel,
    /// Not started before its deadline: error result, then ack; neither
    /// retried nor dead-lettered.
    Expire,
}

/// The verdict on attempt `attempt` that ended as `ran`.
pub(crate) fn verdict(ran: Ran<'_>, attempt: u32, policy: &RetryPolicy) -> Verdict {
    match ran {
        Ran::Ok => Verdict::Commit,
        Ran::Cancelled => Verdict::HandBack,
        Ran::Failed(err) if err.kind() == FailureKind::Cancelled => Verdict::Cancel,
        Ran::Failed(err) if err.kind() == FailureKind::Expired => Verdict::Expire,
        Ran::Failed(err) if err.is_retryable() && attempt < policy.attempts() => Verdict::Retry {
            delay: policy.backoff(attempt),
        },
        Ran::Failed(_) => Verdict::Fail,
    }
}

/// How a write (result or dead letter) went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Written {
    /// Stored (or sent, for a core reply subject).
    Kept,
    /// Refused by the fence: an earlier attempt stored it already.
    AlreadyKept,
    /// Larger than the server takes.
    TooLarge(String),
    /// Not confirmed: try the step again later.
    Failed(String),
}

/// What follows a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    /// End the delivery with this acknowledgement.
    Reply(AckReply),
    /// Fail the task for good with this error (dead letter, error result).
    Fail(TaskError),
}

/// The acknowledgement a delivery ends with (async-nats's [`AckKind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckReply {
    /// Done: the server forgets the task.
    Ack,
    /// Failed for good: the server forgets the task.
    Term,
    /// Hand back, to be delivered again after the delay (or at once).
    Nak(Option<Duration>),
}

impl From<AckReply> for AckKind {
    fn from(reply: AckReply) -> Self {
        match reply {
            AckReply::Ack => AckKind::Ack,
            AckReply::Term => AckKind::Term,
            AckReply::Nak(delay) => AckKind::Nak(delay),
        }
    }
}

/// After the ok result of a [`Verdict::Commit`] was written.
pub(crate) fn after_result(written: Written) -> Next {
    match written {
        Written::Kept | Written::AlreadyKept => Next::Reply(AckReply::Ack),
        Written::TooLarge(why) => Next::Fail(TaskError::new(
            FailureKind::TooLarge,
            format!("result too large: {why}"),
        )),
        Written::Failed(_) => Next::Reply(AckReply::Nak(Some(REWRITE_DELAY))),
    }
}

/// After the `408 expired` result of a [`Verdict::Expire`] was written:
/// kept (or kept before, or refused as too large, which a payload-less
/// result never is) ends the task; otherwise it comes back to write again.
pub(crate) fn after_expiry(written: &Written) -> AckReply {
    match written {
        Written::Kept | Written::AlreadyKept | Written::TooLarge(_) => AckReply::Ack,
        Written::Failed(_) => AckReply::Nak(Some(REWRITE_DELAY)),
    }
}

/// After the dead letter of a failing task was written (and then, when it
/// was, its error result).
pub(crate) fn after_failure(dead: &Written, result: Option<&Written>) -> AckReply {
    let stored = |w: &Written| matches!(w, Written::Kept | Written::AlreadyKept);
    if !stored(dead) {
        return AckReply::Nak(Some(REWRITE_DELAY));
    }
    match result {
        // An error result is a few headers; one the server still refuses
        // as too large cannot ever be kept, and the dead letter is.
        Some(w) if stored(w) || matches!(w, Written::TooLarge(_)) => AckReply::Term,
        _ => AckReply::Nak(Some(REWRITE_DELAY)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts: attempts,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
        }
    }

    #[test]
    fn backoff_doubles_from_the_base_and_is_capped() {
        let p = policy(5);
        let delays: Vec<_> = (1..=9).map(|a| p.backoff(a).as_millis()).collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000]
        );
        assert_eq!(p.backoff(0), Duration::from_millis(500));
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn zero_attempts_means_one() {
        assert_eq!(policy(0).attempts(), 1);
        let err = TaskError::retry("x");
        assert_eq!(verdict(Ran::Failed(&err), 1, &policy(0)), Verdict::Fail);
    }

    #[test]
    fn ok_commits_and_cancel_hands_back() {
        assert_eq!(verdict(Ran::Ok, 1, &policy(3)), Verdict::Commit);
        assert_eq!(verdict(Ran::Ok, 99, &policy(3)), Verdict::Commit);
        assert_eq!(verdict(Ran::Cancelled, 1, &policy(3)), Verdict::HandBack);
        let cancelled = TaskError::new(FailureKind::Cancelled, "cancelled");
        for attempt in [1, 3, 99] {
            let v = verdict(Ran::Failed(&cancelled), attempt, &policy(3));
            assert_eq!(v, Verdict::Cancel);
        }
    }

    #[test]
    fn retryable_failures_retry_until_the_last_attempt() {
        let err = TaskError::retry("flaky");
        let p = policy(3);
        assert_eq!(
            verdict(Ran::Failed(&err), 1, &p),
            Verdict::Retry {
                delay: Duration::from_millis(500)
            }
        );
        assert_eq!(
            verdict(Ran::Failed(&err), 2, &p),
            Verdict::Retry {
                delay: Duration::from_secs(1)
            }
        );
        assert_eq!(verdict(Ran::Failed(&err), 3, &p), Verdict::Fail);
        assert_eq!(verdict(Ran::Failed(&err), 4, &p), Verdict::Fail);
    }

    #[test]
    fn every_failure_kind_gets_the_verdict_its_retryability_says() {
        for kind in [
            FailureKind::BadInput,
            FailureKind::NoSuchKind,
            FailureKind::TimedOut,
            FailureKind::TooLarge,
            FailureKind::HandlerFailed,
            FailureKind::Unfinished,
        ] {
            let err = TaskError::new(kind, "x");
            let first = verdict(Ran::Failed(&err), 1, &policy(5));
            assert_eq!(
                matches!(first, Verdict::Retry { .. }),
                kind.is_retryable(),
                "{kind:?}"
            );
            assert_eq!(
                verdict(Ran::Failed(&err), 5, &policy(5)),
                Verdict::Fail,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn an_expired_task_is_answered_and_acked_never_retried() {
        let err = TaskError::new(FailureKind::Expired, "expired");
        for attempt in [1, 2, 99] {
            assert_eq!(
                verdict(Ran::Failed(&err), attempt, &policy(5)),
                Verdict::Expire
            );
        }
        assert_eq!(after_expiry(&Written::Kept), AckReply::Ack);
        assert_eq!(after_expiry(&Written::AlreadyKept), AckReply::Ack);
        assert_eq!(
            after_expiry(&Written::Failed("x".into())),
            AckReply::Nak(Some(REWRITE_DELAY))
        );
    }

    #[test]
    fn deliveries_past_the_allowance_are_refused_as_unfinished() {
        let p = policy(3);
        let limit = 3 + contract::UNFINISHED_ALLOWANCE;
        assert_eq!(admit(1, &p), Admission::Run);
        assert_eq!(admit(limit, &p), Admission::Run);
        match admit(limit + 1, &p) {
            Admission::Refuse(err) => {
                assert_eq!(err.kind(), FailureKind::Unfinished);
                assert!(!err.is_retryable());
                assert!(
                    err.message().contains(&format!("delivered {limit} times")),
                    "{err}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_kept_or_fenced_result_is_acked() {
        assert_eq!(after_result(Written::Kept), Next::Reply(AckReply::Ack));
        assert_eq!(
            after_result(Written::AlreadyKept),
            Next::Reply(AckReply::Ack)
        );
    }

    #[test]
    fn a_result_that_failed_to_write_runs_again() {
        assert_eq!(
            after_result(Written::Failed("timeout".into())),
            Next::Reply(AckReply::Nak(Some(REWRITE_DELAY)))
        );
    }

    #[test]
    fn a_result_too_large_fails_the_task_for_good() {
        match after_result(Written::TooLarge("2 MB".into())) {
            Next::Fail(err) => {
                assert_eq!((err.code(), err.is_retryable()), (413, false));
                assert!(err.message().contains("2 MB"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_failure_terms_only_once_its_dead_letter_is_stored() {
        let kept = Written::Kept;
        let fenced = Written::AlreadyKept;
        let failed = Written::Failed("x".into());
        let nak = AckReply::Nak(Some(REWRITE_DELAY));
        assert_eq!(after_failure(&failed, None), nak);
        assert_eq!(after_failure(&kept, None), nak);
        assert_eq!(after_failure(&kept, Some(&kept)), AckReply::Term);
        assert_eq!(after_failure(&fenced, Some(&fenced)), AckReply::Term);
        assert_eq!(after_failure(&kept, Some(&failed)), nak);
        assert_eq!(
            after_failure(&kept, Some(&Written::TooLarge("h".into()))),
            AckReply::Term
        );
    }

    #[test]
    fn ack_replies_are_async_nats_ack_kinds() {
        let bytes = |r: AckReply| bytes::Bytes::from(AckKind::from(r));
        assert_eq!(bytes(AckReply::Ack), "+ACK");
        assert_eq!(bytes(AckReply::Term), "+TERM");
        assert_eq!(bytes(AckReply::Nak(None)), "-NAK");
        assert_eq!(
            bytes(AckReply::Nak(Some(Duration::from_secs(1)))),
            "-NAK {\"delay\":1000000000}"
        );
    }

    proptest! {
        /// Whatever the outcome and attempt, a task is retried only while it
        /// has attempts left, and never waits longer than the cap.
        #[test]
        fn retries_stay_within_the_policy(attempts in 0u32..20, attempt in 1u32..40, retryable: bool, base_ms in 1u64..5000) {
            let p = RetryPolicy { max_attempts: attempts, base_delay: Duration::from_millis(base_ms), max_delay: Duration::from_secs(60) };
            let err = if retryable { TaskError::retry("x") } else { TaskError::reject("x") };
            match verdict(Ran::Failed(&err), attempt, &p) {
                Verdict::Retry { delay } => {
                    prop_assert!(retryable && attempt < p.attempts());
                    prop_assert!(delay <= Duration::from_secs(60) && delay >= Duration::from_millis(base_ms.min(60_000)));
                }
                Verdict::Fail => prop_assert!(!retryable || attempt >= p.attempts()),
                other => prop_assert!(false, "{other:?}"),
            }
        }

        /// No sequence of write outcomes ends a failing task without its
        /// dead letter being stored.
        #[test]
        fn term_implies_a_stored_dead_letter(dead in 0u8..4, result in 0u8..5) {
            let w = |n: u8| match n { 0 => Written::Kept, 1 => Written::AlreadyKept, 2 => Written::TooLarge("x".into()), _ => Written::Failed("x".into()) };
            let dead = w(dead);
            let result = (result < 4).then(|| w(result));
            if after_failure(&dead, result.as_ref()) == AckReply::Term {
                prop_assert!(matches!(dead, Written::Kept | Written::AlreadyKept));
                prop_assert!(result.is_some());
            }
        }
    }
}
