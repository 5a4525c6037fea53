//! How a node runs ([`NodeConfig`]) and what it did ([`NodeStats`]).

use std::time::Duration;

use super::decide::RetryPolicy;
use crate::contract;
use crate::edge::EdgeSettings;
use crate::priority::Weights;
use crate::setup::{GroupSettings, StreamSettings};

/// How a node runs. `..Default::default()` fills what you do not set.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Shown in results (`Task-Node`) and logs.
    pub name: String,
    /// The group (durable consumer) this node joins. Its kinds, `ack_wait`
    /// and `max_ack_pending` are what the group's consumer says; these are
    /// used only to create it (`create`).
    pub group: GroupSettings,
    /// Create the streams and the group's consumer when missing (one
    /// trusted machine); otherwise only bind, and say to run `fleet setup`.
    pub create: bool,
    /// Handlers run at once in this process.
    pub concurrency: usize,
    /// How the slots are shared by the priority bands that have work
    /// (high, normal, low).
    pub priority_weights: Weights,
    /// How failures are retried.
    pub retry: RetryPolicy,
    /// Timeout of a task that names none.
    pub task_timeout: Duration,
    /// Longest `Task-Timeout` a task may name; a longer one is refused (400).
    pub max_task_timeout: Duration,
    /// How long in-flight tasks may run on after shutdown.
    pub grace: Duration,
    /// Prefixes a task's `Reply-To` must start with.
    pub allowed_replies: Vec<String>,
    /// Stream settings used when this node creates the streams.
    pub streams: StreamSettings,
    /// An edge site's group served from the centre, as an overflow member
    /// ([`crate::edge`]); the default serves the group on this node's server.
    pub edge: EdgeSettings,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: default_node_name(),
            group: GroupSettings::default(),
            create: false,
            concurrency: contract::DEFAULT_CONCURRENCY,
            priority_weights: Weights::default(),
            retry: RetryPolicy::default(),
            task_timeout: contract::DEFAULT_TASK_TIMEOUT,
            max_task_timeout: contract::DEFAULT_MAX_TASK_TIMEOUT,
            grace: contract::DEFAULT_GRACE,
            allowed_replies: contract::DEFAULT_ALLOWED_REPLY_PREFIXES
                .iter()
                .map(|p| p.to_string())
                .collect(),
            streams: StreamSettings::default(),
            edge: EdgeSettings::default(),
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
    /// Tasks cancelled (`fleet cancel`): 499 kept, never retried.
    pub cancelled: u64,
    /// Tasks answered `408 expired`: their deadline passed before they
    /// started, so they never ran.
    pub expired: u64,
}
