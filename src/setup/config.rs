//! The streams' and the groups' consumers' configuration, as plain values:
//! what `fleet setup` makes and what [`super::apply`] compares against.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, PriorityPolicy};
use async_nats::jetstream::stream::{
    Config, DiscardPolicy, RetentionPolicy, Source, StorageType, SubjectTransform,
};

use super::tenant;
use crate::contract;
use crate::priority::{Priority, BANDS};

const GIB: i64 = 1024 * 1024 * 1024;

/// How the streams are made, limits included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    /// Replicas of each stream: 1 on one server, 3 on a cluster.
    pub replicas: usize,
    /// Most tasks `TASKS` holds; a full queue refuses new tasks.
    pub tasks_max_msgs: i64,
    /// Most bytes `TASKS` holds; a full queue refuses new tasks.
    pub tasks_max_bytes: i64,
    /// How long `RESULTS` keeps a result.
    pub results_max_age: Duration,
    /// Most bytes `RESULTS` holds; the oldest results go first.
    pub results_max_bytes: i64,
    /// How long `DEAD` keeps a dead letter.
    pub dead_max_age: Duration,
    /// Most bytes `DEAD` holds; the oldest letters go first.
    pub dead_max_bytes: i64,
    /// Tenants whose schedules to make room for (`SCHEDULES_<tenant>`,
    /// sourced by `TASKS`; [`super::tenant`]).
    pub tenants: Vec<String>,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            replicas: 1,
            tasks_max_msgs: 5_000_000,
            tasks_max_bytes: 2 * GIB,
            results_max_age: contract::DEFAULT_RESULTS_MAX_AGE,
            results_max_bytes: 2 * GIB,
            dead_max_age: Duration::from_secs(14 * 24 * 60 * 60),
            dead_max_bytes: GIB / 2,
            tenants: Vec::new(),
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
    /// An ADR-42 priority group with the `overflow` policy: nodes that pull
    /// with a threshold (central nodes backing up an edge site,
    /// [`crate::edge`]) get tasks only while that many wait; the others
    /// pull unconditionally. `None`: no priority group.
    pub priority_group: Option<String>,
}

impl Default for GroupSettings {
    fn default() -> Self {
        GroupSettings {
            name: contract::DEFAULT_GROUP.to_string(),
            kinds: Vec::new(),
            ack_wait: contract::DEFAULT_ACK_WAIT,
            max_ack_pending: contract::DEFAULT_MAX_ACK_PENDING,
            priority_group: None,
        }
    }
}

