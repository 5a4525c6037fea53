//! The batch protocol's decisions, reply by reply.

use super::*;

#[test]
fn a_batch_starts_then_appends() {
    let mut b = Batcher::default();
    assert_eq!(
        b.send(10),
        Slot {
            batch: 1,
            seq: 1,
            op: 0
        }
    );
    assert_eq!(
        b.send(11),
        Slot {
            batch: 1,
            seq: 2,
            op: 1
        }
    );
    assert_eq!(b.unconfirmed(), 2);
}

#[test]
fn a_flow_ack_confirms_a_prefix() {
    let mut b = Batcher::default();
    for n in 1..=5 {
        b.send(n);
    }
    let e = b.on(1, Reply::Ack { seq: 3, flow: 3 });
    assert_eq!(e.stored, vec![1, 2, 3]);
    assert_eq!(b.unconfirmed(), 2);
}

#[test]
fn sending_waits_two_flows_ahead_of_the_acks() {
    let mut b = Batcher::default();
    b.send(1);
    b.on(1, Reply::Ack { seq: 0, flow: 2 });
    for n in 2..=4 {
        assert!(b.can_send());
        b.send(n);
    }
    assert!(!b.can_send(), "5 > 0 + 2 x 2");
    b.on(1, Reply::Ack { seq: 2, flow: 2 });
    assert!(b.can_send());
}

#[test]
fn a_refusal_ends_the_batch_and_the_rest_is_sent_again() {
    let mut b = Batcher::default();
    for n in 100..105 {
        b.send(n);
    }
    let e = b.on(
        1,
        Reply::Refused {
            seq: 3,
            code: 10077,
            description: "maximum messages exceeded".into(),
        },
    );
    assert_eq!(e, Effect::default());
    assert!(
        !b.can_send(),
        "nothing goes out until the batch's end is read"
    );
    let e = b.on(1, Reply::End { count: 2 });
    assert_eq!(e.stored, vec![100, 101]);
    assert_eq!(e.resend, vec![102, 103, 104]);
    assert_eq!(
        e.refused,
        Some((102, 10077, "maximum messages exceeded".into()))
    );
    assert!(b.can_send());
    assert_eq!(
        b.send(102),
        Slot {
            batch: 2,
            seq: 1,
            op: 0
        },
        "a new batch"
    );
}

#[test]
fn standing_alone_either_copy_of_a_message_sent_again_confirms_it() {
    let mut b = Batcher::default();
    b.send(1);
    b.send(2);
    let e = b.on(1, Reply::Stored { seq: 2 });
    assert_eq!(e.stored, vec![2]);
    assert!(b.single());
    // Task 1's PubAck is late: it goes again as a new message, and the
    // old copy stays awaited (a link that is slow every time must not
    // keep a task from ever being confirmed).
    let again = b.send(1);
    assert_eq!((again.batch, again.seq), (0, 3));
    assert_eq!(b.on(0, Reply::Stored { seq: 1 }).stored, vec![1]);
    // The other copy's reply says it again; the outbox reports a task
    // stored once (only while it is pending).
    assert_eq!(b.on(0, Reply::Stored { seq: 3 }).stored, vec![1]);
    assert_eq!(b.unconfirmed(), 0);
}

#[test]
fn a_gap_ends_the_batch_too() {
    let mut b = Batcher::default();
    for n in 1..=4 {
        b.send(n);
    }
    b.on(1, Reply::Gap);
    let e = b.on(1, Reply::End { count: 1 });
    assert_eq!(
        (e.stored, e.resend, e.refused),
        (vec![1], vec![2, 3, 4], None)
    );
}

#[test]
fn a_lost_batch_sends_everything_unconfirmed_again() {
    let mut b = Batcher::default();
    for n in 1..=3 {
        b.send(n);
    }
    b.on(1, Reply::Ack { seq: 1, flow: 10 });
    let e = b.on(
        1,
        Reply::Failed {
            seq: 3,
            code: 10208,
            description: "batch publish ID unknown".into(),
        },
    );
    assert_eq!(e.resend, vec![2, 3]);
    assert_eq!(b.send(2).batch, 2);
}

