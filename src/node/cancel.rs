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
    /// Read from the tenant's own stream (`SCHEDULES_<t>`), not the bucket.
    own: bool,
    /// A whole batch (`batch.`) or one task (`task.`).
    batch: bool,
    /// The batch name or task id.
    name: String,
}

/// The mark a bucket key stands for; `None` for a key of no known shape.
pub(crate) fn parse_key(key: &str) -> Option<Mark> {
    let (tenant, rest) = contract::split_tenant(key);
    let (batch, name) = task_or_batch(rest)?;
    Some(Mark {
        tenant: tenant.unwrap_or_default().to_string(),
        own: false,
        batch,
        name: name.to_string(),
    })
}

/// `task.<id>` or `batch.<name>`: whether a batch, and its name.
fn task_or_batch(key: &str) -> Option<(bool, &str)> {
    let (batch, name) = match (key.strip_prefix(TASK_KEY), key.strip_prefix(BATCH_KEY)) {
        (Some(id), _) => (false, id),
        (_, Some(name)) => (true, name),
        _ => return None,
    };
    (!name.is_empty()).then_some((batch, name))
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
    Some(put_or_remove(parse_key(key)?, headers))
}

/// The subjects of `tenant`'s own marks in its stream:
/// `tenant.<t>.sched.cancel.` then a key.
pub(crate) fn own_prefix(tenant: &str) -> String {
    contract::in_tenant(Some(tenant), &contract::own_cancel_subject(""))
}

/// Reads a message of `tenant`'s own stream on [`own_prefix`]: a mark of
/// that tenant's tasks only, whatever the key says.
pub(crate) fn own_change(
    tenant: &str,
    subject: &str,
    headers: Option<&HeaderMap>,
) -> Option<Change> {
    let key = subject.strip_prefix(&own_prefix(tenant))?;
    let (batch, name) = task_or_batch(key)?;
    let mark = Mark {
        tenant: tenant.to_string(),
        own: true,
        batch,
        name: name.to_string(),
    };
    Some(put_or_remove(mark, headers))
}

fn put_or_remove(mark: Mark, headers: Option<&HeaderMap>) -> Change {
    let removed = headers.is_some_and(|h| {
        h.get(MARKER_REASON).is_some()
            || h.get(KV_OPERATION)
                .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"))
    });
    if removed {
        Change::Remove(mark)
    } else {
        Change::Put(mark)
    }
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

/// Every mark this node knows, by where it was read (the tenant's own
/// stream or not) and tenant (`""`: the fleet account).
type Scopes = HashMap<(bool, String), Scope>;

fn put(scopes: &mut Scopes, mark: Mark) {
    let scope = scopes.entry((mark.own, mark.tenant)).or_default();
    scope.set(mark.batch).insert(mark.name);
}

fn remove(scopes: &mut Scopes, mark: &Mark) {
    let key = (mark.own, mark.tenant.clone());
    if let Some(scope) = scopes.get_mut(&key) {
        scope.set(mark.batch).remove(&mark.name);
        if scope.tasks.is_empty() && scope.batches.is_empty() {
            scopes.remove(&key);
        }
    }
}

fn marked(scopes: &Scopes, tenant: Option<&str>, id: &str) -> bool {
    let tenant = tenant.unwrap_or_default();
    let in_scope = |own: bool| {
        scopes.get(&(own, tenant.to_string())).is_some_and(|scope| {
            scope.tasks.contains(id) || batch_of(id).is_some_and(|b| scope.batches.contains(b))
        })
    };
    in_scope(false) || (!tenant.is_empty() && in_scope(true))
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

    /// Replaces the marks read from one place with those of a fresh read
    /// of it: the bucket (`own` none), or tenant `own`'s stream.
    pub(crate) fn replace(&self, own: Option<&str>, marks: impl IntoIterator<Item = Mark>) {
        let mut scopes = self.scopes.write().unwrap_or_else(PoisonError::into_inner);
        match own {
            None => scopes.retain(|(own, _), _| *own),
            Some(tenant) => {
                scopes.remove(&(true, tenant.to_string()));
            }
        }
        for mark in marks {
            put(&mut scopes, mark);
        }
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
mod tests;
