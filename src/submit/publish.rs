//! Sending tasks: their headers, their reply subjects for the batch
//! protocol of [`super::fast`], and reading the server's replies.

use async_nats::{Client, HeaderMap, Message, Subject};
use bytes::Bytes;

use super::fast;
use super::wire::{self, Reply, Slot, Wire};
use crate::contract::{self, header};
use crate::error::{Error, ErrorKind, ResultExt};

/// One task, kept until JetStream confirms it (it may have to go again).
#[derive(Debug, Clone)]
pub(super) struct Task {
    pub(super) id: String,
    /// Where its result goes, as this submitter subscribed to it.
    pub(super) reply: String,
    pub(super) timeout: Option<String>,
    pub(super) payload: Bytes,
    /// `Nats-Msg-Id`, for a named batch (resuming it must not enqueue a task
    /// twice); none otherwise: a task is only ever sent again when the
    /// server said it did not store it, and a result is fenced anyway.
    pub(super) msg_id: Option<String>,
    /// Headers of its controls ([`super::control::headers`]).
    pub(super) extra: Vec<(&'static str, String)>,
}

impl Task {
    /// The task's headers: its id, its reply subject when it is not the
    /// default one for its id, its timeout, its de-duplication id.
    pub(super) fn headers(&self) -> HeaderMap {
        // Names made without copying (`header::name`): one task each.
        let mut headers = HeaderMap::new();
        headers.insert(header::name(header::TASK_ID), self.id.as_str());
        if !is_default_reply(&self.reply, &self.id) {
            headers.insert(header::name(header::REPLY_TO), self.reply.as_str());
        }
        if let Some(timeout) = &self.timeout {
            headers.insert(header::name(header::TASK_TIMEOUT), timeout.as_str());
        }
        if let Some(id) = &self.msg_id {
            headers.insert(header::name(header::MSG_ID), id.as_str());
        }
        for (name, value) in &self.extra {
            headers.insert(header::name(name), value.as_str());
        }
        headers
    }
}

/// Whether `reply` is `results.<id>`, the reply a task of that id gets
/// without a `Reply-To` (checked without formatting it).
fn is_default_reply(reply: &str, id: &str) -> bool {
    reply
        .strip_prefix(contract::RESULT_PREFIX)
        .is_some_and(|rest| rest == id)
}

/// Sends tasks with replies on one inbox of this submitter's.
pub(super) struct Sender {
    client: Client,
    wire: Wire,
    subject: Subject,
}

impl Sender {
    /// A sender of tasks to `subject`; subscribe to [`Sender::replies`].
    pub(super) fn new(client: Client, subject: Subject) -> Self {
        let wire = Wire::new(client.new_inbox());
        Sender {
            client,
            wire,
            subject,
        }
    }

    /// The subject the replies come on.
    pub(super) fn replies(&self) -> String {
        self.wire.replies()
    }

    /// Sends `task` as the message `slot`.
    pub(super) async fn send(&self, task: &Task, slot: Slot, single: bool) -> Result<(), Error> {
        self.client
            .publish_with_reply_and_headers(
                self.subject.clone(),
                self.wire.reply_subject(slot, single),
                task.headers(),
                task.payload.clone(),
            )
            .await
            .or_fail(ErrorKind::Connection, || "publishing a task".into())
    }

    /// Sends the message that commits batch `slot.batch` without storing
    /// anything.
    pub(super) async fn commit(&self, slot: Slot) -> Result<(), Error> {
        self.client
            .publish_with_reply(
                self.subject.clone(),
                self.wire.reply_subject(slot, false),
                Bytes::new(),
            )
            .await
            .or_fail(ErrorKind::Connection, || "closing a batch".into())
    }

