//! A tenant's schedules (pure): the stream `SCHEDULES_<tenant>` that holds
//! them and the source by which `TASKS` takes in what they fire.
//!
//! Each tenant gets a stream of its own rather than a share of one stream
//! of every tenant's schedules, because the server checks a schedule's
//! `Nats-Schedule-Target` against the subjects of the schedule's own stream
//! and nothing else (it does not map it through the tenant's import). In a
//! shared stream capturing `tenant.*.sched.>` and `tenant.*.due.>`, alice's
//! schedule could name `tenant.bob.due.echo` (a task in bob's space) or
//! `tenant.bob.sched.nightly` (rolling bob's schedule away); in
//! `SCHEDULES_alice`, whose subjects are alice's alone, the server refuses
//! both (10190 "target is invalid"), and the fleet's own `due.<kind>` too.
//! The same walls make it safe to give a tenant direct gets, purges and
//! message deletes on its stream: everything in it is its own.

use async_nats::jetstream::stream::{Config, Source, SubjectTransform};

use crate::contract;
use crate::priority::BANDS;

/// Most bytes one tenant's schedules may hold (fired copies included,
/// which go after `SCHEDULES`' max age): a tenant fills its own stream,
/// never the fleet's `SCHEDULES`.
pub const TENANT_SCHEDULES_MAX_BYTES: i64 = 64 * 1024 * 1024;

/// Whether `tenant` may name a tenant: one subject token of letters,
/// digits, `-` and `_` (it is also part of a stream name), 64 bytes at most.
pub fn check_tenant_name(tenant: &str) -> Result<(), String> {
    if contract::is_name_token(tenant, 64) {
        Ok(())
    } else {
        Err(format!(
            "bad tenant {tenant:?}: use letters, digits, - and _ (64 at most)"
        ))
    }
}

/// The subjects of `tenant`'s schedule stream: its schedules and what they
/// fire, in every band (`tenant.<t>.sched.>`, `tenant.<t>.due-high.>`, …).
pub fn schedule_subjects(tenant: &str) -> Vec<String> {
    std::iter::once(format!("{}>", contract::SCHEDULE_PREFIX))
        .chain(BANDS.iter().map(|b| format!("{}>", b.due_prefix())))
        .map(|s| contract::in_tenant(Some(tenant), &s))
        .collect()
}

/// `tenant`'s schedule stream: the fleet's `SCHEDULES` (given as
/// `schedules`) with the tenant's name, subjects and a smaller bound.
pub fn schedules_config(tenant: &str, schedules: &Config) -> Config {
    Config {
        name: contract::tenant_schedules_stream(tenant),
        subjects: schedule_subjects(tenant),
        max_bytes: TENANT_SCHEDULES_MAX_BYTES,
        ..schedules.clone()
    }
}

/// How `TASKS` takes in what `tenant`'s schedules fire: `tenant.<t>.due.>`
/// as `tenant.<t>.tasks.>`, each band into its own.
pub fn source(tenant: &str) -> Source {
    Source {
        name: contract::tenant_schedules_stream(tenant),
        subject_transforms: BANDS
            .iter()
            .map(|b| SubjectTransform {
                source: contract::in_tenant(Some(tenant), &format!("{}>", b.due_prefix())),
                destination: contract::in_tenant(Some(tenant), &format!("{}>", b.task_prefix())),
            })
            .collect(),
        ..Default::default()
    }
}

/// Adds to `wanted` (the `TASKS` that `fleet setup` is about to make) the
/// tenants' sources `current` (the `TASKS` there is) has and `wanted`
/// lacks: a `fleet setup` without `--tenant` keeps the tenants set up
/// before.
pub fn keep_tenant_sources(current: Option<&[Source]>, wanted: &mut Config) {
    let Some(current) = current else { return };
    let sources = wanted.sources.get_or_insert_with(Vec::new);
    for source in current {
        let tenant = source.name.starts_with(contract::TENANT_SCHEDULES_PREFIX);
        if tenant && !sources.iter().any(|s| s.name == source.name) {
            sources.push(source.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_schedule_stream_holds_only_its_space() {
        let base = Config {
            name: "SCHEDULES".into(),
            subjects: vec!["sched.>".into()],
            allow_message_schedules: true,
            ..Default::default()
        };
        let c = schedules_config("alice", &base);
        assert_eq!(c.name, "SCHEDULES_alice");
        assert_eq!(
            c.subjects,
            [
                "tenant.alice.sched.>",
                "tenant.alice.due-high.>",
                "tenant.alice.due.>",
                "tenant.alice.due-low.>"
            ]
        );
        assert!(c.allow_message_schedules);
        assert!(
            c.subjects.iter().all(|s| s.starts_with("tenant.alice.")),
            "no subject outside alice's space may be a target"
        );
    }

    #[test]
    fn tasks_takes_a_tenants_firings_into_its_own_space() {
        let s = source("bob");
        assert_eq!(s.name, "SCHEDULES_bob");
        let pairs: Vec<_> = s
            .subject_transforms
            .iter()
            .map(|t| (t.source.as_str(), t.destination.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("tenant.bob.due-high.>", "tenant.bob.tasks-high.>"),
                ("tenant.bob.due.>", "tenant.bob.tasks.>"),
                ("tenant.bob.due-low.>", "tenant.bob.tasks-low.>")
            ]
        );
    }

    #[test]
    fn setup_without_tenants_keeps_those_set_up_before() {
        let current = vec![
            Source {
                name: "SCHEDULES".into(),
                ..Default::default()
            },
            source("alice"),
            Source {
                name: "OTHER".into(),
                ..Default::default()
            },
        ];
        let mut wanted = Config {
            sources: Some(vec![Source {
                name: "SCHEDULES".into(),
                ..Default::default()
            }]),
            ..Default::default()
        };
        keep_tenant_sources(Some(&current), &mut wanted);
        let names: Vec<_> = wanted
            .sources
            .unwrap()
            .iter()
            .map(|s| s.name.clone())
            .collect();
        assert_eq!(names, ["SCHEDULES", "SCHEDULES_alice"]);
    }

    #[test]
    fn tenant_names_are_one_token() {
        for good in ["alice", "b-2", "x_y"] {
            assert!(check_tenant_name(good).is_ok(), "{good}");
        }
        for bad in ["", "a.b", "a*", ">", "a b", &"x".repeat(65)] {
            assert!(check_tenant_name(bad).is_err(), "{bad}");
        }
    }
}
