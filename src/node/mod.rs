//! The node: pulls tasks for its free slots ([`pull`], [`credits`]), runs
//! each in its own tokio task ([`lifecycle`], decided by [`decide`], written
//! by [`commit`]), and drains on shutdown.
//!
//! Shutdown: stop asking; hand back (nak) whatever still arrives for requests
//! already made; let running tasks finish within the grace period; cancel the
//! rest, which hand their task back at once; wait for results on their way
//! out; flush with a bound.

mod bands;
mod cancel;
mod cancel_watch;
mod catch_up;
mod commit;
mod config;
mod control;
mod credits;
pub(crate) mod decide;
mod gate;
mod kind_metrics;
mod lifecycle;
mod moves;
mod observe;
mod paused;
mod process;
mod pull;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PriorityPolicy;
use async_nats::jetstream::{self, AckKind};
use async_nats::{Client, HeaderValue, Subscriber};
use futures::StreamExt;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep_until, Instant};
use tracing::{info, warn};

use crate::contract;
use crate::envelope::Limits;
use crate::error::{Error, ErrorKind};
use crate::handlers::Registry;
use crate::micro;
use crate::priority::Priority;
use crate::setup;
pub use config::{default_node_name, NodeConfig, NodeStats};
pub use decide::RetryPolicy;
pub use observe::{Observer, Phase};
use pull::{Puller, PULL_EXPIRES};

/// What every task of a node shares.
struct Shared {
    client: Client,
    js: jetstream::Context,
    config: NodeConfig,
    limits: Limits,
    /// The group consumer's `ack_wait`: running tasks send progress acks
    /// three times within it.
    ack_wait: Duration,
    registry: Registry,
    node_header: HeaderValue,
    observer: Observer,
    cancel: watch::Receiver<bool>,
    /// The cancel marks of `fleet cancel`, kept in step with the bucket.
    marks: Arc<cancel::Marks>,
    /// The watches of tenants' own marks (in their own streams).
    tenant_marks: cancel_watch::Tenants,
    /// Tasks past their handler, publishing the result and acking.
    finishing: Arc<Semaphore>,
    /// Limits per kind and key (`fleet limit`): held tasks and permits.
    gate: gate::Gate,
    /// Moves a normal task with `Task-Priority: high|low` to its band.
    mover: moves::Mover,
}

/// A worker process's runtime: bind the group's consumer, run tasks, drain.
pub struct Node {
    client: Client,
    config: NodeConfig,
    registry: Registry,
    observer: Observer,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("config", &self.config)
            .field("registry", &self.registry)
            .finish()
    }
}

impl Node {
    /// A node that runs the handlers of `registry`.
    pub fn new(client: Client, config: NodeConfig, registry: Registry) -> Self {
        let observer = Observer::new(client.clone(), &registry.kinds());
        Node {
            client,
            config,
            registry,
            observer,
        }
    }

    /// This node's metrics and health: serve [`Observer::router`] to let
    /// Prometheus and probes read them. Valid before and during [`Node::run`].
    pub fn observer(&self) -> Observer {
        self.observer.clone()
    }

