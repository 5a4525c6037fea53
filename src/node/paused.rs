//! Whether the node's group is paused ([`crate::pause`]), from the bound
//! consumer's info and then the server's pause advisories.
//!
//! While paused, the server holds pull requests until they expire, and a
//! request made during the pause is not served when the pause is lifted by
//! hand (nats-server 2.15: only a new request or a new task wakes the
//! consumer; a pause that ends at its time does wake it). So a paused node
//! asks with short requests ([`PAUSED_PULL_EXPIRES`]): after a resume its
//! next request comes within that time and is served at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use futures::StreamExt;
use serde::Deserialize;
use tracing::{info, warn};

use crate::contract::{self, api};

/// How long a pull request waits while the group is paused: how late at
/// most a node starts again after `fleet resume`.
pub(crate) const PAUSED_PULL_EXPIRES: Duration = Duration::from_millis(500);

/// The part of `io.nats.jetstream.advisory.v1.consumer_pause` read here.
#[derive(Debug, Deserialize)]
struct Advisory {
    paused: bool,
    #[serde(default)]
    pause_until: Option<String>,
}

/// Whether an advisory says paused; `None` for one that does not parse.
fn read(payload: &[u8]) -> Option<(bool, Option<String>)> {
    let advisory: Advisory = serde_json::from_slice(payload).ok()?;
    Some((advisory.paused, advisory.pause_until))
}

/// The group's pause as this node knows it; the watch stops when dropped.
pub(super) struct PauseWatch {
    paused: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl PauseWatch {
    /// The flag pull requests read.
    pub(super) fn flag(&self) -> Arc<AtomicBool> {
        self.paused.clone()
    }
}

impl Drop for PauseWatch {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Watches group `group`'s pause advisories; `paused` is what its consumer
/// info said at bind. A node that may not subscribe to them still runs,
/// and starts again at most a normal pull's expiry after a resume.
pub(super) async fn watch(client: &Client, group: &str, paused: bool) -> PauseWatch {
    let flag = Arc::new(AtomicBool::new(paused));
    if paused {
        info!(%group, "the group is paused: no task starts until it is resumed (fleet resume)");
    }
    let subject = api::consumer_pause_advisory(contract::TASKS_STREAM, group);
    let mut advisories = match client.subscribe(subject).await {
        Ok(sub) => sub,
        Err(err) => {
            warn!(%err, "not watching pause advisories: after a resume, tasks start within 2s");
            return PauseWatch {
                paused: flag,
                task: None,
            };
        }
    };
    let (set, group) = (flag.clone(), group.to_string());
    let task = tokio::spawn(async move {
        while let Some(msg) = advisories.next().await {
            let Some((paused, until)) = read(&msg.payload) else {
                continue;
            };
            set.store(paused, Ordering::Relaxed);
            if paused {
                info!(%group, until = until.as_deref().unwrap_or("?"), "group paused: no new task starts");
            } else {
                info!(%group, "group resumed");
            }
        }
    });
    PauseWatch {
        paused: flag,
        task: Some(task),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advisories_read_as_the_server_writes_them() {
        let paused = br#"{"type":"io.nats.jetstream.advisory.v1.consumer_pause","id":"x","timestamp":"2026-11-28T05:18:45Z","stream":"TASKS","consumer":"workers","paused":true,"pause_until":"2026-11-28T05:18:51Z","domain":""}"#;
        assert_eq!(
            read(paused),
            Some((true, Some("2026-11-28T05:18:51Z".into())))
        );
        let resumed = br#"{"type":"io.nats.jetstream.advisory.v1.consumer_pause","stream":"TASKS","consumer":"workers","paused":false}"#;
        assert_eq!(read(resumed), Some((false, None)));
        assert_eq!(read(b"nonsense"), None);
        assert_eq!(
            api::consumer_pause_advisory("TASKS", "workers"),
            "$JS.EVENT.ADVISORY.CONSUMER.PAUSE.TASKS.workers"
        );
    }
}
