//! NATS service discovery (the micro protocol, ADR-32): each node answers
//! `$SRV.PING|INFO|STATS[.fleet[.<id>]]`, so `nats micro ls|info|stats|ping
//! fleet` list the live nodes, and [`discover`] reads them back.
//!
//! Written against the protocol rather than async-nats's `service` module:
//! there an endpoint's counts move only when a request passes through it,
//! while a node's work arrives from JetStream. Here each kind is an
//! endpoint whose requests are the attempts the node ran, errors the
//! attempts that failed, and processing time the handlers' run time, which
//! is what the CLI's stats table shows best. Metadata (in flight, state) is
//! read at each answer, not fixed at start.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, Message, Subject};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tracing::debug;

use crate::contract;

const PING: &str = "io.nats.micro.v1.ping_response";
const INFO: &str = "io.nats.micro.v1.info_response";
const STATS: &str = "io.nats.micro.v1.stats_response";

/// Who answers: the same in every response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Identity {
    /// The service's name (`fleet`).
    pub name: String,
    /// This instance.
    pub id: String,
    /// fleet's version.
    pub version: String,
    /// Node name, group, kinds, concurrency, in flight, state.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// One endpoint as `INFO` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointInfo {
    /// A task kind, or `drain`.
    pub name: String,
    /// What it answers on: for a kind, the subject its tasks are sent to.
    pub subject: String,
    /// For a kind, the group (consumer) that takes its tasks.
    #[serde(default)]
    pub queue_group: String,
    /// Extra facts about the endpoint.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// One endpoint's counts as `STATS` gives them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EndpointStats {
    /// As in [`EndpointInfo`].
    pub name: String,
    /// As in [`EndpointInfo`].
    pub subject: String,
    /// As in [`EndpointInfo`].
    #[serde(default)]
    pub queue_group: String,
    /// Attempts run.
    pub num_requests: u64,
    /// Attempts that failed (retried or for good).
    pub num_errors: u64,
    /// The last failure's message.
    #[serde(default)]
    pub last_error: String,
    /// Run time of all attempts, in nanoseconds (Go's `time.Duration`).
    pub processing_time: u64,
    /// `processing_time / num_requests`.
    pub average_processing_time: u64,
    /// Counts by outcome: `{"ok":…,"failed":…,"retried":…}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

/// A `STATS` response: one live instance and its endpoints.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    /// Who answered.
    #[serde(flatten)]
    pub identity: Identity,
    /// `io.nats.micro.v1.stats_response`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When the instance started (RFC 3339).
    pub started: String,
    /// Every endpoint's counts.
    pub endpoints: Vec<EndpointStats>,
}

#[derive(Serialize)]
struct Ping<'a> {
    #[serde(flatten)]
    identity: &'a Identity,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct Info<'a> {
    #[serde(flatten)]
    identity: &'a Identity,
    #[serde(rename = "type")]
    kind: &'static str,
    description: &'a str,
    endpoints: &'a [EndpointInfo],
}

/// What a running instance reads at each answer.
pub(crate) trait Source: Send + Sync + 'static {
    /// Metadata as of now.
    fn metadata(&self) -> BTreeMap<String, String>;
    /// Endpoint counts as of now.
    fn endpoints(&self) -> Vec<EndpointStats>;
}

/// A registered instance; answers until dropped or [`Registration::stop`].
pub(crate) struct Registration {
    task: JoinHandle<()>,
}