    /// Binds the group's consumer (creating the streams and the consumer
    /// first with [`NodeConfig::create`]), then runs tasks until `shutdown`
    /// completes, then drains (see the module docs).
    ///
    /// # Errors
    /// [`ErrorKind::Usage`] for a concurrency of 0; [`ErrorKind::NotSetUp`]
    /// when the group's consumer does not exist (run `fleet setup`);
    /// [`ErrorKind::Setup`] when `create` cannot make it;
    /// [`ErrorKind::Connection`] when the connection is closed for good.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<NodeStats, Error> {
        let config = self.config;
        if config.concurrency == 0 {
            return Err(Error::new(
                ErrorKind::Usage,
                "concurrency must be at least 1",
            ));
        }
        config
            .edge
            .check()
            .map_err(|e| Error::new(ErrorKind::Usage, e))?;
        let js = match &config.edge.domain {
            Some(domain) => jetstream::with_domain(self.client.clone(), domain),
            None => jetstream::new(self.client.clone()),
        };
        if config.create {
            setup::ensure_streams(&js, &config.streams).await?;
            setup::ensure_consumer(&js, &config.group).await?;
        }
        let bound = setup::bind(&js, &config.group.name).await?;
        let fields = config
            .edge
            .pull_fields(
                &config.group.name,
                &bound.config.priority_groups,
                bound.config.priority_policy == PriorityPolicy::Overflow,
            )
            .map_err(|e| Error::new(ErrorKind::Usage, e))?;
        for band in [Priority::High, Priority::Low] {
            setup::bind(&js, &band.consumer(&config.group.name)).await?;
        }
        let (cancel_tx, cancel) = watch::channel(false);
        let marks = Arc::new(cancel::Marks::default());
        // Read before the first pull: a cancel issued while no node was up holds.
        let _watch = cancel_watch::watch(&js, marks.clone(), cancel_watch::Source::Bucket).await;
        let gate =
            gate::Gate::start(&js, &config.name, bound.config.ack_wait, config.concurrency).await;
        let limits = Limits {
            default_timeout: config.task_timeout.min(config.max_task_timeout),
            max_timeout: config.max_task_timeout,
            allowed_replies: config.allowed_replies.clone(),
        };
        let shared = Arc::new(Shared {
            limits,
            ack_wait: bound.config.ack_wait,
            client: self.client.clone(),
            node_header: HeaderValue::from(config.name.as_str()),
            js: js.clone(),
            registry: self.registry,
            observer: self.observer.clone(),
            cancel,
            marks,
            tenant_marks: cancel_watch::Tenants::default(),
            finishing: Arc::new(Semaphore::new(finishing_limit(config.concurrency))),
            gate,
            mover: moves::Mover::default(),
            config,
        });
        let config = &shared.config;
        let mut puller = Puller::new(
            self.client.clone(),
            js,
            (
                config.edge.domain.as_deref(),
                contract::TASKS_STREAM,
                &config.group.name,
            ),
            fields,
            config.concurrency,
            config.priority_weights,
        )
        .await?;
        let pause = paused::watch(&self.client, &config.group.name, bound.paused).await;
        puller.paused = pause.flag();
        let id = instance_id(&self.client);
        let mut control = self
            .client
            .subscribe(observe::control_subject(&id))
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Connection,
                    format!("subscribing to the drain subject: {e}"),
                )
            })?;
        shared
            .observer
            .bound(&config.name, &config.group.name, &id, config.concurrency);
        let discovery = register(&shared, &id).await;
        info!(node = %config.name, group = %config.group.name, concurrency = config.concurrency,
            priority_weights = %config.priority_weights, handlers = ?shared.registry.kinds(),
            takes = ?bound.config.filter_subjects, ack_wait = ?bound.config.ack_wait, id = %id,
            domain = ?config.edge.domain, overflow = ?config.edge.overflow, "{}", contract::READY_SIGNAL);

        let slots = Slots {
            free: Arc::new(Semaphore::new(config.concurrency)),
            released: Arc::new(Notify::new()),
            running: Arc::default(),
        };
        shared.gate.drive(&shared, &slots);
        tokio::pin!(shutdown);
        run_loop(&shared, &mut puller, &slots, &mut control, shutdown).await?;

        shared.observer.set_phase(Phase::Draining);
        info!(node = %config.name, "stopping: no new tasks; draining");
        drain(&shared, &mut puller, &slots.free, cancel_tx).await;
        if let Some(discovery) = discovery {
            discovery.stop();
        }
        // Bounded: with the server gone, a flush would wait forever.
        let _ = tokio::time::timeout(Duration::from_secs(5), shared.client.flush()).await;
        let stats = shared.observer.totals();
        info!(node = %config.name, ?stats, "stopped");
        Ok(stats)
    }
}

/// A name for this run of the node, unique across the fleet: the
/// client's random inbox token.
fn instance_id(client: &Client) -> String {
    let inbox = client.new_inbox();
    inbox.rsplit('.').next().unwrap_or(&inbox).to_string()
}

/// Registers the node for service discovery; a node that cannot (a
/// user without the permission) runs on unlisted.
async fn register(shared: &Arc<Shared>, id: &str) -> Option<micro::Registration> {
    let identity = micro::Identity {
        name: contract::SERVICE_NAME.to_string(),
        id: id.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        metadata: Default::default(),
    };
    let config = &shared.config;
    let description = format!(
        "fleet node {} of group {}: {}",
        config.name,
        config.group.name,
        shared.registry.kinds().join(", ")
    );
    let observer = &shared.observer;
    let source: Arc<dyn micro::Source> = Arc::new(observer.clone());
    match micro::register(
        shared.client.clone(),
        identity,
        description,
        observer.endpoint_infos(),
        source,
    )
    .await
    {
        Ok(registration) => Some(registration),
        Err(err) => {
            warn!(%err, "service discovery is off: this node will not show in `nats micro ls`");
            None
        }
    }
}

/// A node's slots: the permits handlers hold, and who holds them.
#[derive(Clone)]
struct Slots {
    free: Arc<Semaphore>,
    /// Woken when a handler gives its slot back.
    released: Arc<Notify>,
    /// Tasks of each band running in a slot.
    running: Arc<[AtomicUsize; 3]>,
}

impl Slots {
    fn running(&self) -> [usize; 3] {
        std::array::from_fn(|i| self.running[i].load(Ordering::Relaxed))
    }

