//! Making the streams and consumers ([`apply`], [`ensure_streams`],
//! [`ensure_consumer`]) and binding to a group's consumer ([`bind`]): the
//! I/O over [`super::config`]'s values.

use std::time::Duration;

use async_nats::jetstream::consumer::{self, pull};
use async_nats::jetstream::context::CreateStreamErrorKind;
use async_nats::jetstream::stream::{Config, ConsumerErrorKind, Source};
use async_nats::jetstream::{Context, ErrorCode};
use tracing::{debug, warn};

use super::config::{consumer_configs, stream_configs, GroupSettings, StreamSettings};
use super::tenant;
use crate::contract;
use crate::error::{Error, ErrorKind, ResultExt};
use crate::priority::{self, Priority};

/// What [`apply`] did to each stream and consumer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Streams and consumers made.
    pub created: Vec<String>,
    /// Streams and consumers changed to the settings.
    pub updated: Vec<String>,
    /// Streams and consumers already as the settings say.
    pub unchanged: Vec<String>,
}

/// Makes the streams and the groups' consumers as `settings` and `groups`
/// say, creating what is missing and updating what differs (`fleet setup`).
///
/// # Errors
/// [`ErrorKind::Setup`] when the server refuses a create or an update (an
/// update may not change a stream's retention or storage, for instance);
/// [`ErrorKind::Auth`]-like refusals surface as the server words them.
pub async fn apply(
    js: &Context,
    settings: &StreamSettings,
    groups: &[GroupSettings],
) -> Result<Applied, Error> {
    let mut applied = Applied::default();
    for t in &settings.tenants {
        tenant::check_tenant_name(t).map_err(|e| Error::new(ErrorKind::Usage, e))?;
    }
    for mut config in stream_configs(settings) {
        let name = format!("stream {}", config.name);
        match js.get_stream(&config.name).await {
            Ok(stream) => {
                let current = stream.cached_info().config.clone();
                if config.name == contract::TASKS_STREAM {
                    tenant::keep_tenant_sources(current.sources.as_deref(), &mut config);
                }
                if same_stream(&current, &config) {
                    applied.unchanged.push(name);
                } else {
                    js.update_stream(config)
                        .await
                        .or_fail(ErrorKind::Setup, || format!("updating {name}"))?;
                    applied.updated.push(name);
                }
            }
            Err(err) if !is_not_found(&err) => {
                return Err(Error::with_source(
                    ErrorKind::Setup,
                    format!("reading {name}"),
                    err,
                ));
            }
            Err(_) => {
                js.create_stream(config)
                    .await
                    .map_err(|e| setup_error(&name, e))?;
                applied.created.push(name);
            }
        }
    }
    let tasks = js
        .get_stream_no_info(contract::TASKS_STREAM)
        .await
        .or_fail(ErrorKind::Setup, || {
            format!("reading stream {}", contract::TASKS_STREAM)
        })?;
    for group in groups {
        priority::check_group_name(&group.name).map_err(|e| Error::new(ErrorKind::Usage, e))?;
        for (band, wanted) in normal_first(consumer_configs(group)) {
            let name = match band {
                Priority::Normal => format!("group {}", group.name),
                band => format!("group {} ({band})", group.name),
            };
            let consumer = band.consumer(&group.name);
            let existed = tasks
                .consumer_info(&consumer)
                .await
                .ok()
                .map(|i| i.config.clone());
            match existed {
                Some(current) if same_consumer(&current, &wanted) => applied.unchanged.push(name),
                existed => {
                    tasks
                        .create_consumer(wanted)
                        .await
                        .or_fail(ErrorKind::Setup, || format!("making {name}"))?;
                    if existed.is_some() {
                        applied.updated.push(name);
                    } else {
                        applied.created.push(name);
                    }
                }
            }
        }
    }
    Ok(applied)
}

/// A group's band consumers, normal first: a group made before priority
/// bands has an unfiltered normal consumer, which must take its band's
/// filters before the other bands' consumers may exist beside it on the
/// work queue.
fn normal_first(mut configs: Vec<(Priority, pull::Config)>) -> Vec<(Priority, pull::Config)> {
    configs.sort_by_key(|(band, _)| *band != Priority::Normal);
    configs
}