impl Registration {
    /// Stops answering: the instance leaves `nats micro ls`.
    pub(crate) fn stop(self) {
        self.task.abort();
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The subjects an instance answers on: every verb, for all services, for
/// its name, and for itself.
pub(crate) fn verb_subjects(name: &str, id: &str) -> Vec<String> {
    ["PING", "INFO", "STATS"]
        .iter()
        .flat_map(|verb| {
            [
                format!("$SRV.{verb}"),
                format!("$SRV.{verb}.{name}"),
                format!("$SRV.{verb}.{name}.{id}"),
            ]
        })
        .collect()
}

/// Registers an instance: subscribes its verb subjects, then answers each
/// request from `source` until stopped.
pub(crate) async fn register(
    client: Client,
    identity: Identity,
    description: String,
    endpoints: Vec<EndpointInfo>,
    source: Arc<dyn Source>,
) -> Result<Registration, async_nats::SubscribeError> {
    let mut subs = Vec::new();
    for subject in verb_subjects(&identity.name, &identity.id) {
        subs.push(client.subscribe(subject).await?);
    }
    let mut requests = futures::stream::select_all(subs);
    let started = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
    let task = tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let Some(reply) = request.reply.clone() else {
                continue;
            };
            let mut identity = identity.clone();
            identity.metadata.extend(source.metadata());
            let body = answer(
                &request,
                &identity,
                &description,
                &endpoints,
                &started,
                &*source,
            );
            if let Err(err) = client.publish(reply, body).await {
                debug!(%err, "service discovery answer not sent");
            }
        }
    });
    Ok(Registration { task })
}

fn answer(
    request: &Message,
    identity: &Identity,
    description: &str,
    endpoints: &[EndpointInfo],
    started: &str,
    source: &dyn Source,
) -> Bytes {
    let verb = request.subject.split('.').nth(1).unwrap_or_default();
    let json = match verb {
        "INFO" => serde_json::to_vec(&Info {
            identity,
            kind: INFO,
            description,
            endpoints,
        }),
        "STATS" => serde_json::to_vec(&Stats {
            identity: identity.clone(),
            kind: STATS.to_string(),
            started: started.to_string(),
            endpoints: source.endpoints(),
        }),
        _ => serde_json::to_vec(&Ping {
            identity,
            kind: PING,
        }),
    };
    json.map(Bytes::from).unwrap_or_default()
}

/// Asks every live instance of `fleet` for its stats; collects answers for
/// `wait` (every instance answers within a round trip, so a short wait
/// suffices on one network).
pub async fn discover(
    client: &Client,
    wait: Duration,
) -> Result<Vec<Stats>, async_nats::SubscribeError> {
    let inbox = client.new_inbox();
    let mut answers = client.subscribe(inbox.clone()).await?;
    let subject = Subject::from(format!("$SRV.STATS.{}", contract::SERVICE_NAME));
    if let Err(err) = client
        .publish_with_reply(subject, inbox, Bytes::new())
        .await
    {
        debug!(%err, "service discovery request not sent");
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, answers.next()).await {
        if let Ok(stats) = serde_json::from_slice::<Stats>(&msg.payload) {
            if stats.kind == STATS {
                found.push(stats);
            }
        }
    }
    found.sort_by(|a, b| {
        let key = |s: &Stats| {
            (
                s.identity.metadata.get("node").cloned(),
                s.identity.id.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_verb_is_answered_for_all_for_the_name_and_for_the_instance() {
        let subjects = verb_subjects("fleet", "abc");
        assert_eq!(subjects.len(), 9);
        assert!(subjects.contains(&"$SRV.PING".to_string()));
        assert!(subjects.contains(&"$SRV.STATS.fleet".to_string()));
        assert!(subjects.contains(&"$SRV.INFO.fleet.abc".to_string()));
    }

    #[test]
    fn stats_read_as_the_go_library_writes_them() {
        // natscli's own `nats micro stats --json` output shape (nats.go micro).
        let json = r#"{"name":"fleet","id":"X1","version":"0.2.0","metadata":{"node":"n1"},
            "type":"io.nats.micro.v1.stats_response","started":"2026-11-28T07:00:00.000001Z",
            "endpoints":[{"name":"echo","subject":"tasks.echo","queue_group":"workers",
            "num_requests":3,"num_errors":1,"last_error":"boom","processing_time":3000,
            "average_processing_time":1000,"data":{"ok":2}}]}"#;
        let stats: Stats = serde_json::from_str(json).unwrap();
        assert_eq!(stats.identity.metadata["node"], "n1");
        assert_eq!(stats.endpoints[0].num_requests, 3);
        let back = serde_json::to_value(&stats).unwrap();
        assert_eq!(back["type"], STATS);
        assert_eq!(back["endpoints"][0]["processing_time"], 3000);
    }
}
