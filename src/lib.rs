//! fleet: a worker fleet on NATS JetStream.
//!
//! Tasks are published to `tasks.<kind>`; any number of nodes share one
//! durable pull consumer and run them; each result goes to the task's reply
//! subject (kept by the `RESULTS` stream under `results.>`); only then is the
//! task acked. A node that dies leaves its tasks to the others.
//!
//! This crate is the engine: it returns values, errors and streams of
//! events, and never prints. The `fleet` command line (the `fleet-cli`
//! package) is a thin layer over it.
//!
//! # Writing handlers in Rust
//!
//! A handler is an `async fn(Task) -> Result<impl Into<Bytes>, TaskError>`;
//! `?` turns any error into a retryable failure. Run a node from your own
//! `main` in a few lines:
//!
//! ```no_run
//! use fleet::{Node, NodeConfig, Registry, Task, TaskError};
//!
//! async fn shout(task: Task) -> Result<String, TaskError> {
//!     let text = std::str::from_utf8(&task.payload)
//!         .map_err(|_| TaskError::reject("shout takes UTF-8 text"))?;
//!     Ok(text.to_uppercase())
//! }
//!
//! #[tokio::main]
//! async fn main() -> anyhow::Result<()> {
//!     let client = async_nats::connect("nats://127.0.0.1:4222").await?;
//!     let mut registry = Registry::with_builtins();
//!     registry.register("shout", shout);
//!     let node = Node::new(client, NodeConfig::default(), registry);
//!     node.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//!     Ok(())
//! }
//! ```
//!
//! # Submitting from Rust
//!
//! [`submit()`] returns a [`Submission`]: a stream of [`Event`]s, one per
//! task's end, then the run's [`Summary`].
//!
//! # Layout
//!
//! Layers read bottom-up; a module imports only from layers below its own.
//!
//! | layer | module | what |
//! |---|---|---|
//! | 9 | [`status`], [`dead`], [`cancel`] | the read side: queue depth and groups; dead letters; cancelling tasks (the fleet's bucket of marks, or a tenant's own stream) |
//! | 8 | [`schedule`] (`listed`, `manage`, `space`) | recurring schedules: reading them and their last runs, adding and removing them; a tenant's names in its own stream |
//! | 7 | `node`, `submit` | the node (pull, lifecycle, pure decisions, metrics, the gate of limits), the submitter (window, events; delayed batches, collecting results) |
//! | 6 | [`handlers`] | the [`Handler`] trait and [`Registry`]; built-ins; exec handlers |
//! | 5 | [`connect`](mod@connect), [`setup`], [`micro`], `direct`, [`unique`], [`pause`], [`limit`] | connection options and what a connection may do; streams and groups' consumers (pure configs, a tenant's schedule stream, then making them); service discovery; batch direct gets; unique keys (one protocol; the fleet's bucket or a tenant's stream); pausing groups; setting limits |
//! | 4 | `envelope` | the task envelope ([`Task`]): a delivered message read into one |
//! | 3 | `schedule::{pattern, occurrence}` | schedule patterns and times; occurrence ids |
//! | 2 | `check`, [`control`], [`edge`], `limit::spec`, [`priority`] | the pure checks of task ids, reply subjects and timeouts; deadlines, result TTLs, unique keys; edge sites served from the centre (pull fields, write subjects); limits, rates and permit names; priority bands and their subjects |
//! | 1 | `error` | [`FailureKind`], [`TaskError`], [`Error`] by [`ErrorKind`] |
//! | 0 | [`contract`] | every subject, stream, header name, code, limit and default |

pub mod cancel;
mod check;
pub mod connect;
pub mod contract;
pub mod control;
pub mod dead;
mod direct;
pub mod edge;
mod envelope;
mod error;
pub mod handlers;
pub mod limit;
pub mod micro;
mod node;
pub mod pause;
pub mod priority;
pub mod schedule;
pub mod setup;
pub mod status;
mod submit;
pub mod unique;

pub use check::{check_task_id, parse_timeout};
pub use connect::{connect, ConnectConfig};
pub use envelope::Task;
pub use error::{BoxError, Error, ErrorKind, FailureKind, TaskError};
pub use handlers::{Handler, Registry};
pub use node::{default_node_name, Node, NodeConfig, NodeStats, Observer, Phase, RetryPolicy};
pub use setup::{GroupSettings, StreamSettings};
pub use submit::{
    results, submit_at, BatchReport, CollectConfig, Collected, Collection, Scheduled,
};
pub use submit::{
    submit, Event, Latency, Submission, SubmitConfig, Summary, TaskControls, TaskEnd, TaskStatus,
};
