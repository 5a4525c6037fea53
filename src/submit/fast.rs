//! Fast batch publishing (ADR-50, nats-server 2.14+), as plain values: which
//! task went out as which message of which batch, and what each reply from
//! the server means for them. `mod.rs` sends and receives; this decides.
//!
//! A task is published with a reply subject that carries the protocol:
//! `<inbox>.<batch>.<flow>.fail.<seq>.<op>.$FI` (op 0 starts a batch, 1
//! appends, 3 commits without storing). The server answers with one flow
//! ack per `flow` stored messages (`{"type":"ack","seq":k}`: messages 1..k
//! are stored), instead of a PubAck per task. In `fail` mode a refused
//! message or a gap ends the batch, and its final PubAck's `count` is the
//! stored prefix: the rest was not stored and is sent again in a new batch.
//!
//! | reply                                  | what it means                                  |
//! |----------------------------------------|------------------------------------------------|
//! | `{"type":"ack","seq":k,"msgs":f}`      | 1..k stored; the server's flow is now `f`      |
//! | `{"type":"err","seq":k,"error":…}`     | k refused (the batch ends: a PubAck follows)   |
//! | `{"type":"gap",…}`                     | messages lost on the way (the batch ends)      |
//! | PubAck with `count` c                  | batch over: 1..c stored, the rest sent again   |
//! | PubAck without `count`                 | that one message stored: no batching here      |
//! | PubAck error 10205                     | the stream does not take batches               |
//! | any other PubAck error                 | the batch is gone: the unconfirmed sent again  |
//! | status 503 (no responders)             | no stream takes the subject                    |
//!
//! A plain PubAck comes when the server does not see the batch (a tenant's
//! publish crosses a service import, which gives it a reply subject of its
//! own) or the stream refuses batches: from then on each message stands
//! alone, confirmed by its own PubAck.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The flow this submitter asks for: a flow ack every this many messages.
pub(crate) const FLOW: u64 = 256;

/// `err_code` of "this stream does not allow batch publishing".
const BATCH_NOT_ALLOWED: u64 = 10205;
/// `err_code` of "batch publish ID unknown": the batch ended or timed out.
const BATCH_UNKNOWN: u64 = 10208;

/// One reply from the server, as read from its subject and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// Messages 1..`seq` of the batch are stored.
    Ack { seq: u64, flow: u64 },
    /// Message `seq` was refused.
    Refused {
        seq: u64,
        code: u64,
        description: String,
    },
    /// Messages went missing between client and server.
    Gap,
    /// The batch is over: messages 1..`count` are stored.
    End { count: u64 },
    /// The message this reply is addressed to is stored (a plain PubAck).
    Stored { seq: u64 },
    /// The server refused the batch as a whole (a PubAck error).
    Failed {
        seq: u64,
        code: u64,
        description: String,
    },
    /// No stream takes the subject.
    NoStream,
}

#[derive(Deserialize)]
struct Wire {
    #[serde(rename = "type")]
    kind: Option<String>,
    seq: Option<u64>,
    msgs: Option<u64>,
    count: Option<u64>,
    stream: Option<String>,
    error: Option<WireError>,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

/// The batch sequence a reply subject `…<seq>.<op>.$FI` is addressed to.
pub(crate) fn subject_seq(subject: &str) -> Option<u64> {
    let mut tokens = subject.rsplit('.');
    (tokens.next()? == "$FI").then_some(())?;
    let _op = tokens.next()?;
    tokens.next()?.parse().ok()
}

/// Reads one reply addressed to message `seq`; `no_responders` when it is
/// the server's 503 status. `None` for what is none of these.
pub(crate) fn parse(seq: u64, no_responders: bool, payload: &[u8]) -> Option<Reply> {
    if no_responders {
        return Some(Reply::NoStream);
    }
    let wire: Wire = serde_json::from_slice(payload).ok()?;
    let error = |e: WireError| (e.err_code, e.description);
    Some(match (wire.kind.as_deref(), wire.error) {
        (Some("ack"), _) => Reply::Ack {
            seq: wire.seq?,
            flow: wire.msgs.unwrap_or(FLOW),
        },
        (Some("err"), Some(e)) => {
            let (code, description) = error(e);
            Reply::Refused {
                seq: wire.seq?,
                code,
                description,
            }
        }
        (Some("gap"), _) => Reply::Gap,
        (None, Some(e)) => {
            let (code, description) = error(e);
            Reply::Failed {
                seq,
                code,
                description,
            }
        }
        (None, None) if wire.stream.is_some() => match wire.count {
            Some(count) => Reply::End { count },
            None => Reply::Stored { seq },
        },
        _ => return None,
    })
}

/// What a reply means for the tasks of a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Effect {
    /// Tasks now known stored.
    pub(crate) stored: Vec<u64>,
    /// Tasks not stored, to send again (a new batch starts).
    pub(crate) resend: Vec<u64>,
    /// A task refused, with why (it is in `resend` too when its refusal
    /// may pass; the caller decides).
    pub(crate) refused: Option<(u64, u64, String)>,
    /// No stream takes the tasks.
    pub(crate) no_stream: bool,
}

