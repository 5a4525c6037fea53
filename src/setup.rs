//! The streams and the groups' consumers: their configuration (pure, below)
//! and creating or binding them. Creating what already exists with the same
//! config is a no-op on the server, so processes starting at once do not
//! fight; a refusal is answered by binding what is there.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy};
use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::Context;
use tracing::{debug, warn};

use crate::contract;
use crate::error::{Error, ErrorKind, ResultExt};

/// How the streams are made.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// One group of nodes: the durable consumer they share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSettings {
    /// The consumer's name.
    pub name: String,
    /// Kinds the group takes (`image.>`, `sha256`); empty means every kind.
    pub kinds: Vec<String>,
    /// How long the server waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Cap on tasks in flight across the whole group.
    pub max_ack_pending: i64,
}

impl Default for GroupSettings {
    fn default() -> Self {
        GroupSettings {
            name: contract::DEFAULT_GROUP.to_string(),
            kinds: Vec::new(),
            ack_wait: contract::DEFAULT_ACK_WAIT,
            max_ack_pending: contract::DEFAULT_MAX_ACK_PENDING,
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

/// The subjects a group's consumer takes.
pub fn group_filters(kinds: &[String]) -> Vec<String> {
    if kinds.is_empty() {
        vec![format!("{}>", contract::TASK_PREFIX)]
    } else {
        kinds.iter().map(|k| contract::task_subject(k)).collect()
    }
}

/// The consumer config of a group.
pub fn consumer_config(group: &GroupSettings) -> pull::Config {
    let mut filters = group_filters(&group.kinds);
    let (filter_subject, filter_subjects) = match filters.len() {
        1 => (filters.remove(0), Vec::new()),
        _ => (String::new(), filters),
    };
    pull::Config {
        durable_name: Some(group.name.clone()),
        description: Some("fleet node group".to_string()),
        filter_subject,
        filter_subjects,
        ack_policy: AckPolicy::Explicit,
        ack_wait: group.ack_wait,
        // Attempts are counted by the nodes (a task whose last attempt died
        // with its node must still come back to be dead-lettered), so the
        // server never stops redelivering on its own.
        max_deliver: -1,
        max_ack_pending: group.max_ack_pending,
        max_waiting: 512,
        // 0: as many replicas as the stream has, whoever created it.
        num_replicas: 0,
        ..Default::default()
    }
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
                    Error::with_source(
                        ErrorKind::Setup,
                        format!("creating stream {name}"),
                        create_err,
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
                }
            }
        }
    }
    Ok(())
}

/// Creates or updates a group's durable consumer.
///
/// # Errors
/// [`ErrorKind::Setup`] when the server refuses it (for example a second
/// group whose kinds overlap the first on the work queue).
pub async fn ensure_consumer(js: &Context, group: &GroupSettings) -> Result<(), Error> {
    let stream = js
        .get_stream(contract::TASKS_STREAM)
        .await
        .or_fail(ErrorKind::Setup, || {
            format!("reading stream {}", contract::TASKS_STREAM)
        })?;
    let wanted = consumer_config(group);
    let mut last_err = None;
    // Processes of one group starting at once may race; the loser retries.
    for _ in 0..5 {
        match stream.create_consumer(wanted.clone()).await {
            Ok(_) => return Ok(()),
            Err(err) => {
                warn!(%err, group = %group.name, "consumer not created yet; retrying");
                last_err = Some(err);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    Err(Error::with_source(
        ErrorKind::Setup,
        format!(
            "creating consumer {:?} on {}",
            group.name,
            contract::TASKS_STREAM
        ),
        last_err.expect("the loop ran"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_follow_the_contract() {
        let [tasks, results, dead] = stream_configs(&StreamSettings::default());
        assert_eq!(
            (tasks.name.as_str(), tasks.subjects.as_slice()),
            ("TASKS", &["tasks.>".to_string()][..])
        );
        assert_eq!(tasks.retention, RetentionPolicy::WorkQueue);
        assert_eq!(tasks.discard, DiscardPolicy::New);
        assert_eq!(results.retention, RetentionPolicy::Limits);
        assert_eq!(results.max_age, contract::DEFAULT_RESULTS_MAX_AGE);
        assert_eq!(dead.subjects, vec!["dead.>".to_string()]);
        for s in [&tasks, &results, &dead] {
            assert!(s.allow_direct, "{}: direct gets read kept results", s.name);
            assert_eq!(s.storage, StorageType::File);
            assert_eq!(s.duplicate_window, contract::DUPLICATE_WINDOW);
        }
    }

    #[test]
    fn replicas_reach_every_stream() {
        let three = StreamSettings {
            replicas: 3,
            ..Default::default()
        };
        assert!(stream_configs(&three).iter().all(|s| s.num_replicas == 3));
    }

    #[test]
    fn a_group_of_all_kinds_has_one_filter() {
        let c = consumer_config(&GroupSettings::default());
        assert_eq!(c.filter_subject, "tasks.>");
        assert!(c.filter_subjects.is_empty());
        assert_eq!(c.durable_name.as_deref(), Some("workers"));
        assert_eq!(c.ack_policy, AckPolicy::Explicit);
        assert_eq!(c.max_deliver, -1, "nodes count attempts, not the server");
        assert_eq!(c.ack_wait, contract::DEFAULT_ACK_WAIT);
    }

    #[test]
    fn a_group_of_several_kinds_has_several_filters() {
        let group = GroupSettings {
            name: "images".into(),
            kinds: vec!["image.>".into(), "thumb".into()],
            ..Default::default()
        };
        let c = consumer_config(&group);
        assert!(c.filter_subject.is_empty());
        assert_eq!(c.filter_subjects, vec!["tasks.image.>", "tasks.thumb"]);
        let one = GroupSettings {
            kinds: vec!["sha256".into()],
            ..Default::default()
        };
        assert_eq!(consumer_config(&one).filter_subject, "tasks.sha256");
    }
}
