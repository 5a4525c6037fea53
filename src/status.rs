//! `fleet status`: queue depth (by kind), each group's pending, in-flight
//! and redelivered counts and the age of its oldest waiting task, kept
//! results and dead letters (by kind), at a glance.
//!
//! The JSON form (`fleet status --json`) is a stable interface: fields are
//! only ever added.

use std::fmt;
use std::time::SystemTime;

use async_nats::jetstream::stream::Stream;
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
    /// Tasks in `TASKS` by kind (and tenant).
    pub kinds: Vec<KindCount>,
    /// Dead letters by kind (and tenant).
    pub dead_kinds: Vec<KindCount>,
}

/// How many of something there are of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KindCount {
    /// The tenant, for a tenant's tasks; absent for the fleet account's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The task kind.
    pub kind: String,
    /// How many.
    pub count: u64,
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
    /// How long the oldest task not yet handed to a node has waited, in
    /// seconds; absent when none waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_waiting_s: Option<f64>,
    /// Whether the group is paused (`fleet pause`): its nodes start no task.
    pub paused: bool,
    /// Until when (RFC 3339), when paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_until: Option<String>,
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
    let kinds = by_kind(&tasks, contract::TASK_PREFIX).await;
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
        let oldest_waiting_s = if info.num_pending == 0 {
            None
        } else {
            oldest_after(&tasks, info.delivered.stream_sequence, &kinds).await
        };
        let pause = crate::pause::state_of(&info);
        groups.push(GroupStatus {
            paused: pause.paused,
            paused_until: pause.until,
            name: info.name.clone(),
            kinds,
            pending: info.num_pending,
            in_flight: info.num_ack_pending,
            redelivered: info.num_redelivered,
            waiting_pulls: info.num_waiting,
            oldest_waiting_s,
        });
    }
    let dead_kinds = match js.get_stream_no_info(contract::DEAD_STREAM).await {
        Ok(dead) => by_kind(&dead, contract::DEAD_PREFIX).await,
        Err(_) => Vec::new(),
    };
    Ok(Status {
        tasks: depth,
        results: count(js, contract::RESULTS_STREAM).await,
        dead: count(js, contract::DEAD_STREAM).await,
        groups,
        kinds,
        dead_kinds,
    })
}

/// Messages of `stream` by kind, from its per-subject counts (`TASKS` and
/// `DEAD` have one subject per kind and tenant). Unreadable: none.
async fn by_kind<I>(stream: &Stream<I>, prefix: &str) -> Vec<KindCount> {
    let Ok(subjects) = stream.info_with_subjects(">").await else {
        return Vec::new();
    };
    let Ok(pairs) = subjects.try_collect::<Vec<(String, usize)>>().await else {
        return Vec::new();
    };
    let mut counts: Vec<KindCount> = pairs
        .into_iter()
        .filter_map(|(subject, count)| kind_count(&subject, prefix, count as u64))
        .collect();
    counts.sort_by(|a, b| (&a.tenant, &a.kind).cmp(&(&b.tenant, &b.kind)));
    counts
}

/// `tasks.echo` → (no tenant, `echo`); `tenant.t.dead.x` → (`t`, `x`).
fn kind_count(subject: &str, prefix: &str, count: u64) -> Option<KindCount> {
    let (tenant, rest) = contract::split_tenant(subject);
    Some(KindCount {
        tenant: tenant.map(str::to_string),
        kind: rest.strip_prefix(prefix)?.to_string(),
        count,
    })
}

/// The age in seconds of the first task after sequence `delivered` that
/// one of `filters` takes (all when empty): the oldest one no node has.
async fn oldest_after<I>(stream: &Stream<I>, delivered: u64, filters: &[String]) -> Option<f64> {
    let all = [">".to_string()];
    let filters = if filters.is_empty() {
        &all[..]
    } else {
        filters
    };
    let mut oldest: Option<SystemTime> = None;
    for filter in filters {
        let Ok(msg) = stream
            .direct_get_next_for_subject(filter.as_str(), Some(delivered + 1))
            .await
        else {
            continue;
        };
        let stored = SystemTime::from(msg.time);
        oldest = Some(oldest.map_or(stored, |o| o.min(stored)));
    }
    let age = SystemTime::now()
        .duration_since(oldest?)
        .unwrap_or_default();
    Some(age.as_secs_f64())
}

async fn count(js: &Context, stream: &str) -> u64 {
    match js.get_stream(stream).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "tasks queued:  {}{}",
            self.tasks,
            by_kind_text(&self.kinds)
        )?;
        for g in &self.groups {
            let oldest = g
                .oldest_waiting_s
                .map(|s| {
                    format!(
                        ", oldest waiting {}",
                        humantime::format_duration(std::time::Duration::from_secs(s as u64))
                    )
                })
                .unwrap_or_default();
            writeln!(
                f,
                "group {:<12} {} pending, {} in flight, {} redelivered, {} open pulls{oldest}  ({})",
                g.name,
                g.pending,
                g.in_flight,
                g.redelivered,
                g.waiting_pulls,
                if g.kinds.is_empty() { "all kinds".to_string() } else { g.kinds.join(", ") }
            )?;
            if g.paused {
                let until = g
                    .paused_until
                    .as_deref()
                    .and_then(|u| humantime::parse_rfc3339(u).ok());
                let until = until.map_or("resumed".into(), |u| {
                    crate::pause::until_text(u, SystemTime::now())
                });
                writeln!(
                    f,
                    "      PAUSED until {until}: no task starts (fleet resume --group {})",
                    g.name
                )?;
            }
        }
        if self.groups.is_empty() {
            writeln!(f, "no groups yet: start a node (fleet node)")?;
        }
        writeln!(f, "results kept:  {}", self.results)?;
        write!(
            f,
            "dead letters:  {}{}",
            self.dead,
            by_kind_text(&self.dead_kinds)
        )?;
        if self.dead > 0 {
            write!(f, "  (fleet dead list)")?;
        }
        Ok(())
    }
}

/// `  (echo 3, alice/sha256 1)`, or nothing.
fn by_kind_text(counts: &[KindCount]) -> String {
    if counts.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|c| match &c.tenant {
            Some(t) => format!("{t}/{} {}", c.kind, c.count),
            None => format!("{} {}", c.kind, c.count),
        })
        .collect();
    format!("  ({})", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_read_as_kinds_of_the_fleet_or_of_a_tenant() {
        let plain = kind_count("tasks.image.resize", contract::TASK_PREFIX, 4).unwrap();
        assert_eq!(
            (plain.tenant.clone(), plain.kind.as_str(), plain.count),
            (None, "image.resize", 4)
        );
        let tenant = kind_count("tenant.alice.dead.echo", contract::DEAD_PREFIX, 1).unwrap();
        assert_eq!(tenant.tenant.as_deref(), Some("alice"));
        assert_eq!(tenant.kind, "echo");
        assert_eq!(kind_count("other.x", contract::TASK_PREFIX, 1), None);
        let text = by_kind_text(&[plain, tenant]);
        assert_eq!(text, "  (image.resize 4, alice/echo 1)");
    }
}