/// How long `SCHEDULES` keeps a fired task (`due.<kind>`) after `TASKS` took
/// it in: long enough to outlive any stall of the sourcing. Schedules
/// themselves carry `Nats-TTL: never` and stay until removed or fired.
pub const SCHEDULES_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// How long a cancel mark is kept: longer than any task is queued and run.
pub const CANCEL_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The streams of the wire contract: `SCHEDULES` (first: `TASKS` sources
/// it), `TASKS`, `RESULTS` and `DEAD`, each capturing the fleet account's
/// subjects and every tenant's, then the key-value buckets of cancel marks,
/// unique keys, limits and permits.
pub fn stream_configs(settings: &StreamSettings) -> Vec<Config> {
    let base = |name: &str, prefix: &str| Config {
        name: name.to_string(),
        subjects: contract::stream_subjects(prefix),
        storage: StorageType::File,
        num_replicas: settings.replicas,
        duplicate_window: contract::DUPLICATE_WINDOW,
        allow_direct: true,
        // The server says -1 for "no limit"; so must we, or every
        // `fleet setup` would see a change.
        max_messages: -1,
        ..Default::default()
    };
    let mut all = vec![
        Config {
            name: contract::SCHEDULES_STREAM.to_string(),
            subjects: std::iter::once(format!("{}>", contract::SCHEDULE_PREFIX))
                .chain(BANDS.iter().map(|b| format!("{}>", b.due_prefix())))
                .collect(),
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::Old,
            max_age: SCHEDULES_MAX_AGE,
            // Schedules and fired copies are small: a schedule firing every
            // second leaves some 30 MB a week.
            max_bytes: GIB / 4,
            allow_message_schedules: true,
            allow_message_ttl: true,
            allow_rollup: true,
            ..base(contract::SCHEDULES_STREAM, contract::SCHEDULE_PREFIX)
        },
        Config {
            retention: RetentionPolicy::WorkQueue,
            discard: DiscardPolicy::New,
            max_messages: settings.tasks_max_msgs,
            max_bytes: settings.tasks_max_bytes,
            allow_message_ttl: true,
            // Submitters send tasks in fast batches (ADR-50): one flow ack
            // per batch of tasks instead of a PubAck per task.
            allow_batch_publish: true,
            // What a schedule fires (`due.<kind>`, `due-high.<kind>`) comes
            // in as a task of its band (`tasks.<kind>`, `tasks-high.<kind>`),
            // headers and all.
            sources: Some(vec![Source {
                name: contract::SCHEDULES_STREAM.to_string(),
                subject_transforms: BANDS
                    .iter()
                    .map(|b| SubjectTransform {
                        source: format!("{}>", b.due_prefix()),
                        destination: format!("{}>", b.task_prefix()),
                    })
                    .collect(),
                ..Default::default()
            }]),
            subjects: BANDS
                .iter()
                .flat_map(|b| contract::stream_subjects(b.task_prefix()))
                .collect(),
            ..base(contract::TASKS_STREAM, contract::TASK_PREFIX)
        },
        Config {
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::Old,
            max_age: settings.results_max_age,
            max_bytes: settings.results_max_bytes,
            allow_message_ttl: true,
            ..base(contract::RESULTS_STREAM, contract::RESULT_PREFIX)
        },
        Config {
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::Old,
            max_age: settings.dead_max_age,
            max_bytes: settings.dead_max_bytes,
            ..base(contract::DEAD_STREAM, contract::DEAD_PREFIX)
        },
        Config {
            max_age: CANCEL_MAX_AGE,
            ..bucket(contract::CANCEL_BUCKET, settings.replicas)
        },
        bucket(contract::UNIQUE_BUCKET, settings.replicas),
        bucket(contract::LIMITS_BUCKET, settings.replicas),
        bucket(contract::PERMITS_BUCKET, settings.replicas),
    ];
    // Each tenant's schedules, after SCHEDULES; TASKS takes in what they fire.
    for (i, t) in settings.tenants.iter().enumerate() {
        let tenant_schedules = tenant::schedules_config(t, &all[0]);
        all.insert(1 + i, tenant_schedules);
    }
    let tasks = &mut all[1 + settings.tenants.len()];
    let sources = tasks.sources.get_or_insert_with(Vec::new);
    sources.extend(settings.tenants.iter().map(|t| tenant::source(t)));
    all
}

/// A key-value bucket (the stream `KV_<name>`): one value per key, keys
/// that expire on their own (`Nats-TTL`), a marker when they do.
fn bucket(name: &str, replicas: usize) -> Config {
    Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        storage: StorageType::File,
        num_replicas: replicas,
        max_messages_per_subject: 1,
        max_messages: -1,
        max_bytes: 64 * 1024 * 1024,
        discard: DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        allow_message_ttl: true,
        subject_delete_marker_ttl: Some(Duration::from_secs(60)),
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

/// The subjects a group's consumer of `band` takes: its kinds in that
/// band, the fleet account's and every tenant's; for a group of every
/// kind, the whole band (`tasks.>`, `tenant.*.tasks.>`). Never empty:
/// the bands share `TASKS`, a work queue, where consumers may not overlap.
pub fn group_filters(kinds: &[String], band: Priority) -> Vec<String> {
    let prefixes = contract::stream_subjects(band.task_prefix());
    if kinds.is_empty() {
        return prefixes;
    }
    kinds
        .iter()
        .flat_map(|kind| {
            prefixes
                .iter()
                .map(move |p| format!("{}{kind}", p.trim_end_matches('>')))
        })
        .collect()
}

/// The consumer configs of a group, one per band, high first.
pub fn consumer_configs(group: &GroupSettings) -> Vec<(Priority, pull::Config)> {
    BANDS
        .iter()
        .map(|&band| (band, consumer_config(group, band)))
        .collect()
}

/// The consumer config of a group's `band` (named [`Priority::consumer`]).
pub fn consumer_config(group: &GroupSettings, band: Priority) -> pull::Config {
    pull::Config {
        durable_name: Some(band.consumer(&group.name)),
        description: Some(format!("fleet node group {}, {band} priority", group.name)),
        filter_subjects: group_filters(&group.kinds, band),
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
        priority_groups: group.priority_group.iter().cloned().collect(),
        priority_policy: match group.priority_group {
            Some(_) => PriorityPolicy::Overflow,
            None => PriorityPolicy::None,
        },
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_follow_the_contract_and_capture_every_tenant() {
        let [_, tasks, results, dead, ..] = &stream_configs(&StreamSettings::default())[..] else {
            panic!("four streams, two buckets")
        };
        assert_eq!(tasks.name, "TASKS");
        assert_eq!(
            tasks.subjects,
            [
                "tasks-high.>",
                "tenant.*.tasks-high.>",
                "tasks.>",
                "tenant.*.tasks.>",
                "tasks-low.>",
                "tenant.*.tasks-low.>"
            ]
        );
        assert_eq!(results.subjects, ["results.>", "tenant.*.results.>"]);
        assert_eq!(dead.subjects, ["dead.>", "tenant.*.dead.>"]);
        assert_eq!(tasks.retention, RetentionPolicy::WorkQueue);
        assert_eq!(results.retention, RetentionPolicy::Limits);
        assert_eq!(results.max_age, contract::DEFAULT_RESULTS_MAX_AGE);
        for s in [&tasks, &results, &dead] {
            assert!(s.allow_direct, "{}: direct gets read kept results", s.name);
            assert_eq!(s.storage, StorageType::File);
            assert_eq!(s.duplicate_window, contract::DUPLICATE_WINDOW);
        }
    }

    #[test]
    fn every_stream_is_bounded() {
        let [_, tasks, results, dead, ..] = &stream_configs(&StreamSettings::default())[..] else {
            panic!("four streams, two buckets")
        };
        // A full queue refuses new tasks (the submitter hears 503) rather
        // than dropping queued ones.
        assert_eq!(tasks.discard, DiscardPolicy::New);
        assert!(tasks.allow_batch_publish, "submitters send fast batches");
        assert!(tasks.max_messages > 0 && tasks.max_bytes > 0);
        // Results and dead letters make room by dropping the oldest.
        assert_eq!(
            (results.discard, dead.discard),
            (DiscardPolicy::Old, DiscardPolicy::Old)
        );
        assert!(results.max_bytes > 0 && dead.max_bytes > 0);
        assert_eq!(dead.max_age, Duration::from_secs(14 * 24 * 3600));
        assert!(results.allow_message_ttl, "results may carry their own TTL");
        let all = stream_configs(&StreamSettings::default());
        assert!(
            all.iter().all(|s| s.max_bytes > 0),
            "every stream is bounded"
        );
        let total: i64 = all.iter().map(|s| s.max_bytes).sum();
        assert!(
            total < 10 * 1000 * 1000 * 1000,
            "fits nats.conf's max_file_store of 10GB"
        );
        // The shipped accounts' JetStream limits hold every stream, on a
        // cluster every replica of it (the server counts them all).
        let account_limit = |file: &str| -> i64 {
            let text =
                std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
            let at = text.find("max_file: ").expect("an account max_file") + "max_file: ".len();
            let gb: i64 = text[at..].split("GB").next().unwrap().parse().unwrap();
            gb * 1000 * 1000 * 1000
        };
        assert!(total < account_limit("deploy/secure/nats.conf"));
        assert!(3 * total < account_limit("deploy/cluster/accounts.conf"));
    }

    #[test]
    fn schedules_fire_into_tasks_and_no_consumer_takes_them() {
        let all = stream_configs(&StreamSettings::default());
        let (schedules, tasks) = (&all[0], &all[1]);
        assert_eq!(schedules.name, "SCHEDULES");
        assert_eq!(
            schedules.subjects,
            ["sched.>", "due-high.>", "due.>", "due-low.>"]
        );
        assert!(schedules.allow_message_schedules && schedules.allow_message_ttl);
        // Limits retention: a schedule is never removed by an ack.
        assert_eq!(schedules.retention, RetentionPolicy::Limits);
        let sources = tasks.sources.as_deref().expect("TASKS sources SCHEDULES");
        assert_eq!(sources.len(), 1);
        assert_eq!(sources[0].name, "SCHEDULES");
        let t: Vec<_> = sources[0]
            .subject_transforms
            .iter()
            .map(|t| (t.source.as_str(), t.destination.as_str()))
            .collect();
        assert_eq!(
            t,
            [
                ("due-high.>", "tasks-high.>"),
                ("due.>", "tasks.>"),
                ("due-low.>", "tasks-low.>")
            ],
            "only what fired comes in, as a task of its kind and band"
        );
        // TASKS' own subjects never cover a schedule.
        assert!(tasks.subjects.iter().all(|s| !s.starts_with("sched.")));
    }

    #[test]
    fn buckets_hold_one_expiring_value_per_key() {
        let all = stream_configs(&StreamSettings::default());
        assert_eq!(all.len(), 8, "four streams, four buckets");
        for (b, name) in all[4..].iter().zip([
            "fleet-cancel",
            "fleet-unique",
            "fleet-limits",
            "fleet-permits",
        ]) {
            assert_eq!(b.name, format!("KV_{name}"));
            assert_eq!(b.subjects, [format!("$KV.{name}.>")]);
            assert_eq!(b.max_messages_per_subject, 1);
            assert!(b.allow_message_ttl && b.allow_rollup && b.allow_direct);
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
    fn a_group_of_all_kinds_takes_each_band_whole() {
        let configs = consumer_configs(&GroupSettings::default());
        let names: Vec<_> = configs
            .iter()
            .map(|(_, c)| c.durable_name.clone().unwrap())
            .collect();
        assert_eq!(names, ["workers-high", "workers", "workers-low"]);
        assert_eq!(
            configs[0].1.filter_subjects,
            ["tasks-high.>", "tenant.*.tasks-high.>"]
        );
        let c = &configs[1].1;
        assert_eq!(
            c.filter_subjects,
            ["tasks.>", "tenant.*.tasks.>"],
            "every normal subject of TASKS, tenants' too"
        );
        assert!(c.filter_subject.is_empty());
        assert_eq!(c.durable_name.as_deref(), Some("workers"));
        assert_eq!(c.ack_policy, AckPolicy::Explicit);
        assert_eq!(c.max_deliver, -1, "nodes count attempts, not the server");
        assert_eq!(c.ack_wait, contract::DEFAULT_ACK_WAIT);
        assert!(c.priority_groups.is_empty());
        assert_eq!(c.priority_policy, PriorityPolicy::None);
    }

    #[test]
    fn an_edge_sites_group_has_an_overflow_priority_group() {
        let site = GroupSettings {
            name: "site1".into(),
            priority_group: Some("edge".into()),
            ..Default::default()
        };
        // Every band's consumer: a central node pulls each of them.
        for (_, c) in consumer_configs(&site) {
            assert_eq!(c.priority_groups, ["edge"]);
            assert_eq!(c.priority_policy, PriorityPolicy::Overflow);
        }
        let c = consumer_config(&site, Priority::Normal);
        assert_eq!(
            c.ack_policy,
            AckPolicy::Explicit,
            "overflow needs explicit acks"
        );
    }

    #[test]
    fn a_group_of_some_kinds_takes_them_in_every_tenant() {
        let group = GroupSettings {
            name: "images".into(),
            kinds: vec!["image.>".into(), "thumb".into()],
            ..Default::default()
        };
        assert_eq!(
            consumer_config(&group, Priority::Normal).filter_subjects,
            [
                "tasks.image.>",
                "tenant.*.tasks.image.>",
                "tasks.thumb",
                "tenant.*.tasks.thumb"
            ]
        );
        assert_eq!(
            consumer_config(&group, Priority::Low).filter_subjects,
            [
                "tasks-low.image.>",
                "tenant.*.tasks-low.image.>",
                "tasks-low.thumb",
                "tenant.*.tasks-low.thumb"
            ]
        );
    }
}
