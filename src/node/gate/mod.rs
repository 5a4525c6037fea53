//! The gate a task passes before its handler runs: limits per kind and per
//! key (`fleet limit`), enforced across every node by permits in NATS.
//!
//! | a delivered task …                        | the gate …                                                   |
//! |-------------------------------------------|--------------------------------------------------------------|
//! | of a kind without a limit, a slot free    | lets it through at once (one atomic load without any limit)  |
//! | of a limited kind (or no slot free)       | holds it: no slot used, kept alive with progress acks        |
//! | held, its limit allows it now             | takes its permits (compare-and-set), a slot, and runs it     |
//! | held, its limit does not allow it         | leaves it where it is; tries again on a permit's release or expiry, a limit's change, a rate's next start, or after [`FALLBACK`] |
//! | arriving while the node holds its bound   | cannot: the node asks for no more than it can hold; one that comes anyway (a request from before a reconnect) is handed back |
//! | held when the node stops                  | handed back (nak), as tasks never started are                |
//!
//! A held task is neither failed nor retried: its delivery stays open, kept
//! alive by progress acks, so no attempt is used (a nak would count one).
//! Held tasks start in round-robin between their groups (kind and key,
//! [`held`]). Permits are leases: a node that dies loses them after the
//! group's `ack_wait` (see [`permits`]).

mod held;
mod permits;
mod view;
mod watch;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, AckKind, Context};
use bytes::Bytes;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info, warn};

use super::{lifecycle, Shared, Slots};
use crate::contract::{self, header};
use crate::control::check_key;
use crate::envelope::{route, Route};
use crate::limit::{lease_ttl, names, Limit};
use held::{Group, Held};
pub(crate) use permits::Lease;
use permits::Wrote;
use view::{Plan, View};

/// Longest a held task waits before the gate looks at it again without
/// any news (a watch that missed a change, a node's clock ahead).
const FALLBACK: Duration = Duration::from_secs(1);
/// Names the view keeps before it forgets the free ones.
const VIEW_FORGET_AT: usize = 10_000;

/// What the gate does with a delivered task.
pub(super) enum Pass {
    /// Run it now, in a slot of its own.
    Run(jetstream::Message),
    /// Held: the gate starts it.
    Held,
    /// The node holds all it may: hand it back.
    Full(jetstream::Message),
}

struct Inner {
    js: Context,
    node: String,
    lease: Duration,
    ack_wait: Duration,
    limits: RwLock<HashMap<String, Limit>>,
    any_limit: AtomicBool,
    view: Mutex<View>,
    held: Mutex<Held<jetstream::Message>>,
    held_count: AtomicUsize,
    wake: Notify,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The node's gate: cheap to clone.
#[derive(Clone)]
pub(super) struct Gate {
    inner: Arc<Inner>,
}

struct Limits(Arc<Inner>);
struct Permits(Arc<Inner>);

impl watch::Sink for Limits {
    fn reset(&self) {
        self.0
            .limits
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
    fn apply(&self, kind: &str, _rev: u64, value: Option<Bytes>) {
        let mut limits = self
            .0
            .limits
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match value.map(|v| Limit::from_json(&v)) {
            Some(Ok(limit)) => {
                info!(kind, %limit, "limit set");
                limits.insert(kind.to_string(), limit);
            }
            Some(Err(why)) => {
                warn!(kind, %why, "not a limit in {}: ignored", contract::LIMITS_BUCKET);
                limits.remove(kind);
            }
            None => {
                if limits.remove(kind).is_some() {
                    info!(kind, "limit removed");
                }
            }
        }
        self.0
            .any_limit
            .store(!limits.is_empty(), Ordering::Relaxed);
    }
    fn changed(&self) {
        self.0.wake.notify_one();
    }
}

impl watch::Sink for Permits {
    fn reset(&self) {
        lock(&self.0.view).clear();
    }
    fn apply(&self, name: &str, rev: u64, value: Option<Bytes>) {
        lock(&self.0.view).apply(name, rev, value);
    }
    fn changed(&self) {
        self.0.wake.notify_one();
    }
}

impl Gate {
    /// Reads the limits and permits (a few seconds at most), then follows
    /// both buckets. A node without them (no `fleet setup` yet, no
    /// permission) runs every task as if no limit were set, and says so.
    pub(super) async fn start(
        js: &Context,
        node: &str,
        ack_wait: Duration,
        concurrency: usize,
    ) -> Gate {
        let inner = Arc::new(Inner {
            js: js.clone(),
            node: node.to_string(),
            lease: lease_ttl(ack_wait),
            ack_wait,
            limits: RwLock::default(),
            any_limit: AtomicBool::new(false),
            view: Mutex::default(),
            held: Mutex::new(Held::new(held::bound(concurrency))),
            held_count: AtomicUsize::new(0),
            wake: Notify::new(),
            tasks: Mutex::default(),
        });
        let limits =
            watch::follow(js, contract::LIMITS_BUCKET, Arc::new(Limits(inner.clone()))).await;
        let permits = watch::follow(
            js,
            contract::PERMITS_BUCKET,
            Arc::new(Permits(inner.clone())),
        )
        .await;
        lock(&inner.tasks).extend([limits, permits]);
        Gate { inner }
    }

