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
use crate::priority::{self, BANDS};

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
    /// The priority band, for tasks of the high or low band.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
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
    /// Each priority band's consumer, high first (`pending` and
    /// `in_flight` above are their sums).
    pub bands: Vec<BandStatus>,
}

/// One priority band of a group.
#[derive(Debug, Clone, Serialize)]
pub struct BandStatus {
    /// `high`, `normal` or `low`.
    pub priority: String,
    /// Its consumer's name.
    pub consumer: String,
    /// Tasks of the band not yet handed to any node.
    pub pending: u64,
    /// Tasks of the band handed to a node and not yet acked.
    pub in_flight: usize,
    /// How long its oldest waiting task has waited, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_waiting_s: Option<f64>,
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
    let mut infos = Vec::new();
    let mut consumers = tasks.consumers();
    while let Some(info) = consumers
        .try_next()
        .await
        .or_fail(ErrorKind::Connection, || "listing the groups".into())?
    {
        infos.push(info);
    }
    let mut groups = Vec::new();
    // A group is its normal band's consumer; `<group>-high` and
    // `<group>-low` are its other bands.
    for info in infos
        .iter()
        .filter(|i| priority::check_group_name(&i.name).is_ok())
    {
        let config = &info.config;
        let mut kinds = config.filter_subjects.clone();
        if !config.filter_subject.is_empty() {
            kinds.push(config.filter_subject.clone());
        }
        let mut bands = Vec::new();
        for band in BANDS {
            let name = band.consumer(&info.name);
            let Some(b) = infos.iter().find(|i| i.name == name) else {
                continue;
            };
            bands.push(BandStatus {
                priority: band.to_string(),
                consumer: name,
                pending: b.num_pending,
                in_flight: b.num_ack_pending,
                oldest_waiting_s: oldest_of(&tasks, b).await,
            });
        }
        let oldest_waiting_s = bands
            .iter()
            .filter_map(|b| b.oldest_waiting_s)
            .reduce(f64::max);
        let pause = crate::pause::state_of(info);
        groups.push(GroupStatus {
            paused: pause.paused,
            paused_until: pause.until,
            name: info.name.clone(),
            kinds,
            pending: bands.iter().map(|b| b.pending).sum(),
            in_flight: bands.iter().map(|b| b.in_flight).sum(),
            redelivered: info.num_redelivered,
            waiting_pulls: info.num_waiting,
            oldest_waiting_s,
            bands,
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

/// The age of the oldest task `info`'s consumer has not handed out.
async fn oldest_of<I>(
    stream: &Stream<I>,
    info: &async_nats::jetstream::consumer::Info,
) -> Option<f64> {
    if info.num_pending == 0 {
        return None;
    }
    let config = &info.config;
    let mut filters = config.filter_subjects.clone();
    if !config.filter_subject.is_empty() {
        filters.push(config.filter_subject.clone());
    }
    oldest_after(stream, info.delivered.stream_sequence, &filters).await
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

/// `tasks.echo` → (no tenant, `echo`); `tenant.t.dead.x` → (`t`, `x`);
/// `tasks-high.echo` → (no tenant, `echo`, high).
fn kind_count(subject: &str, prefix: &str, count: u64) -> Option<KindCount> {
    let (tenant, rest) = contract::split_tenant(subject);
    let (priority, kind) = match rest.strip_prefix(prefix) {
        Some(kind) => (None, kind),
        None if prefix == contract::TASK_PREFIX => {
            let (band, kind) = priority::split_band(rest)?;
            (Some(band.to_string()), kind)
        }
        None => return None,
    };
    Some(KindCount {
        tenant: tenant.map(str::to_string),
        kind: kind.to_string(),
        priority,
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
            let bands: Vec<String> = g
                .bands
                .iter()
                .map(|b| format!("{} {}", b.priority, b.pending))
                .collect();
            if !bands.is_empty() {
                writeln!(f, "      pending by priority: {}", bands.join(", "))?;
            }
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
        .map(|c| {
            let band = c
                .priority
                .as_deref()
                .map(|p| format!(" {p}"))
                .unwrap_or_default();
            match &c.tenant {
                Some(t) => format!("{t}/{}{band} {}", c.kind, c.count),
                None => format!("{}{band} {}", c.kind, c.count),
            }
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
        let high = kind_count("tasks-high.echo", contract::TASK_PREFIX, 2).unwrap();
        assert_eq!(
            (high.kind.as_str(), high.priority.as_deref()),
            ("echo", Some("high"))
        );
        assert_eq!(kind_count("dead-high.x", contract::DEAD_PREFIX, 1), None);
        let text = by_kind_text(&[plain, tenant, high]);
        assert_eq!(text, "  (image.resize 4, alice/echo 1, echo high 2)");
    }
}
