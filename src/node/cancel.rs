//! Cancel marks, as a node sees them: the `fleet-cancel` bucket, watched
//! from its first key on, kept in memory, asked about every task.
//!
//! | a task …                                      | the node …                                               | ends with |
//! |-----------------------------------------------|----------------------------------------------------------|-----------|
//! | delivered while it or its batch is marked     | does not run it: error result 499, fenced as any result  | ack       |
//! | marked while its handler runs                 | drops the handler's future (exec: its process group is killed), 499 | ack |
//! | marked after its handler returned             | keeps its result: it finished before the cancel          | ack       |
//! | cancelled, whose result an earlier attempt kept | refused by the fence: the kept result stands           | ack       |
//! | cancelled, whose 499 could not be written     | hands it back after [`REWRITE_DELAY`]; it comes back marked | nak    |
//!
//! A 499 is never retried, never dead-lettered, and counted apart
//! (`outcome="cancelled"`).
//!
//! **Keys.** `task.<id>` marks one task; `batch.<name>` every task whose id
//! is `<name>.<n>` ([`batch_of`]: a name without a dot, then a dot, then
//! decimal digits: the ids `fleet submit --batch` gives); `tenant.<t>.task.<id>`
//! and `tenant.<t>.batch.<name>` the same for the tasks of tenant `t`, whose
//! ids are their own. Any put is a mark, whatever its value; a delete, a
//! purge or an expiry (the bucket's marker) takes it away.
//!
//! **Watching** (`cancel_watch.rs`). An ordered push consumer on the
//! bucket's stream, last value per key first: the node reads that snapshot
//! before it pulls a task, so a cancel issued while no node was up takes
//! effect on the first delivery. Then each change arrives as it is written
//! (a SIGSTOPped node reads them on SIGCONT). The consumer follows
//! reconnects by itself; if the watch breaks, it is opened again and the
//! snapshot re-read in place of the old.
//!
//! **Cost.** With no mark at all, asking is one atomic load. With marks, one
//! read lock and two hash lookups, without allocating.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};

use async_nats::HeaderMap;
use bytes::Bytes;
use tokio::sync::watch;
use tracing::{info, warn};

use super::commit::{self, Ctx};
use super::decide::{AckReply, Written, REWRITE_DELAY};
use crate::contract;
use crate::error::{FailureKind, TaskError};

/// Prefix of a one-task mark ([`contract::cancel_task_key`]).
const TASK_KEY: &str = "task.";
/// Prefix of a whole-batch mark ([`contract::cancel_batch_key`]).
const BATCH_KEY: &str = "batch.";
/// Header of a key-value delete or purge.
const KV_OPERATION: &str = "KV-Operation";
/// Header of the marker the server leaves when a key expires.
const MARKER_REASON: &str = "Nats-Marker-Reason";

/// The error a cancelled task ends with.
pub(super) fn cancelled() -> TaskError {
    TaskError::new(FailureKind::Cancelled, "cancelled")
}

/// The batch of a task id `<name>.<n>`: a name without a dot, then decimal
/// digits. Ids of other shapes (`a.b.1`, `nightly.x`, `7`) are in no batch.
pub(crate) fn batch_of(id: &str) -> Option<&str> {
    let (name, n) = id.split_once('.')?;
    let digits = !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
    (!name.is_empty() && digits).then_some(name)
}

/// One mark, as its key names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Mark {
    /// The tenant, empty for the fleet account's own tasks.
    tenant: String,
    /// A whole batch (`batch.`) or one task (`task.`).
    batch: bool,
    /// The batch name or task id.
    name: String,
}

/// The mark a bucket key stands for; `None` for a key of no known shape.
pub(crate) fn parse_key(key: &str) -> Option<Mark> {
    let (tenant, rest) = contract::split_tenant(key);
    let (batch, name) = match (rest.strip_prefix(TASK_KEY), rest.strip_prefix(BATCH_KEY)) {
        (Some(id), _) => (false, id),
        (_, Some(name)) => (true, name),
        _ => return None,
    };
    (!name.is_empty()).then(|| Mark {
        tenant: tenant.unwrap_or_default().to_string(),
        batch,
        name: name.to_string(),
    })
}