/// The batch being sent, and the tasks sent in it not yet known stored.
#[derive(Debug, Clone)]
pub(crate) struct Batcher {
    /// How many batches were started (names the next one).
    started: u64,
    /// The open batch's number, or none.
    open: Option<u64>,
    next_seq: u64,
    acked: u64,
    flow: u64,
    /// Batch sequence to task number, of tasks sent and not yet confirmed.
    unconfirmed: BTreeMap<u64, u64>,
    /// Each message stands alone (plain PubAcks).
    single: bool,
    /// A refusal was read; the PubAck that ends the batch is awaited.
    ending: Option<(u64, u64, String)>,
}

impl Default for Batcher {
    fn default() -> Self {
        Batcher {
            started: 0,
            open: None,
            next_seq: 1,
            acked: 0,
            flow: FLOW,
            unconfirmed: BTreeMap::new(),
            single: false,
            ending: None,
        }
    }
}

/// Where one message goes out: its batch, its sequence in it, its op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    /// The batch's number (names it).
    pub(crate) batch: u64,
    /// Its sequence in the batch.
    pub(crate) seq: u64,
    /// 0 start, 1 append, 3 commit without storing.
    pub(crate) op: u8,
}

impl Batcher {
    /// Whether another task may go out now: the server has acked enough of
    /// what was sent (at most two flows ahead), and no batch is ending.
    pub(crate) fn can_send(&self) -> bool {
        self.ending.is_none()
            && (self.single || self.open.is_none() || self.next_seq <= self.acked + 2 * self.flow)
    }

