//! Creates or binds the streams and the group's consumer. Every node does this
//! on start, so the first node on an empty server just works; nodes starting
//! at once do not fight, because creating what already exists with the same
//! config is a no-op on the server, and a refusal is answered by binding.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy};
use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::Context;
use tracing::{debug, warn};

use crate::contract;
use crate::error::{Error, ErrorKind, ResultExt};
use crate::node::NodeConfig;

/// How the streams are created when they do not exist yet.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Replicas of each stream: 1 on one server, 3 on a cluster.
    pub replicas: usize,
    /// How long `RESULTS` keeps a result.
    pub results_max_age: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            replicas: 1,
            results_max_age: contract::DEFAULT_RESULTS_MAX_AGE,
        }
    }
}

/// The three streams of the wire contract.
pub fn stream_configs(settings: &StreamSettings) -> [Config; 3] {
    let base = |name: &str, subject: String| Config {
        name: name.to_string(),
        subjects: vec![subject],
        storage: StorageType::File,
        num_replicas: settings.replicas,
        duplicate_window: contract::DUPLICATE_WINDOW,
        allow_direct: true,
        ..Default::default()
    };
    [
        Config {
            retention: RetentionPolicy::WorkQueue,
            discard: DiscardPolicy::New,
            ..base(
                contract::TASKS_STREAM,
                format!("{}>", contract::TASK_PREFIX),
            )
        },
        Config {
            retention: RetentionPolicy::Limits,
            max_age: settings.results_max_age,
            ..base(
                contract::RESULTS_STREAM,
                format!("{}>", contract::RESULT_PREFIX),
            )
        },
        Config {
            retention: RetentionPolicy::Limits,
            ..base(contract::DEAD_STREAM, format!("{}>", contract::DEAD_PREFIX))
        },
    ]
}

/// Creates `TASKS`, `RESULTS` and `DEAD` where missing; binds where present.
///
/// # Errors
/// [`ErrorKind::Setup`] when a stream can neither be created nor found.
pub async fn ensure_streams(js: &Context, settings: &StreamSettings) -> Result<(), Error> {
    for config in stream_configs(settings) {
        let name = config.name.clone();
        match js.create_stream(config).await {
            Ok(_) => debug!(stream = %name, "stream ready"),
            Err(create_err) => {
                // Exists with another config (an operator's edit, another
                // version, a submitter that came first): use it as it is.
                let mut stream = js.get_stream(&name).await.map_err(|_| {
                    Error::new(
                        ErrorKind::Setup,
                        anyhow::anyhow!("creating stream {name}: {create_err}"),
                    )
                })?;
                let replicas = stream
                    .info()
                    .await
                    .map(|i| i.config.num_replicas)
                    .unwrap_or(0);
                if replicas != settings.replicas {
                    warn!(stream = %name, replicas, wanted = settings.replicas,
                        "stream exists with another replica count; using it (change it with: nats stream edit {name} --replicas {})", settings.replicas);
                } else {
                    debug!(stream = %name, %create_err, "stream exists with another config; using it");
                }
            }
        }
    }
    Ok(())
}

/// The consumer config of a node's group.
pub fn consumer_config(config: &NodeConfig) -> pull::Config {
    let filters: Vec<String> = if config.kinds.is_empty() {
        vec![format!("{}>", contract::TASK_PREFIX)]
    } else {
        config
            .kinds
            .iter()
            .map(|k| contract::task_subject(k))
            .collect()
    };
    let (filter_subject, filter_subjects) = match filters.len() {
        1 => (filters[0].clone(), Vec::new()),
        _ => (String::new(), filters),
    };
    pull::Config {
        durable_name: Some(config.group.clone()),
        description: Some("fleet node group".to_string()),
        filter_subject,
        filter_subjects,
        ack_policy: AckPolicy::Explicit,
        ack_wait: config.ack_wait,
        // Attempts are counted by the nodes (a task whose last attempt died
        // with its node must still come back to be dead-lettered), so the
        // server never stops redelivering on its own.
        max_deliver: -1,
        max_ack_pending: config.max_ack_pending,
        max_waiting: 512,
        // 0: as many replicas as the stream has, whoever created it.
        num_replicas: 0,
        ..Default::default()
    }
}

/// Creates or updates the group's durable consumer; returns its name.
///
/// # Errors
/// [`ErrorKind::Setup`] when the server refuses it (for example a second
/// group whose kinds overlap the first on the work queue).
pub async fn ensure_consumer(js: &Context, config: &NodeConfig) -> Result<String, Error> {
    let stream = js
        .get_stream(contract::TASKS_STREAM)
        .await
        .kind(ErrorKind::Setup)?;
    let wanted = consumer_config(config);
    let mut last_err = None;
    // Nodes of one group starting at once may race; the loser retries.
    for _ in 0..5 {
        match stream.create_consumer(wanted.clone()).await {
            Ok(_) => return Ok(config.group.clone()),
            Err(err) => {
                warn!(%err, group = %config.group, "consumer not created yet; retrying");
                last_err = Some(err);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let err = last_err.expect("loop ran");
    Err(Error::new(
        ErrorKind::Setup,
        anyhow::anyhow!(
            "creating consumer {:?} on {}: {err}",
            config.group,
            contract::TASKS_STREAM
        ),
    ))
}
