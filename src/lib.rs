//! fleet: a worker fleet on NATS JetStream.
//!
//! Tasks are published to `tasks.<kind>`; any number of nodes share one
//! durable pull consumer and run them; each result goes to the task's reply
//! subject (kept by the `RESULTS` stream under `results.>`); only then is the
//! task acked. A node that dies leaves its tasks to the others.
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
//! Then `nats req tasks.shout hello` and `nats stream get RESULTS --last-for
//! results.<seq>` (or `fleet submit shout hello`) show `HELLO`.
//!
//! # Layout
//!
//! Read bottom-up; no module imports one above it.
//!
//! | module | what |
//! |---|---|
//! | [`cli`] | the clap CLI of the `fleet` binary, and what each command runs |
//! | [`node`] | pull loop, slots, shutdown and drain; `node/lifecycle.rs`: one task from delivery to ack |
//! | [`submit`] | publish window, await and de-duplicate results; [`submit::output`]: raw, JSON lines, progress, summary |
//! | [`status`], [`dead`] | read side and dead letters |
//! | [`handlers`] | the [`Handler`] trait and [`Registry`]; built-ins; exec handlers |
//! | [`setup`] | create or bind streams and the group's consumer |
//! | [`connect`] | connection options from flags and environment |
//! | [`task`] | the task envelope and the pure parsers of headers and subjects |
//! | [`error`] | [`TaskError`] (retry or not, status code) and [`Error`] (by kind) |
//! | [`contract`] | every subject, stream, header name and default |

pub mod cli;
pub mod connect;
pub mod contract;
pub mod dead;
pub mod error;
pub mod handlers;
pub mod node;
pub mod setup;
pub mod status;
pub mod submit;
pub mod task;

pub use connect::{connect, ConnectConfig};
pub use error::{Error, ErrorKind, TaskError};
pub use handlers::{Handler, Registry};
pub use node::{Node, NodeConfig, NodeStats};
pub use submit::{submit, SubmitConfig};
pub use task::Task;
