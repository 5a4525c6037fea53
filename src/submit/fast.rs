//! Fast batch publishing (ADR-50, nats-server 2.14+) of tasks, as plain
//! values: which task went out as which message of which batch, and what
//! each reply from the server ([`super::wire`]) means for them.
//!
//! In `fail` mode a refused message or a gap ends the batch, and its final
//! PubAck's `count` is the stored prefix: the rest was not stored and is
//! sent again in a new batch.
//!
//! A plain PubAck comes when the server does not see the batch (a tenant's
//! publish crosses a service import, which gives it a reply subject of its
//! own) or the stream refuses batches: from then on each message stands
//! alone, confirmed by its own PubAck.

use std::collections::BTreeMap;

use super::wire::{Reply, Slot, BATCH_NOT_ALLOWED, BATCH_UNKNOWN, FLOW};

/// What a reply means for the messages of a batch.
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

impl Batcher {
    /// Whether another task may go out now: the server has acked enough of
    /// what was sent (at most two flows ahead), and no batch is ending.
    pub(crate) fn can_send(&self) -> bool {
        self.ending.is_none()
            && (self.single || self.open.is_none() || self.next_seq <= self.acked + 2 * self.flow)
    }

    /// Task `n` goes out: in which batch, as which message. Not while a
    /// batch is [`Batcher::ending`]: a new batch numbers its messages from
    /// 1 again, and would take the numbers that still name the ending
    /// batch's unconfirmed tasks (the outbox holds tasks until its end).
    pub(crate) fn send(&mut self, n: u64) -> Slot {
        let (batch, op) = match self.open {
            // Standing alone, messages keep counting up: a sequence names
            // one unconfirmed message.
            _ if self.single => (0, 0),
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
            // The first of these turns batching off; the rest are the same
            // answer to the other messages of that batch, already sent again.
            Reply::Failed { code, .. } if code == BATCH_NOT_ALLOWED => {
                if !self.single {
                    self.single = true;
                    self.resend_all(&mut effect);
                }
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
mod tests;