    /// The slot `permit` gives a task of `subject` (its band), with the
    /// `lease` of its limits.
    fn fill(
        &self,
        permit: OwnedSemaphorePermit,
        subject: &str,
        lease: Option<gate::Lease>,
    ) -> Slot {
        let band = crate::envelope::route(subject).band.index();
        self.running[band].fetch_add(1, Ordering::Relaxed);
        Slot {
            _permit: permit,
            released: self.released.clone(),
            lease,
            running: self.running.clone(),
            band,
        }
    }
}

async fn run_loop(
    shared: &Arc<Shared>,
    puller: &mut Puller,
    slots: &Slots,
    control: &mut Subscriber,
    mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<(), Error> {
    let concurrency = shared.config.concurrency;
    loop {
        let free = slots.free.available_permits();
        shared.observer.slots(concurrency - free, free);
        shared.observer.held(shared.gate.held());
        if puller.take_pause() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let askable = shared.gate.askable(slots.free.available_permits());
        if let Err(err) = puller.ask(askable, slots.running()).await {
            warn!(%err, "pull request failed; retrying");
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let lost_at = puller.lost_at();
        tokio::select! {
            biased;
            _ = &mut shutdown => return Ok(()),
            Some(request) = control.next() => {
                info!(node = %shared.config.name, "asked to drain");
                if let Some(reply) = request.reply {
                    let answer = serde_json::json!({"node": shared.config.name, "draining": true});
                    let _ = shared.client.publish(reply, answer.to_string().into()).await;
                }
                return Ok(());
            }
            msg = puller.next() => {
                let Some(msg) = msg else {
                    return Err(Error::new(ErrorKind::Connection, "connection to NATS closed"));
                };
                if let Some(task) = puller.take(msg) {
                    start(shared, task, slots).await;
                }
            }
            _ = slots.released.notified() => {}
            // Requests lost with a connection never report back.
            _ = sleep_until(lost_at.unwrap_or_else(Instant::now)), if lost_at.is_some() => puller.forget_lost(Instant::now()),
        }
    }
}

/// Starts one delivered task in its own tokio task, holding one slot; a
/// normal one that asks for another band moves there first ([`moves`]).
async fn start(shared: &Arc<Shared>, msg: jetstream::Message, slots: &Slots) {
    if shared.config.edge.domain.is_none() {
        if let Some(band) = moves::wanted(&msg.subject, msg.headers.as_ref()) {
            let (shared, slots) = (shared.clone(), slots.clone());
            tokio::spawn(Box::pin(async move {
                if let Some(msg) = moves::move_to(&shared.js, &shared.mover, msg, band).await {
                    admit(&shared, msg, &slots).await;
                }
            }));
            return;
        }
    }
    admit(shared, msg, slots).await;
}

/// Starts one delivered task where it is.
async fn admit(shared: &Arc<Shared>, msg: jetstream::Message, slots: &Slots) {
    // Limited kinds (and what finds no slot: a probe of a band with no work
    // seen, see [`bands`]) wait in the gate, not a slot.
    let msg = match shared.gate.pass(msg, slots.free.available_permits() > 0) {
        gate::Pass::Run(msg) => msg,
        gate::Pass::Held => return,
        gate::Pass::Full(msg) => {
            hand_back(shared, &msg).await;
            return;
        }
    };
    let Ok(permit) = slots.free.clone().try_acquire_owned() else {
        // More arrived than the node can hold (a request from before a
        // reconnect); hand it straight back.
        hand_back(shared, &msg).await;
        return;
    };
    let slot = slots.fill(permit, &msg.subject, None);
    // Boxed: the task's future is large, and spawning moves it.
    tokio::spawn(Box::pin(lifecycle::run(shared.clone(), msg, slot)));
}

async fn hand_back(shared: &Shared, msg: &jetstream::Message) {
    let kind = crate::envelope::route(&msg.subject).kind;
    shared.observer.kind(kind).handed_back();
    if let Err(err) = msg.ack_with(AckKind::Nak(None)).await {
        warn!(%err, "could not hand a task back; it returns after ack_wait");
    }
}

async fn drain(
    shared: &Arc<Shared>,
    puller: &mut Puller,
    slots: &Arc<Semaphore>,
    cancel: watch::Sender<bool>,
) {
    shared.gate.stop().await;
    let concurrency = shared.config.concurrency as u32;
    let grace_end = Instant::now() + shared.config.grace;
    let hand_back_open_requests = async {
        let until = puller.asked_at() + PULL_EXPIRES + Duration::from_millis(500);
        while puller.outstanding() > 0 {
            tokio::select! {
                msg = puller.next() => match msg {
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
struct Slot {
    _permit: OwnedSemaphorePermit,
    released: Arc<Notify>,
    /// The permits of a limited task (the lifecycle frees them once its
    /// result is written).
    lease: Option<gate::Lease>,
    /// Tasks running in each band ([`Slots::running`]); this one's `band`.
    running: Arc<[AtomicUsize; 3]>,
    band: usize,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.running[self.band].fetch_sub(1, Ordering::Relaxed);
        self.released.notify_one();
    }
}
