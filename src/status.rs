//! `fleet status`: queue depth, each group's pending, in-flight and
//! redelivered counts, kept results and dead letters, at a glance.

use std::fmt;

use async_nats::jetstream::Context;
use futures::TryStreamExt;
use serde::Serialize;

use crate::contract;
use crate::error::{Error, ErrorKind, ResultExt};

/// A snapshot of the fleet, as NATS sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Tasks stored in `TASKS` (waiting or in flight).
    pub tasks: u64,
    /// Results kept in `RESULTS`.
    pub results: u64,
    /// Dead letters in `DEAD`.
    pub dead: u64,
    /// One entry per group (durable consumer on `TASKS`).
    pub groups: Vec<GroupStatus>,
}

/// One group of nodes.
#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    /// The group's name (its durable consumer).
    pub name: String,
    /// Which task subjects it takes.
    pub kinds: Vec<String>,
    /// Tasks not yet handed to any node.
    pub pending: u64,
    /// Tasks handed to a node and not yet acked.
    pub in_flight: usize,
    /// Tasks handed out more than once.
    pub redelivered: usize,
    /// Open pull requests: roughly, nodes with free slots.
    pub waiting_pulls: usize,
}

/// Reads the streams and the groups' consumers.
///
/// # Errors
/// [`ErrorKind::Setup`] when `TASKS` does not exist yet (no node ever ran),
/// [`ErrorKind::Connection`] when NATS does not answer.
pub async fn status(js: &Context) -> Result<Status, Error> {
    let mut tasks = js.get_stream(contract::TASKS_STREAM).await.map_err(|e| {
        Error::with_source(
            ErrorKind::NotSetUp,
            format!("no {} stream: start a node first", contract::TASKS_STREAM),
            e,
        )
    })?;
    let depth = tasks
        .info()
        .await
        .or_fail(ErrorKind::Connection, || {
            format!("reading stream {}", contract::TASKS_STREAM)
        })?
        .state
        .messages;
    let mut groups = Vec::new();
    let mut consumers = tasks.consumers();
    while let Some(info) = consumers
        .try_next()
        .await
        .or_fail(ErrorKind::Connection, || "listing the groups".into())?
    {
        let config = &info.config;
        let mut kinds = config.filter_subjects.clone();
        if !config.filter_subject.is_empty() {
            kinds.push(config.filter_subject.clone());
        }
        groups.push(GroupStatus {
            name: info.name.clone(),
            kinds,
            pending: info.num_pending,
            in_flight: info.num_ack_pending,
            redelivered: info.num_redelivered,
            waiting_pulls: info.num_waiting,
        });
    }
    Ok(Status {
        tasks: depth,
        results: count(js, contract::RESULTS_STREAM).await,
        dead: count(js, contract::DEAD_STREAM).await,
        groups,
    })
}

async fn count(js: &Context, stream: &str) -> u64 {
    match js.get_stream(stream).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "tasks queued:  {}", self.tasks)?;
        for g in &self.groups {
            writeln!(
                f,
                "group {:<12} {} pending, {} in flight, {} redelivered, {} open pulls  ({})",
                g.name,
                g.pending,
                g.in_flight,
                g.redelivered,
                g.waiting_pulls,
                g.kinds.join(", ")
            )?;
        }
        if self.groups.is_empty() {
            writeln!(f, "no groups yet: start a node (fleet node)")?;
        }
        writeln!(f, "results kept:  {}", self.results)?;
        write!(f, "dead letters:  {}", self.dead)?;
        if self.dead > 0 {
            write!(f, "  (fleet dead list)")?;
        }
        Ok(())
    }
}