    /// Reads one reply (see [`Wire::read`]).
    pub(super) fn read(&self, msg: &Message) -> Option<(u64, Reply)> {
        self.wire.read(msg)
    }
}

/// Whether a refusal may pass if the task is sent again later (a full
/// queue drains; a leader is elected); a payload too large never does.
pub(super) fn transient(code: u64, description: &str) -> bool {
    !(code == wire::TOO_LARGE
        || description.contains("maximum payload")
        || description.contains("message size exceeds"))
}

/// Why JetStream refused a task, in the words a submitter acts on.
pub(super) fn refusal(description: &str) -> String {
    if description.contains("maximum messages") || description.contains("maximum bytes") {
        format!(
            "the queue is full ({} is at its max_msgs or max_bytes; see fleet status): {description}",
            contract::TASKS_STREAM
        )
    } else {
        description.to_string()
    }
}

/// What the outbox learned from a reply.
#[derive(Debug, Default)]
pub(super) struct Heard {
    /// Tasks JetStream stored.
    pub(super) stored: Vec<u64>,
    /// Tasks it will not store: number and why.
    pub(super) refused: Vec<(u64, String)>,
    /// No stream takes the tasks.
    pub(super) no_stream: bool,
}

/// Tasks on their way into `TASKS`: sent in fast batches, kept until
/// confirmed, sent again when the server says they were not stored, given
/// up (refused) when a refusal cannot pass or their deadline is over.
pub(super) struct Outbox {
    sender: Sender,
    batcher: fast::Batcher,
    /// Tasks sent and not confirmed.
    pending: std::collections::HashMap<u64, Pending>,
    /// Why a pending task was last refused (it is being tried again).
    refusals: std::collections::HashMap<u64, String>,
    /// Tasks refused for a reason that may pass, and when to try again.
    retry: std::collections::VecDeque<(tokio::time::Instant, u64)>,
    /// Tasks that came while a batch's end was awaited: they go out once
    /// it has come (or the batch was given up).
    held: std::collections::VecDeque<u64>,
    last_send: tokio::time::Instant,
    /// Since when a batch's end is awaited.
    ending_since: Option<tokio::time::Instant>,
    timeout: std::time::Duration,
}

/// A task sent and not yet confirmed.
struct Pending {
    task: Task,
    /// When it was first sent: it is given up at `timeout` after this.
    first: tokio::time::Instant,
    /// When it was last sent.
    last: tokio::time::Instant,
    /// How many times it was sent.
    sends: u32,
}

/// How long to wait before a task refused for a reason that may pass goes again.
const AGAIN_AFTER: std::time::Duration = std::time::Duration::from_millis(250);
/// How long the outbox waits, idle, before it has the server confirm the
/// tail of a batch (tasks are acked every [`wire::FLOW`]).
const CONFIRM_AFTER: std::time::Duration = std::time::Duration::from_millis(100);
/// How long a batch's end may take before the batch counts as lost.
const END_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

impl Outbox {
    /// An outbox for `subject`; a task not stored within `timeout` of its
    /// first send is given up.
    pub(super) fn new(client: Client, subject: Subject, timeout: std::time::Duration) -> Self {
        Outbox {
            sender: Sender::new(client, subject),
            batcher: fast::Batcher::default(),
            pending: std::collections::HashMap::new(),
            refusals: std::collections::HashMap::new(),
            retry: std::collections::VecDeque::new(),
            held: std::collections::VecDeque::new(),
            last_send: tokio::time::Instant::now(),
            ending_since: None,
            timeout,
        }
    }

    /// The subject replies come on (subscribe before the first send).
    pub(super) fn replies(&self) -> String {
        self.sender.replies()
    }

    /// Whether another task may go out now.
    pub(super) fn ready(&self) -> bool {
        self.batcher.can_send()
    }

    /// Sends task `n`, or holds it while a batch's end is awaited.
    pub(super) async fn send(&mut self, n: u64, task: Task) -> Result<(), Error> {
        let now = tokio::time::Instant::now();
        let (first, sends) = self
            .pending
            .get(&n)
            .map_or((now, 0), |p| (p.first, p.sends));
        if self.batcher.ending() {
            // A new batch now would number its messages from 1 again, over
            // the sequences that still name the ending batch's unconfirmed
            // tasks: those would be forgotten, neither confirmed nor sent
            // again. (A named batch's task whose lookup finished then did
            // so, and kept 8 tasks of the mixed fault run unconfirmed until
            // `--timeout`.)
            self.pending.insert(
                n,
                Pending {
                    task,
                    first,
                    last: now,
                    sends,
                },
            );
            self.held.push_back(n);
            return Ok(());
        }
        let slot = self.batcher.send(n);
        self.sender.send(&task, slot, self.batcher.single()).await?;
        self.pending.insert(
            n,
            Pending {
                task,
                first,
                last: now,
                sends: sends + 1,
            },
        );
        self.last_send = now;
        Ok(())
    }

    async fn resend(&mut self, numbers: Vec<u64>) -> Result<(), Error> {
        for n in numbers {
            if let Some(task) = self.pending.get(&n).map(|p| p.task.clone()) {
                self.send(n, task).await?;
            }
        }
        Ok(())
    }