    /// Task `n` goes out: in which batch, as which message.
    pub(crate) fn send(&mut self, n: u64) -> Slot {
        let (batch, op) = match self.open {
            Some(batch) => (batch, 1),
            None => {
                self.started += 1;
                self.open = Some(self.started);
                self.next_seq = 1;
                self.acked = 0;
                (self.started, 0)
            }
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.unconfirmed.insert(seq, n);
        Slot { batch, seq, op }
    }

    /// The message that closes the open batch without storing anything,
    /// so that the server confirms what it holds; `None` when nothing is
    /// open or unconfirmed.
    pub(crate) fn commit(&mut self) -> Option<Slot> {
        if self.single || self.unconfirmed.is_empty() || self.ending.is_some() {
            return None;
        }
        let batch = self.open.take()?;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.ending = Some((0, 0, String::new()));
        Some(Slot { batch, seq, op: 3 })
    }

    /// Gives up on the open batch (its end never came: the connection was
    /// lost, the batch timed out): everything unconfirmed is sent again.
    pub(crate) fn abandon(&mut self) -> Effect {
        let mut effect = Effect::default();
        self.resend_all(&mut effect);
        effect
    }

    /// Whether a batch's end is awaited.
    pub(crate) fn ending(&self) -> bool {
        self.ending.is_some()
    }

    /// Tasks sent and not yet confirmed.
    #[cfg(test)]
    pub(crate) fn unconfirmed(&self) -> usize {
        self.unconfirmed.len()
    }

    /// Whether each message stands alone (batching is off here).
    pub(crate) fn single(&self) -> bool {
        self.single
    }

    fn confirm_through(&mut self, seq: u64, effect: &mut Effect) {
        let rest = self.unconfirmed.split_off(&(seq + 1));
        effect
            .stored
            .extend(std::mem::replace(&mut self.unconfirmed, rest).into_values());
    }

    fn resend_all(&mut self, effect: &mut Effect) {
        effect
            .resend
            .extend(std::mem::take(&mut self.unconfirmed).into_values());
        self.open = None;
        self.ending = None;
    }

    /// What a reply of batch `batch` means. Replies of a batch that is no
    /// longer the latest confirm what they can and change nothing else.
    pub(crate) fn on(&mut self, batch: u64, reply: Reply) -> Effect {
        let mut effect = Effect::default();
        let current = batch == self.started;
        match reply {
            Reply::NoStream => effect.no_stream = true,
            Reply::Stored { seq } => {
                if let Some(n) = self.unconfirmed.remove(&seq) {
                    effect.stored.push(n);
                }
                // The server answers each message on its own: stop batching.
                self.single = true;
                self.open = None;
            }
            Reply::Ack { seq, flow } if current => {
                self.acked = self.acked.max(seq);
                self.flow = flow.max(1);
                self.confirm_through(seq, &mut effect);
            }
            Reply::Ack { .. } => {}
            Reply::Refused {
                seq,
                code,
                description,
            } if current => {
                let n = self.unconfirmed.get(&seq).copied().unwrap_or_default();
                self.ending = Some((n, code, description));
            }
            Reply::Refused { .. } => {}
            Reply::Gap if current => {
                self.ending.get_or_insert((0, 0, String::new()));
            }
            Reply::Gap => {}
            Reply::End { count } if current => {
                self.confirm_through(count, &mut effect);
                if let Some((n, code, description)) = self.ending.take() {
                    if n != 0 {
                        effect.refused = Some((n, code, description));
                    }
                }
                self.resend_all(&mut effect);
            }
            Reply::End { .. } => {}
            Reply::Failed { code, .. } if code == BATCH_NOT_ALLOWED => {
                self.single = true;
                self.resend_all(&mut effect);
            }
            Reply::Failed {
                seq,
                code,
                description,
            } if self.single => {
                if let Some(n) = self.unconfirmed.remove(&seq) {
                    effect.refused = Some((n, code, description));
                    effect.resend.push(n);
                }
            }
            Reply::Failed { code, .. } if code == BATCH_UNKNOWN && current => {
                self.resend_all(&mut effect)
            }
            // The first message refused: the batch is over before it began.
            Reply::Failed {
                seq,
                code,
                description,
            } if current => {
                if let Some(n) = self.unconfirmed.get(&seq).copied() {
                    effect.refused = Some((n, code, description));
                }
                self.resend_all(&mut effect);
            }
            Reply::Failed { .. } => {}
        }
        effect
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(json: &str) -> Reply {
        parse(7, false, json.as_bytes()).unwrap()
    }

    #[test]
    fn replies_are_read_as_the_server_writes_them() {
        assert_eq!(
            reply(r#"{"type":"ack","seq":20,"msgs":10}"#),
            Reply::Ack { seq: 20, flow: 10 }
        );
        assert_eq!(
            reply(
                r#"{"type":"err","seq":2,"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 58"}}"#
            ),
            Reply::Refused {
                seq: 2,
                code: 10071,
                description: "wrong last sequence: 58".into()
            }
        );
        assert_eq!(reply(r#"{"type":"gap","last_seq":3,"seq":5}"#), Reply::Gap);
        assert_eq!(
            reply(r#"{"stream":"TASKS","seq":63,"batch":"35dd","count":5}"#),
            Reply::End { count: 5 }
        );
        assert_eq!(
            reply(r#"{"stream":"TASKS","seq":63}"#),
            Reply::Stored { seq: 7 }
        );
        assert_eq!(
            reply(
                r#"{"error":{"code":400,"err_code":10205,"description":"batch publish is disabled"},"stream":"TASKS","seq":0}"#
            ),
            Reply::Failed {
                seq: 7,
                code: 10205,
                description: "batch publish is disabled".into()
            }
        );
        assert_eq!(parse(1, true, b""), Some(Reply::NoStream));
        assert_eq!(parse(1, false, b"not json"), None);
    }

    #[test]
    fn the_sequence_is_read_from_the_reply_subject() {
        assert_eq!(subject_seq("_INBOX.abc.3.256.fail.42.1.$FI"), Some(42));
        assert_eq!(subject_seq("_INBOX.abc.1"), None);
    }

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
        b.send(1);
        let e = b.on(2, Reply::Stored { seq: 1 });
        assert_eq!(e.stored, vec![1]);
        assert!(b.can_send());
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
}