fn is_not_found(err: &async_nats::jetstream::context::GetStreamError) -> bool {
    matches!(err.kind(), async_nats::jetstream::context::GetStreamErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

fn same_stream(current: &Config, wanted: &Config) -> bool {
    current.subjects == wanted.subjects
        && current.num_replicas == wanted.num_replicas
        && current.max_messages == wanted.max_messages
        && current.max_bytes == wanted.max_bytes
        && current.max_age == wanted.max_age
        && current.discard == wanted.discard
        && current.allow_message_ttl == wanted.allow_message_ttl
        && current.allow_batch_publish == wanted.allow_batch_publish
        && current.allow_direct == wanted.allow_direct
        && current.duplicate_window == wanted.duplicate_window
        && current.allow_message_schedules == wanted.allow_message_schedules
        && same_sources(current.sources.as_deref(), wanted.sources.as_deref())
}

fn same_sources(current: Option<&[Source]>, wanted: Option<&[Source]>) -> bool {
    let key = |s: &[Source]| {
        s.iter()
            .map(|s| {
                let t: Vec<_> = s
                    .subject_transforms
                    .iter()
                    .map(|t| (t.source.clone(), t.destination.clone()))
                    .collect();
                (s.name.clone(), t)
            })
            .collect::<Vec<_>>()
    };
    key(current.unwrap_or_default()) == key(wanted.unwrap_or_default())
}

fn same_consumer(current: &consumer::Config, wanted: &pull::Config) -> bool {
    current.filter_subjects == wanted.filter_subjects
        && current.ack_wait == wanted.ack_wait
        && current.max_ack_pending == wanted.max_ack_pending
        && current.max_deliver == wanted.max_deliver
        && current.priority_groups == wanted.priority_groups
        && current.priority_policy == wanted.priority_policy
}

fn setup_error(what: &str, err: async_nats::jetstream::context::CreateStreamError) -> Error {
    let kind = match err.kind() {
        CreateStreamErrorKind::JetStreamUnavailable => ErrorKind::NotSetUp,
        _ => ErrorKind::Setup,
    };
    Error::with_source(kind, format!("making {what}"), err)
}

/// Creates `TASKS`, `RESULTS` and `DEAD` where missing; uses them as they
/// are where present (`--create` on one trusted machine).
///
/// # Errors
/// [`ErrorKind::Setup`] when a stream can neither be created nor found.
pub async fn ensure_streams(js: &Context, settings: &StreamSettings) -> Result<(), Error> {
    for config in stream_configs(settings) {
        let name = config.name.clone();
        match create_stream(js, config).await {
            Ok(_) => debug!(stream = %name, "stream ready"),
            Err(create_err) => {
                // Exists with another config (an operator's edit, another
                // version, another process that came first): use it as it is.
                let mut stream = js
                    .get_stream(&name)
                    .await
                    .map_err(|_| setup_error(&format!("stream {name}"), create_err))?;
                let replicas = stream
                    .info()
                    .await
                    .map(|i| i.config.num_replicas)
                    .unwrap_or(0);
                if replicas != settings.replicas {
                    warn!(stream = %name, replicas, wanted = settings.replicas,
                        "stream exists with another replica count; using it (change it with: fleet setup --replicas {})", settings.replicas);
                }
            }
        }
    }
    Ok(())
}

/// Creates a stream, asking again when JetStream does not answer in time:
/// an R3 stream on a cluster just formed, its servers busy and syncing
/// every write, can take longer than a request's timeout (`fleet setup`
/// failed so in the benchmark's smoke test: "making stream SCHEDULES:
/// jetstream request timed out"). Asking again with the same config is
/// safe: the server answers with the stream once it exists.
async fn create_stream(
    js: &Context,
    config: Config,
) -> Result<async_nats::jetstream::stream::Stream, async_nats::jetstream::context::CreateStreamError>
{
    let mut tries = 0;
    loop {
        match js.create_stream(config.clone()).await {
            Err(err) if matches!(err.kind(), CreateStreamErrorKind::TimedOut) && tries < 4 => {
                tries += 1;
                warn!(stream = %config.name, "JetStream did not answer in time; asking again");
            }
            other => return other,
        }
    }
}

/// Creates a group's durable consumers, one per band, where missing
/// (`--create`).
///
/// # Errors
/// [`ErrorKind::Setup`] when the server refuses one (for example a second
/// group whose kinds overlap the first on the work queue).
pub async fn ensure_consumer(js: &Context, group: &GroupSettings) -> Result<(), Error> {
    priority::check_group_name(&group.name).map_err(|e| Error::new(ErrorKind::Usage, e))?;
    let stream = js
        .get_stream_no_info(contract::TASKS_STREAM)
        .await
        .or_fail(ErrorKind::Setup, || {
            format!("reading stream {}", contract::TASKS_STREAM)
        })?;
    for (band, wanted) in normal_first(consumer_configs(group)) {
        ensure_one(&stream, &band.consumer(&group.name), wanted).await?;
    }
    Ok(())
}

async fn ensure_one(
    stream: &async_nats::jetstream::stream::Stream<()>,
    name: &str,
    wanted: pull::Config,
) -> Result<(), Error> {
    let mut last_err = None;
    // Processes of one group starting at once may race; the loser retries.
    for _ in 0..5 {
        match stream.get_or_create_consumer(name, wanted.clone()).await {
            Ok(_) => return Ok(()),
            Err(err) => {
                warn!(%err, consumer = %name, "consumer not created yet; retrying");
                last_err = Some(err);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    Err(Error::with_source(
        ErrorKind::Setup,
        format!("creating consumer {name:?} on {}", contract::TASKS_STREAM),
        last_err.expect("the loop ran"),
    ))
}

/// Binds to group `name`'s consumer on `TASKS`: one request, read-only.
///
/// # Errors
/// [`ErrorKind::NotSetUp`] when the stream or the consumer does not exist,
/// or JetStream is not enabled for the account (run `fleet setup`);
/// [`ErrorKind::Connection`] when JetStream does not answer.
pub async fn bind(js: &Context, name: &str) -> Result<consumer::Info, Error> {
    match js
        .get_consumer_from_stream::<pull::Config, _, _>(name, contract::TASKS_STREAM)
        .await
    {
        Ok(consumer) => Ok(consumer.cached_info().clone()),
        Err(err) => {
            let not_set_up = match err.kind() {
                ConsumerErrorKind::JetStream(e) => matches!(
                    e.error_code(),
                    ErrorCode::CONSUMER_NOT_FOUND
                        | ErrorCode::STREAM_NOT_FOUND
                        | ErrorCode::JETSTREAM_NOT_ENABLED
                        | ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT
                ),
                _ => false,
            };
            if not_set_up {
                Err(Error::with_source(
                    ErrorKind::NotSetUp,
                    format!(
                        "no group {name:?} on stream {}: run `fleet setup` (or start with --create on a single trusted machine)",
                        contract::TASKS_STREAM
                    ),
                    err,
                ))
            } else {
                Err(Error::with_source(
                    ErrorKind::Connection,
                    format!(
                        "binding group {name:?} on stream {}",
                        contract::TASKS_STREAM
                    ),
                    err,
                ))
            }
        }
    }
}
