//! The node: pulls tasks for its free slots, runs each in its own tokio task
//! (see [`lifecycle`]), and drains on shutdown.
//!
//! Pulling: the node sends JetStream pull requests on one inbox of its own and
//! never asks for more tasks than it has free slots, so a busy node never sits
//! on tasks an idle one could run. `credits` counts what was asked for and not
//! yet delivered; a request that ends short tells how many it did not deliver.
//!
//! Shutdown: stop asking; hand back (nak) whatever still arrives for requests
//! already made; let running tasks finish within the grace period; cancel the
//! rest, which hand their task back at once.

mod lifecycle;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, HeaderValue, Message, StatusCode, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info, warn};

use crate::contract;
use crate::error::{Error, ErrorKind, ResultExt};
use crate::handlers::Registry;
use crate::setup::{self, StreamSettings};

/// How long a pull request waits on the server for tasks. Short, so that a
/// node that stops hands back its unused requests quickly.
const PULL_EXPIRES: Duration = Duration::from_secs(2);

/// How a node runs. `..Default::default()` fills what you do not set.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Shown in results (`Task-Node`) and logs.
    pub name: String,
    /// The durable consumer shared by the nodes of one group.
    pub group: String,
    /// Kinds this group takes (`image.*`, `sha256`); empty means every kind.
    pub kinds: Vec<String>,
    /// Tasks run at once in this process.
    pub concurrency: usize,
    /// How long the server waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Attempts before a failing task is dead-lettered.
    pub max_deliver: u32,
    /// First retry delay, doubled on each attempt.
    pub retry_delay: Duration,
    /// Timeout of a task that names none.
    pub task_timeout: Duration,
    /// How long in-flight tasks may run on after shutdown.
    pub grace: Duration,
    /// Prefixes a task's `Reply-To` must start with.
    pub allowed_replies: Vec<String>,
    /// Stream settings used when this node creates the streams.
    pub streams: StreamSettings,
    /// Cap on tasks in flight across the whole group.
    pub max_ack_pending: i64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: default_node_name(),
            group: contract::DEFAULT_GROUP.to_string(),
            kinds: Vec::new(),
            concurrency: 64,
            ack_wait: contract::DEFAULT_ACK_WAIT,
            max_deliver: contract::DEFAULT_MAX_DELIVER,
            retry_delay: contract::RETRY_BASE_DELAY,
            task_timeout: contract::DEFAULT_TASK_TIMEOUT,
            grace: Duration::from_secs(30),
            allowed_replies: contract::DEFAULT_ALLOWED_REPLY_PREFIXES
                .iter()
                .map(|p| p.to_string())
                .collect(),
            streams: StreamSettings::default(),
            max_ack_pending: contract::DEFAULT_MAX_ACK_PENDING,
        }
    }
}

/// Host name plus pid, the default node name.
pub fn default_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "node".to_string());
    format!("{host}-{}", std::process::id())
}

/// What a node did, returned when it stops.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NodeStats {
    /// Tasks that ended with an ok result.
    pub ok: u64,
    /// Tasks that ended with an error result.
    pub failed: u64,
    /// Attempts handed back for a retry after a failure.
    pub retried: u64,
    /// Tasks handed back untouched (shutdown).
    pub handed_back: u64,
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    handed_back: AtomicU64,
}

/// What every task of a node shares.
struct Shared {
    client: Client,
    js: async_nats::jetstream::Context,
    config: NodeConfig,
    registry: Registry,
    node_header: HeaderValue,
    counters: Counters,
    cancel: watch::Receiver<bool>,
    /// Tasks past their handler, publishing the result and acking.
    finishing: Arc<Semaphore>,
}

/// A worker process's runtime: bind the group's consumer, run tasks, drain.
pub struct Node {
    client: Client,
    config: NodeConfig,
    registry: Registry,
}

impl Node {
    /// A node that runs the handlers of `registry`.
    pub fn new(client: Client, config: NodeConfig, registry: Registry) -> Self {
        Node {
            client,
            config,
            registry,
        }
    }