#[test]
fn a_refused_first_message_ends_the_batch_with_its_reason() {
    let mut b = Batcher::default();
    b.send(7);
    b.send(8);
    let e = b.on(
        1,
        Reply::Failed {
            seq: 1,
            code: 10077,
            description: "maximum messages exceeded".into(),
        },
    );
    assert_eq!(
        e.refused,
        Some((7, 10077, "maximum messages exceeded".into()))
    );
    assert_eq!(
        e.resend,
        vec![7, 8],
        "the caller holds back the refused one"
    );
    assert!(!b.single());
}

#[test]
fn a_stream_without_batches_turns_to_single_messages() {
    let mut b = Batcher::default();
    b.send(1);
    b.send(2);
    let e = b.on(
        1,
        Reply::Failed {
            seq: 1,
            code: 10205,
            description: "disabled".into(),
        },
    );
    assert_eq!(e.resend, vec![1, 2]);
    assert!(b.single());
    let slot = b.send(1);
    let e = b.on(0, Reply::Stored { seq: slot.seq });
    assert_eq!(e.stored, vec![1]);
    assert!(b.can_send());
}

#[test]
fn single_messages_never_share_a_sequence() {
    let mut b = Batcher::default();
    let first: Vec<Slot> = (1..=3).map(|n| b.send(n)).collect();
    assert_eq!(b.on(1, Reply::Stored { seq: 1 }).stored, vec![1]);
    let later = b.send(4);
    assert!(
        first.iter().all(|s| s.seq != later.seq),
        "{first:?} {later:?}"
    );
    assert_eq!(b.on(0, Reply::Stored { seq: 2 }).stored, vec![2]);
    assert_eq!(b.on(0, Reply::Stored { seq: later.seq }).stored, vec![4]);
    assert_eq!(b.on(0, Reply::Stored { seq: 3 }).stored, vec![3]);
    assert_eq!(b.unconfirmed(), 0);
}

#[test]
fn every_refusal_of_batching_turns_it_off_once() {
    let mut b = Batcher::default();
    b.send(1);
    b.send(2);
    let refusal = |seq| Reply::Failed {
        seq,
        code: 10205,
        description: "disabled".into(),
    };
    assert_eq!(b.on(1, refusal(1)).resend, vec![1, 2]);
    b.send(1);
    b.send(2);
    assert_eq!(b.on(1, refusal(2)), Effect::default(), "already sent again");
    assert_eq!(b.unconfirmed(), 2);
}

#[test]
fn plain_pubacks_confirm_one_message_each() {
    // A tenant's publish crosses a service import: the server sees no batch.
    let mut b = Batcher::default();
    for n in 1..=3 {
        b.send(n);
    }
    assert_eq!(b.on(1, Reply::Stored { seq: 2 }).stored, vec![2]);
    assert!(b.single() && b.can_send());
    let e = b.on(
        1,
        Reply::Failed {
            seq: 1,
            code: 10077,
            description: "full".into(),
        },
    );
    assert_eq!((e.refused.map(|r| r.0), e.resend), (Some(1), vec![1]));
}

#[test]
fn a_commit_confirms_the_tail() {
    let mut b = Batcher::default();
    for n in 1..=3 {
        b.send(n);
    }
    assert_eq!(
        b.commit(),
        Some(Slot {
            batch: 1,
            seq: 4,
            op: 3
        })
    );
    assert!(!b.can_send());
    let e = b.on(1, Reply::End { count: 3 });
    assert_eq!((e.stored, e.resend), (vec![1, 2, 3], vec![]));
    assert!(b.can_send());
    assert_eq!(b.commit(), None, "nothing unconfirmed");
}

#[test]
fn an_end_that_never_comes_is_given_up() {
    let mut b = Batcher::default();
    b.send(5);
    b.commit();
    assert!(b.ending());
    let e = b.abandon();
    assert_eq!(e.resend, vec![5]);
    assert!(!b.ending() && b.can_send());
}

#[test]
fn replies_of_an_older_batch_change_nothing_but_confirmations() {
    let mut b = Batcher::default();
    b.send(1);
    b.on(
        1,
        Reply::Failed {
            seq: 1,
            code: 10208,
            description: "gone".into(),
        },
    );
    b.send(1);
    assert_eq!(b.on(1, Reply::End { count: 0 }), Effect::default());
    assert_eq!(b.unconfirmed(), 1);
}