/// What one message of the bucket's stream does to the marks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// A put: marked.
    Put(Mark),
    /// A delete, a purge or an expiry: no longer marked.
    Remove(Mark),
}

/// Reads a message of the bucket's stream (subject `$KV.<bucket>.<key>`).
pub(crate) fn change(subject: &str, headers: Option<&HeaderMap>) -> Option<Change> {
    let key = subject.strip_prefix(&format!("$KV.{}.", contract::CANCEL_BUCKET))?;
    let mark = parse_key(key)?;
    let removed = headers.is_some_and(|h| {
        h.get(MARKER_REASON).is_some()
            || h.get(KV_OPERATION)
                .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"))
    });
    Some(if removed {
        Change::Remove(mark)
    } else {
        Change::Put(mark)
    })
}

/// The marks of one tenant (or of the fleet account).
#[derive(Debug, Default)]
struct Scope {
    tasks: HashSet<String>,
    batches: HashSet<String>,
}

impl Scope {
    fn set(&mut self, batch: bool) -> &mut HashSet<String> {
        if batch {
            &mut self.batches
        } else {
            &mut self.tasks
        }
    }
}

/// Every mark this node knows, by tenant (`""`: the fleet account).
type Scopes = HashMap<String, Scope>;

fn put(scopes: &mut Scopes, mark: Mark) {
    let scope = scopes.entry(mark.tenant).or_default();
    scope.set(mark.batch).insert(mark.name);
}

fn remove(scopes: &mut Scopes, mark: &Mark) {
    if let Some(scope) = scopes.get_mut(&mark.tenant) {
        scope.set(mark.batch).remove(&mark.name);
        if scope.tasks.is_empty() && scope.batches.is_empty() {
            scopes.remove(&mark.tenant);
        }
    }
}

fn marked(scopes: &Scopes, tenant: Option<&str>, id: &str) -> bool {
    scopes.get(tenant.unwrap_or_default()).is_some_and(|scope| {
        scope.tasks.contains(id) || batch_of(id).is_some_and(|b| scope.batches.contains(b))
    })
}

/// The cancel marks a node knows, shared by its tasks and its watch.
#[derive(Debug)]
pub(crate) struct Marks {
    /// Whether there is any mark at all: the whole cost of asking when not.
    any: AtomicBool,
    scopes: RwLock<Scopes>,
    /// Bumped on every new mark: running tasks look again.
    changed: watch::Sender<u64>,
}

impl Default for Marks {
    fn default() -> Self {
        Marks {
            any: AtomicBool::new(false),
            scopes: RwLock::default(),
            changed: watch::Sender::new(0),
        }
    }
}