    /// Tasks held now.
    pub(super) fn held(&self) -> usize {
        self.inner.held_count.load(Ordering::Relaxed)
    }

    /// How many tasks to ask for with `free` slots: no more than it can hold.
    pub(super) fn askable(&self, free: usize) -> usize {
        free.min(lock(&self.inner.held).room())
    }

    /// What to do with a delivered task; `slot_free`: a slot is free for it.
    pub(super) fn pass(&self, msg: jetstream::Message, slot_free: bool) -> Pass {
        let inner = &self.inner;
        if slot_free && !inner.any_limit.load(Ordering::Relaxed) {
            return Pass::Run(msg);
        }
        let Route { tenant, kind, .. } = route(&msg.subject);
        let limited = inner
            .limits
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(kind);
        if slot_free && !limited {
            return Pass::Run(msg);
        }
        // A bad key fails its task (400) before any handler runs: no permit.
        let key = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(header::TASK_KEY))
            .map(|v| v.as_str())
            .filter(|k| check_key(k).is_ok())
            .map(|k| names::task_key(tenant, k));
        let group = Group {
            kind: kind.to_string(),
            key,
        };
        let mut held = lock(&inner.held);
        match held.push(group, msg) {
            Ok(()) => {
                inner.held_count.store(held.len(), Ordering::Relaxed);
                drop(held);
                inner.wake.notify_one();
                Pass::Held
            }
            Err(msg) if limited => Pass::Full(msg),
            Err(msg) => Pass::Run(msg),
        }
    }

    /// Starts the gate's own work: held tasks into free slots, and their
    /// progress acks.
    pub(super) fn drive(&self, shared: &Arc<Shared>, slots: &Slots) {
        let driver = tokio::spawn(drive(self.clone(), shared.clone(), slots.clone()));
        let keepalive = tokio::spawn(keep_alive(self.inner.clone()));
        lock(&self.inner.tasks).extend([driver, keepalive]);
    }

    /// Stops the gate and hands every held task back.
    pub(super) async fn stop(&self) {
        for task in lock(&self.inner.tasks).drain(..) {
            task.abort();
        }
        let held = lock(&self.inner.held).drain();
        self.inner.held_count.store(0, Ordering::Relaxed);
        if !held.is_empty() {
            info!(held = held.len(), "handing back the tasks held by limits");
        }
        for msg in held {
            if let Err(err) = msg.ack_with(AckKind::Nak(None)).await {
                warn!(%err, "could not hand a held task back; it returns after ack_wait");
            }
        }
    }

    /// Starts the first held task (in round-robin order) its limit allows:
    /// the task and its permits; else when to look again (`None`: on news).
    async fn start_one(&self) -> Result<(jetstream::Message, Option<Lease>), Option<Instant>> {
        let inner = &self.inner;
        let order = lock(&inner.held).order();
        let mut soonest: Option<u64> = None;
        for group in order {
            let limit = inner
                .limits
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&group.kind)
                .copied();
            let lease = match limit {
                None => None,
                Some(limit) => match self.take(&group, &limit).await {
                    Ok(lease) => lease,
                    Err(until) => {
                        soonest = match (soonest, until) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                        continue;
                    }
                },
            };
            let mut held = lock(&inner.held);
            let Some(msg) = held.take(&group) else {
                continue;
            };
            inner.held_count.store(held.len(), Ordering::Relaxed);
            return Ok((msg, lease));
        }
        let now = now_ms();
        Err(soonest.map(|ms| Instant::now() + Duration::from_millis(ms.saturating_sub(now))))
    }