    /// Creates or binds the streams and the group's consumer, then runs tasks
    /// until `shutdown` completes, then drains (see the module docs).
    ///
    /// # Errors
    /// [`ErrorKind::Setup`] when streams or consumer cannot be set up,
    /// [`ErrorKind::Connection`] when the connection is closed for good.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<NodeStats, Error> {
        let config = self.config;
        if config.concurrency == 0 {
            return Err(Error::new(
                ErrorKind::Usage,
                anyhow::anyhow!("concurrency must be at least 1"),
            ));
        }
        let js = async_nats::jetstream::new(self.client.clone());
        setup::ensure_streams(&js, &config.streams).await?;
        let consumer = setup::ensure_consumer(&js, &config).await?;
        let (cancel_tx, cancel) = watch::channel(false);
        let node_header = HeaderValue::from(config.name.as_str());
        let shared = Arc::new(Shared {
            client: self.client.clone(),
            js,
            registry: self.registry,
            node_header,
            counters: Counters::default(),
            cancel,
            finishing: Arc::new(Semaphore::new(finishing_limit(config.concurrency))),
            config,
        });
        let next_subject = format!(
            "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
            contract::TASKS_STREAM,
            consumer
        );
        let mut puller = Puller::new(self.client.clone(), next_subject).await?;
        info!(node = %shared.config.name, group = %shared.config.group, concurrency = shared.config.concurrency, kinds = ?shared.registry.kinds(), "node ready");

        let slots = Arc::new(Semaphore::new(shared.config.concurrency));
        let released = Arc::new(Notify::new());
        tokio::pin!(shutdown);
        run_loop(&shared, &mut puller, &slots, &released, shutdown).await?;

        info!(node = %shared.config.name, "stopping: no new tasks; draining");
        drain(&shared, &mut puller, &slots, cancel_tx).await;
        // Bounded: with the server gone, a flush would wait forever.
        let _ = tokio::time::timeout(Duration::from_secs(5), shared.client.flush()).await;
        let c = &shared.counters;
        let stats = NodeStats {
            ok: c.ok.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            handed_back: c.handed_back.load(Ordering::Relaxed),
        };
        info!(node = %shared.config.name, ?stats, "stopped");
        Ok(stats)
    }
}