impl Marks {
    /// Whether the task `id` of `tenant` (or its batch) is marked.
    pub(crate) fn is_marked(&self, tenant: Option<&str>, id: &str) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let scopes = self.scopes.read().unwrap_or_else(PoisonError::into_inner);
        marked(&scopes, tenant, id)
    }

    /// Completes once the task `id` of `tenant` is marked.
    pub(crate) async fn until_marked(&self, tenant: Option<&str>, id: &str) {
        let mut changed = self.changed.subscribe();
        loop {
            if self.is_marked(tenant, id) {
                return;
            }
            if changed.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Applies one change of the bucket.
    pub(crate) fn apply(&self, change: Change) {
        let mut scopes = self.scopes.write().unwrap_or_else(PoisonError::into_inner);
        let new = matches!(change, Change::Put(_));
        match change {
            Change::Put(mark) => put(&mut scopes, mark),
            Change::Remove(mark) => remove(&mut scopes, &mark),
        }
        self.any.store(!scopes.is_empty(), Ordering::Release);
        drop(scopes);
        if new {
            self.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Replaces every mark with those of a fresh read of the bucket.
    pub(crate) fn replace(&self, marks: impl IntoIterator<Item = Mark>) {
        let mut fresh = Scopes::new();
        for mark in marks {
            put(&mut fresh, mark);
        }
        let mut scopes = self.scopes.write().unwrap_or_else(PoisonError::into_inner);
        *scopes = fresh;
        self.any.store(!scopes.is_empty(), Ordering::Release);
        drop(scopes);
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// How many marks there are (for the log).
    pub(super) fn count(&self) -> usize {
        let scopes = self.scopes.read().unwrap_or_else(PoisonError::into_inner);
        scopes
            .values()
            .map(|s| s.tasks.len() + s.batches.len())
            .sum()
    }
}

/// What follows the 499 result of a cancelled task.
pub(crate) fn after_cancel(written: &Written) -> AckReply {
    match written {
        // An error result is a few headers: one the server still refuses
        // as too large can never be kept; the task is cancelled regardless.
        Written::Kept | Written::AlreadyKept | Written::TooLarge(_) => AckReply::Ack,
        Written::Failed(_) => AckReply::Nak(Some(REWRITE_DELAY)),
    }
}

/// Writes the 499 result of a cancelled task; returns how to end the delivery.
pub(super) async fn commit(ctx: &Ctx<'_>, err: &TaskError) -> AckReply {
    let written = commit::result(ctx, Bytes::new(), Some(err)).await;
    let ack = after_cancel(&written);
    if ack == AckReply::Ack {
        ctx.metrics.cancelled();
        info!(task = %ctx.envelope.id, kind = ctx.kind, attempt = ctx.delivery.attempt, "task cancelled");
    } else {
        warn!(task = %ctx.envelope.id, ?written, "could not keep the result of a cancelled task; it comes back");
    }
    ack
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn mark(tenant: &str, batch: bool, name: &str) -> Mark {
        Mark {
            tenant: tenant.into(),
            batch,
            name: name.into(),
        }
    }

    #[test]
    fn key_prefixes_are_the_contracts() {
        assert_eq!(contract::cancel_task_key("x"), format!("{TASK_KEY}x"));
        assert_eq!(contract::cancel_batch_key("x"), format!("{BATCH_KEY}x"));
    }

    #[test]
    fn batch_members_are_name_dot_number() {
        assert_eq!(batch_of("nightly.7"), Some("nightly"));
        assert_eq!(batch_of("nightly.0042"), Some("nightly"));
        for id in [
            "7",
            "nightly",
            "nightly.",
            ".7",
            "nightly.x",
            "nightly.7a",
            "a.b.1",
            "nightly.-1",
            "nightly.+1",
            "nightly. 1",
        ] {
            assert_eq!(batch_of(id), None, "{id}");
        }
        let id = contract::batch_task_id("b-1_x", 12);
        assert_eq!(batch_of(&id), Some("b-1_x"));
    }

    #[test]
    fn keys_name_a_task_or_a_batch_of_a_tenant() {
        assert_eq!(parse_key("task.b.1"), Some(mark("", false, "b.1")));
        assert_eq!(parse_key("batch.b"), Some(mark("", true, "b")));
        assert_eq!(
            parse_key("tenant.alice.task.b.1"),
            Some(mark("alice", false, "b.1"))
        );
        assert_eq!(
            parse_key("tenant.alice.batch.b"),
            Some(mark("alice", true, "b"))
        );
        // A fleet-account task whose id starts with "tenant." is its own.
        assert_eq!(
            parse_key("task.tenant.alice.1"),
            Some(mark("", false, "tenant.alice.1"))
        );
        for key in [
            "task.",
            "batch.",
            "tasks.x",
            "x",
            "",
            "tenant.alice.x.1",
            "tenant.alice",
        ] {
            assert_eq!(parse_key(key), None, "{key}");
        }
    }

    #[test]
    fn puts_mark_and_deletes_purges_and_expiries_unmark() {
        let subject = "$KV.fleet-cancel.task.b.1";
        let put = Change::Put(mark("", false, "b.1"));
        let gone = Change::Remove(mark("", false, "b.1"));
        assert_eq!(change(subject, None), Some(put.clone()));
        let with = |name: &str, value: &str| {
            let mut h = HeaderMap::new();
            h.insert(name, value);
            change(subject, Some(&h))
        };
        assert_eq!(with("KV-Operation", "DEL"), Some(gone.clone()));
        assert_eq!(with("KV-Operation", "PURGE"), Some(gone.clone()));
        assert_eq!(with("Nats-Marker-Reason", "MaxAge"), Some(gone));
        assert_eq!(with("KV-Operation", "PUT"), Some(put));
        assert_eq!(change("$KV.other.task.b.1", None), None);
        assert_eq!(change("$KV.fleet-cancel.junk", None), None);
    }

    #[test]
    fn a_task_is_marked_by_its_id_or_its_batch_within_its_tenant() {
        let marks = Marks::default();
        assert!(!marks.is_marked(None, "b.1"));
        marks.apply(Change::Put(mark("", false, "solo")));
        marks.apply(Change::Put(mark("", true, "night")));
        marks.apply(Change::Put(mark("alice", false, "b.1")));
        assert!(marks.is_marked(None, "solo"));
        assert!(marks.is_marked(None, "night.3"));
        assert!(!marks.is_marked(None, "night.x"));
        assert!(!marks.is_marked(None, "nightly.3"));
        assert!(!marks.is_marked(None, "b.1"), "alice's mark is hers");
        assert!(marks.is_marked(Some("alice"), "b.1"));
        assert!(
            !marks.is_marked(Some("alice"), "solo"),
            "the fleet's mark is not alice's"
        );
        assert!(!marks.is_marked(Some("bob"), "b.1"));
        marks.apply(Change::Remove(mark("", true, "night")));
        assert!(!marks.is_marked(None, "night.3"));
        marks.apply(Change::Remove(mark("", false, "solo")));
        marks.apply(Change::Remove(mark("alice", false, "b.1")));
        assert!(
            !marks.any.load(Ordering::Relaxed),
            "no marks left: asking is free again"
        );
        marks.apply(Change::Remove(mark("", false, "never")));
        assert!(!marks.any.load(Ordering::Relaxed));
    }

    #[test]
    fn a_fresh_read_replaces_every_mark() {
        let marks = Marks::default();
        marks.apply(Change::Put(mark("", false, "old")));
        marks.replace([mark("", false, "new")]);
        assert!(!marks.is_marked(None, "old"));
        assert!(marks.is_marked(None, "new"));
        marks.replace([]);
        assert!(!marks.any.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn a_running_task_learns_of_its_mark() {
        let marks = Arc::new(Marks::default());
        let waiting = {
            let marks = marks.clone();
            tokio::spawn(async move { marks.until_marked(None, "b.2").await })
        };
        tokio::task::yield_now().await;
        marks.apply(Change::Put(mark("", false, "b.1")));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "another task's mark");
        marks.apply(Change::Put(mark("", true, "b")));
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("woken by its batch's mark")
            .unwrap();
    }

    #[test]
    fn a_cancelled_task_is_acked_once_its_result_is_kept_or_refused() {
        assert_eq!(after_cancel(&Written::Kept), AckReply::Ack);
        assert_eq!(after_cancel(&Written::AlreadyKept), AckReply::Ack);
        assert_eq!(after_cancel(&Written::TooLarge("x".into())), AckReply::Ack);
        assert_eq!(
            after_cancel(&Written::Failed("timeout".into())),
            AckReply::Nak(Some(REWRITE_DELAY))
        );
        let err = cancelled();
        assert_eq!((err.code(), err.is_retryable()), (499, false));
    }
}