    /// Takes the permits a task of `group` needs under `limit`: its lease
    /// (`None` when only rates limit it), or when to try again.
    async fn take(&self, group: &Group, limit: &Limit) -> Result<Option<Lease>, Option<u64>> {
        let inner = &self.inner;
        let value = Bytes::from(inner.node.clone());
        for _round in 0..2 {
            let plan = {
                let mut view = lock(&inner.view);
                if view.len() > VIEW_FORGET_AT {
                    view.forget_free(now_ms());
                }
                view.plan(&group.kind, group.key.as_deref(), limit, now_ms())
            };
            let writes = match plan {
                Plan::Wait(until) => return Err(until),
                Plan::Write(writes) => writes,
            };
            let mut leased = Vec::new();
            let mut refused = None;
            let mut complete = true;
            for w in &writes {
                let (payload, ttl) = match w.rate {
                    Some((next, ttl)) => (Bytes::from(next.to_string()), ttl),
                    None => (value.clone(), inner.lease),
                };
                match permits::write(&inner.js, &w.name, payload.clone(), ttl, w.expect).await {
                    Wrote::At(rev) => {
                        lock(&inner.view).apply(&w.name, rev, Some(payload));
                        if w.lease {
                            leased.push((w.name.clone(), rev));
                        }
                    }
                    Wrote::Moved => {
                        refused = Some(w.name.clone());
                        complete = false;
                        break;
                    }
                    Wrote::Failed => {
                        complete = false;
                        break;
                    }
                }
            }
            if complete {
                let lease = (!leased.is_empty())
                    .then(|| Lease::hold(&inner.js, leased, value.clone(), inner.lease));
                return Ok(lease);
            }
            for (name, rev) in leased {
                permits::release(&inner.js, &name, rev).await;
            }
            let Some(name) = refused else {
                // Not confirmed: the server or the permission is missing.
                return Err(Some(now_ms() + 1000));
            };
            debug!(name, "permit taken by another node; reading it again");
            if let Some((rev, value)) = permits::read(&inner.js, &name).await {
                lock(&inner.view).replace(&name, rev, value);
            }
        }
        Err(None)
    }
}

/// Whether a held task needs no turn: it was cancelled or its deadline
/// passed, so it ends (499, 408) without a permit.
fn ends_now(shared: &Shared, msg: &jetstream::Message) -> bool {
    let Some(headers) = &msg.headers else {
        return false;
    };
    let tenant = route(&msg.subject).tenant;
    let cancelled = headers
        .get(header::TASK_ID)
        .is_some_and(|id| shared.marks.is_marked(tenant, id.as_str()));
    cancelled
        || headers
            .get(header::TASK_DEADLINE)
            .and_then(|d| crate::control::parse_deadline(d.as_str()).ok())
            .is_some_and(|d| d <= SystemTime::now())
}

/// How often the gate looks through its held tasks for ones that end.
const ENDING_EVERY: Duration = Duration::from_millis(250);

async fn drive(gate: Gate, shared: Arc<Shared>, slots: Slots) {
    let released = &slots.released;
    let inner = gate.inner.clone();
    let mut again: Option<Instant> = None;
    let mut looked = Instant::now();
    loop {
        let fallback = Instant::now() + FALLBACK;
        let at = again.map_or(fallback, |a| a.min(fallback));
        tokio::select! {
            _ = inner.wake.notified() => {}
            _ = sleep_until(at) => {}
        }
        again = None;
        while !lock(&inner.held).is_empty() {
            let Ok(permit) = slots.free.clone().acquire_owned().await else {
                return;
            };
            let ending = if looked.elapsed() >= ENDING_EVERY {
                let found = lock(&inner.held).take_where(|m| ends_now(&shared, m));
                if found.is_none() {
                    looked = Instant::now();
                }
                found.map(|msg| (msg, None))
            } else {
                None
            };
            if let Some((msg, _)) = &ending {
                debug!(subject = %msg.subject, "a held task was cancelled or expired: it ends now");
            }
            let next = match ending {
                Some(found) => {
                    inner
                        .held_count
                        .store(lock(&inner.held).len(), Ordering::Relaxed);
                    Ok(found)
                }
                None => gate.start_one().await,
            };
            match next {
                Ok((msg, lease)) => {
                    let slot = slots.fill(permit, &msg.subject, lease);
                    // Room to hold another: the pull loop may ask again.
                    released.notify_one();
                    tokio::spawn(Box::pin(lifecycle::run(shared.clone(), msg, slot)));
                }
                Err(when) => {
                    drop(permit);
                    released.notify_one();
                    again = when;
                    break;
                }
            }
        }
    }
}

/// Keeps held deliveries open: a progress ack for each, three times per
/// `ack_wait`.
async fn keep_alive(inner: Arc<Inner>) {
    let every = (inner.ack_wait / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        let replies: Vec<_> = lock(&inner.held)
            .iter()
            .filter_map(|m| m.reply.clone())
            .collect();
        for reply in replies {
            if let Err(err) = inner
                .js
                .client()
                .publish(reply, Bytes::from_static(b"+WPI"))
                .await
            {
                debug!(%err, "progress ack of a held task not sent");
            }
        }
    }
}