async fn run_loop(
    shared: &Arc<Shared>,
    puller: &mut Puller,
    slots: &Arc<Semaphore>,
    released: &Arc<Notify>,
    mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<(), Error> {
    let concurrency = shared.config.concurrency;
    // Ask in batches of at least a quarter of the slots while a request is
    // still open, so a busy node does not send a request per finished task.
    let low_water = (concurrency / 4).max(1);
    loop {
        if std::mem::take(&mut puller.pause) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let free = slots.available_permits();
        let unasked = free.saturating_sub(puller.credits);
        if unasked > 0 && (puller.credits == 0 || unasked >= low_water) {
            if let Err(err) = puller.ask(unasked).await {
                warn!(%err, "pull request failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        // Requests lost with a connection never report back. Only when the
        // inbox has been silent past their expiry are they forgotten: under
        // load a late status must not be taken for a lost request.
        let lost_after =
            puller.asked_at.max(puller.last_heard) + PULL_EXPIRES + Duration::from_secs(5);
        tokio::select! {
            biased;
            _ = &mut shutdown => return Ok(()),
            msg = puller.sub.next() => {
                let Some(msg) = msg else {
                    return Err(Error::new(ErrorKind::Connection, anyhow::anyhow!("connection to NATS closed")));
                };
                if let Some(task) = puller.take(msg) {
                    start(shared, task, slots, released).await;
                }
            }
            _ = released.notified() => {}
            _ = sleep_until(lost_after), if puller.credits > 0 => puller.credits = 0,
        }
    }
}

/// Starts one delivered task in its own tokio task, holding one slot.
async fn start(shared: &Arc<Shared>, msg: Message, slots: &Arc<Semaphore>, released: &Arc<Notify>) {
    let Ok(permit) = slots.clone().try_acquire_owned() else {
        // More arrived than was asked for (a request from before a
        // reconnect); hand it straight back.
        hand_back(shared, &msg).await;
        return;
    };
    let slot = Slot {
        _permit: permit,
        released: released.clone(),
    };
    let shared = shared.clone();
    // Boxed: the task's future is large, and spawning moves it.
    tokio::spawn(Box::pin(async move {
        lifecycle::run(&shared, msg, slot).await;
    }));
}

async fn hand_back(shared: &Shared, msg: &Message) {
    if let Some(reply) = &msg.reply {
        shared.counters.handed_back.fetch_add(1, Ordering::Relaxed);
        if let Err(err) = shared
            .client
            .publish(reply.clone(), Bytes::from_static(b"-NAK"))
            .await
        {
            warn!(%err, "could not hand a task back; it returns after ack_wait");
        }
    }
}

async fn drain(
    shared: &Arc<Shared>,
    puller: &mut Puller,
    slots: &Arc<Semaphore>,
    cancel: watch::Sender<bool>,
) {
    let concurrency = shared.config.concurrency as u32;
    let grace_end = Instant::now() + shared.config.grace;
    let hand_back_open_requests = async {
        let until = puller.asked_at + PULL_EXPIRES + Duration::from_millis(500);
        while puller.credits > 0 {
            tokio::select! {
                msg = puller.sub.next() => match msg {
                    Some(msg) => if let Some(task) = puller.take(msg) { hand_back(shared, &task).await },
                    None => break,
                },
                _ = sleep_until(until) => break,
            }
        }
    };
    let finish_running = async {
        let all = slots.acquire_many(concurrency);
        if tokio::time::timeout_at(grace_end, all).await.is_err() {
            let running = concurrency as usize - slots.available_permits();
            warn!(
                running,
                "grace period over: handing back the tasks still running"
            );
            let _ = cancel.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(10), slots.acquire_many(concurrency))
                .await;
        }
    };
    tokio::join!(hand_back_open_requests, finish_running);
    // Let every result on its way out be kept and its task acked.
    let all = shared
        .finishing
        .acquire_many(finishing_limit(shared.config.concurrency) as u32);
    if tokio::time::timeout(Duration::from_secs(10), all)
        .await
        .is_err()
    {
        warn!("results still unconfirmed after 10s; their tasks return after ack_wait");
    }
}

/// How many tasks may be publishing their result and acking at once.
fn finishing_limit(concurrency: usize) -> usize {
    concurrency.saturating_mul(4).max(64)
}

/// Returns its slot and wakes the pull loop when a task's handler is done.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    released: Arc<Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.released.notify_one();
    }
}

/// Pull requests on one inbox, with the count of tasks asked for and not yet
/// delivered.
struct Puller {
    client: Client,
    next_subject: String,
    inbox: String,
    sub: Subscriber,
    credits: usize,
    asked_at: Instant,
    /// When the inbox last delivered anything (a task or a status).
    last_heard: Instant,
    pause: bool,
}

impl Puller {
    async fn new(client: Client, next_subject: String) -> Result<Self, Error> {
        let inbox = client.new_inbox();
        let sub = client
            .subscribe(inbox.clone())
            .await
            .kind(ErrorKind::Connection)?;
        Ok(Puller {
            client,
            next_subject,
            inbox,
            sub,
            credits: 0,
            asked_at: Instant::now(),
            last_heard: Instant::now(),
            pause: false,
        })
    }

    async fn ask(&mut self, batch: usize) -> anyhow::Result<()> {
        let request = format!(
            "{{\"batch\":{batch},\"expires\":{}}}",
            PULL_EXPIRES.as_nanos()
        );
        self.client
            .publish_with_reply(
                self.next_subject.clone(),
                self.inbox.clone(),
                request.into(),
            )
            .await?;
        debug!(batch, "asked for tasks");
        self.credits += batch;
        self.asked_at = Instant::now();
        Ok(())
    }

    /// Accounts for one message on the inbox: a task (returned) or a status
    /// that ends a request.
    fn take(&mut self, msg: Message) -> Option<Message> {
        self.last_heard = Instant::now();
        match msg.status {
            None | Some(StatusCode::OK) => {
                self.credits = self.credits.saturating_sub(1);
                Some(msg)
            }
            Some(StatusCode::IDLE_HEARTBEAT) => None,
            Some(status) => {
                let undelivered = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Pending-Messages"))
                    .and_then(|v| v.as_str().parse::<usize>().ok());
                match undelivered {
                    Some(n) => self.credits = self.credits.saturating_sub(n),
                    None => {
                        // Refused outright (max waiting, leader change):
                        // start over after a pause, not in a hot loop.
                        debug!(%status, description = ?msg.description, "pull request ended");
                        self.credits = 0;
                        self.pause = true;
                    }
                }
                None
            }
        }
    }
}