    /// Reads a reply (anything on [`Outbox::replies`]).
    pub(super) async fn on_reply(&mut self, msg: &Message) -> Result<Heard, Error> {
        let mut heard = Heard::default();
        let Some((batch, reply)) = self.sender.read(msg) else {
            tracing::debug!(subject = %msg.subject, payload = ?msg.payload, "unreadable reply");
            return Ok(heard);
        };
        tracing::trace!(batch, ?reply, "reply");
        let batching = !self.batcher.single();
        let effect = self.batcher.on(batch, reply);
        if batching && self.batcher.single() {
            tracing::debug!(
                batch,
                "a task was answered on its own: batching is off for this run"
            );
        }
        // The end is awaited from the moment the batch is known to be
        // ending: after our commit (`tick`), or after a refusal or a gap the
        // server reported, whose final PubAck can be lost with the
        // connection as well. (Only the commit started the clock before, and
        // a batch whose gap came but whose end never did held every task
        // until `--timeout`: `tests/latency.rs` failed so, 8 tasks of 800.)
        self.ending_since = match self.batcher.ending() {
            true => Some(self.ending_since.unwrap_or_else(tokio::time::Instant::now)),
            false => None,
        };
        // A task sent twice may be confirmed twice: it is stored once.
        let mut stored = effect.stored;
        stored.retain(|n| self.pending.remove(n).is_some());
        for n in &stored {
            self.refusals.remove(n);
        }
        heard.stored = stored;
        heard.no_stream = effect.no_stream;
        let mut resend = effect.resend;
        if let Some((n, code, description)) = effect.refused {
            let expired = self
                .pending
                .get(&n)
                .is_none_or(|p| p.first.elapsed() >= self.timeout);
            resend.retain(|r| *r != n);
            if transient(code, &description) && !expired {
                self.retry
                    .push_back((tokio::time::Instant::now() + AGAIN_AFTER, n));
                self.refusals.insert(n, refusal(&description));
            } else {
                self.pending.remove(&n);
                self.refusals.remove(&n);
                heard.refused.push((n, refusal(&description)));
            }
        }
        self.resend(resend).await?;
        self.send_held().await?;
        Ok(heard)
    }

    /// Sends the tasks held while a batch ended, once it has.
    async fn send_held(&mut self) -> Result<(), Error> {
        while !self.batcher.ending() {
            let Some(n) = self.held.pop_front() else {
                break;
            };
            if let Some(task) = self.pending.get(&n).map(|p| p.task.clone()) {
                self.send(n, task).await?;
            }
        }
        Ok(())
    }

    /// Sends what is due again; has the server confirm an idle batch's
    /// tail; gives up a batch whose end never came, and tasks unconfirmed
    /// past their deadline.
    pub(super) async fn tick(&mut self) -> Result<Heard, Error> {
        let now = tokio::time::Instant::now();
        let mut heard = Heard::default();
        let overdue: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.first) >= self.timeout)
            .map(|(n, _)| *n)
            .collect();
        for n in overdue {
            let sends = self.pending.remove(&n).map_or(0, |p| p.sends);
            // Said in full: which way it was sent and how often tells a
            // lost confirmation from a batch that never ended.
            let how = format!(
                "sent {sends} time(s), {}{}",
                if self.batcher.single() {
                    "each message alone"
                } else {
                    "in fast batches"
                },
                if self.batcher.ending() {
                    ", a batch's end awaited"
                } else {
                    ""
                }
            );
            let why = match self.refusals.remove(&n) {
                Some(refused) => format!("{refused} ({how})"),
                None => format!(
                    "JetStream did not confirm it within {} ({how})",
                    humantime::format_duration(self.timeout)
                ),
            };
            heard.refused.push((n, why));
        }
        while self.retry.front().is_some_and(|(at, _)| *at <= now) && self.batcher.can_send() {
            let (_, n) = self.retry.pop_front().expect("checked");
            if let Some(task) = self.pending.get(&n).map(|p| p.task.clone()) {
                // Sent again: its old slot, if any, is no longer awaited.
                self.send(n, task).await?;
            }
        }
        if self.batcher.single() {
            self.resend_unanswered(now).await?;
        }
        if let Some(since) = self.ending_since {
            if now.duration_since(since) >= END_WITHIN {
                let effect = self.batcher.abandon();
                self.ending_since = None;
                self.resend(effect.resend).await?;
                self.send_held().await?;
            }
        } else if now.duration_since(self.last_send) >= CONFIRM_AFTER {
            if let Some(slot) = self.batcher.commit() {
                self.sender.commit(slot).await?;
                self.ending_since = Some(now);
            }
        }
        Ok(heard)
    }

    /// Standing alone, a message has no batch end to wait for: one whose
    /// PubAck has not come within [`END_WITHIN`] (lost with a server or a
    /// connection) goes again, and the PubAck of either copy confirms it.
    /// (Dropping the old copy's sequence instead kept a task unconfirmed
    /// for minutes through a link that stalled every few seconds: each
    /// copy's PubAck came after the next copy had replaced it.)
    async fn resend_unanswered(&mut self, now: tokio::time::Instant) -> Result<(), Error> {
        let mut unanswered: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.last) >= END_WITHIN)
            .map(|(n, _)| *n)
            .filter(|n| !self.retry.iter().any(|(_, r)| r == n) && !self.held.contains(n))
            .collect();
        if unanswered.is_empty() {
            return Ok(());
        }
        unanswered.sort_unstable();
        tracing::debug!(
            tasks = unanswered.len(),
            "no PubAck within {END_WITHIN:?}: sent again"
        );
        self.resend(unanswered).await
    }

    /// Drops task `n` (it ended another way: a result came).
    pub(super) fn forget(&mut self, n: u64) {
        self.pending.remove(&n);
        self.refusals.remove(&n);
    }
}

#[cfg(test)]
mod tests;
