//! Which occurrence of a recurring schedule a task is (pure; the node's
//! envelope reads it, `fleet schedule list` reads it back).
//!
//! Every occurrence of a schedule carries the schedule's headers
//! unchanged, so a recurring schedule carries no `Task-Id`, only
//! `Task-Schedule: <name>`. What differs per occurrence is set by the
//! server: the fired copy is stored in `SCHEDULES` as `due.<kind>` under a
//! sequence of its own, and `TASKS` takes it in with
//! `Nats-Stream-Source: SCHEDULES <that sequence> …`. So the occurrence's
//! task id is `sched.<name>.<sequence>`: the same on every delivery of it,
//! different for every firing, growing with time, and its result is kept at
//! `results.sched.<name>.<sequence>`.

use async_nats::HeaderMap;

use crate::contract::{self, header};

/// The `SCHEDULES` sequence a `Nats-Stream-Source` value names, when the
/// message came from `SCHEDULES` (`SCHEDULES 12 due.> tasks.> due.echo
/// Od1aoPeI` on nats-server 2.15; a domain may follow the name after `:`)
/// or from a tenant's `SCHEDULES_<tenant>`.
pub fn source_seq(value: &str) -> Option<u64> {
    let mut tokens = value.split_whitespace();
    let stream = tokens.next()?;
    let stream = stream.split(':').next()?;
    let tenant_stream = stream
        .strip_prefix(contract::TENANT_SCHEDULES_PREFIX)
        .is_some_and(|t| !t.is_empty());
    if stream != contract::SCHEDULES_STREAM && !tenant_stream {
        return None;
    }
    tokens.next()?.parse().ok().filter(|seq| *seq > 0)
}

/// The task id of a fired occurrence of a recurring schedule: a task that
/// names its schedule (`Task-Schedule`), no `Task-Id`, and came from
/// `SCHEDULES`. `None` for any other task (it keeps the usual id).
pub fn task_id(headers: &HeaderMap) -> Option<String> {
    // Task-Schedule first: most tasks have none, and stop at one lookup.
    let name = header::get(headers, header::TASK_SCHEDULE)?;
    if header::get(headers, header::TASK_ID).is_some() {
        return None;
    }
    let seq = source_seq(header::get(headers, header::STREAM_SOURCE)?)?;
    Some(contract::occurrence_task_id(name, seq))
}

/// The scheduler a task names (`Nats-Scheduler`, set by the server on what
/// a schedule fires) when it is outside the space of `tenant`, the tenant
/// the task was stored under (`None`: the fleet account's own). Such a
/// task is not run and gets no result: a schedule fires only into its own
/// stream, and a tenant's stream holds only its own subjects, so this
/// takes a forged header or a misconfigured stream; writing its result
/// would put words chosen in one space into another's.
pub fn foreign_scheduler<'a>(tenant: Option<&str>, headers: &'a HeaderMap) -> Option<&'a str> {
    let scheduler = header::get(headers, header::SCHEDULER)?;
    let (space, _) = contract::split_tenant(scheduler);
    (space != tenant).then_some(scheduler)
}

/// The subjects the results of schedule `name`'s occurrences are kept on:
/// `results.sched.<name>.>`.
pub fn results_filter(name: &str) -> String {
    format!(
        "{}{}{name}.>",
        contract::RESULT_PREFIX,
        contract::SCHEDULE_PREFIX
    )
}

/// The schedule name and `SCHEDULES` sequence of an occurrence's task id
/// (`sched.<name>.<seq>`), or of its result subject
/// (`results.sched.<name>.<seq>`).
pub fn parse(id_or_subject: &str) -> Option<(&str, u64)> {
    let id = id_or_subject
        .strip_prefix(contract::RESULT_PREFIX)
        .unwrap_or(id_or_subject);
    let rest = id.strip_prefix(contract::SCHEDULE_PREFIX)?;
    let (name, seq) = rest.split_once('.')?;
    if name.is_empty() {
        return None;
    }
    Some((name, seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, *v);
        }
        h
    }

    const SOURCE: &str = "SCHEDULES 12 due.> tasks.> due.echo Od1aoPeI";

    #[test]
    fn an_occurrence_is_named_by_its_schedule_and_sequence() {
        let h = headers(&[("Task-Schedule", "tick"), ("Nats-Stream-Source", SOURCE)]);
        assert_eq!(task_id(&h).as_deref(), Some("sched.tick.12"));
        assert_eq!(parse("sched.tick.12"), Some(("tick", 12)));
        assert_eq!(parse("results.sched.tick.12"), Some(("tick", 12)));
        assert_eq!(results_filter("tick"), "results.sched.tick.>");
    }

    #[test]
    fn other_tasks_keep_their_ids() {
        // A delayed task names itself.
        let h = headers(&[
            ("Task-Id", "b.1"),
            ("Task-Schedule", "tick"),
            ("Nats-Stream-Source", SOURCE),
        ]);
        assert_eq!(task_id(&h), None);
        // Not fired by a schedule, or not from SCHEDULES.
        assert_eq!(task_id(&headers(&[("Task-Schedule", "tick")])), None);
        let elsewhere = headers(&[
            ("Task-Schedule", "tick"),
            ("Nats-Stream-Source", "OTHER 12 > >"),
        ]);
        assert_eq!(task_id(&elsewhere), None);
        assert_eq!(task_id(&headers(&[("Nats-Stream-Source", SOURCE)])), None);
    }

    #[test]
    fn a_tenants_occurrence_is_named_the_same_way() {
        let source =
            "SCHEDULES_alice 4 tenant.alice.due.> tenant.alice.tasks.> tenant.alice.due.echo x";
        let h = headers(&[("Task-Schedule", "tick"), ("Nats-Stream-Source", source)]);
        assert_eq!(task_id(&h).as_deref(), Some("sched.tick.4"));
        assert_eq!(source_seq("SCHEDULES_ 4"), None);
    }

    #[test]
    fn a_task_fired_from_another_space_is_foreign() {
        let fired = |s: &str| headers(&[("Nats-Scheduler", s)]);
        let own = fired("tenant.alice.sched.task.b.1");
        assert_eq!(foreign_scheduler(Some("alice"), &own), None);
        assert_eq!(
            foreign_scheduler(Some("bob"), &own),
            Some("tenant.alice.sched.task.b.1")
        );
        assert!(
            foreign_scheduler(None, &own).is_some(),
            "alice's into the fleet's"
        );
        let fleet = fired("sched.cron.tick");
        assert_eq!(foreign_scheduler(None, &fleet), None);
        assert!(foreign_scheduler(Some("alice"), &fleet).is_some());
        // No scheduler: a task published, not fired.
        assert_eq!(foreign_scheduler(Some("alice"), &HeaderMap::new()), None);
    }

    #[test]
    fn source_values_are_read_defensively() {
        assert_eq!(source_seq(SOURCE), Some(12));
        assert_eq!(source_seq("SCHEDULES:hub 7 due.> tasks.>"), Some(7));
        for bad in [
            "",
            "SCHEDULES",
            "SCHEDULES x",
            "SCHEDULES 0",
            "SCHEDULES -1",
            "TASKS 3",
        ] {
            assert_eq!(source_seq(bad), None, "{bad:?}");
        }
        for bad in [
            "sched.",
            "sched..3",
            "sched.tick",
            "sched.tick.x",
            "b.1",
            "results.b.1",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn ids_round_trip(name in "[a-zA-Z0-9_-]{1,20}", seq in 1u64..u64::MAX) {
            let id = contract::occurrence_task_id(&name, seq);
            prop_assert_eq!(parse(&id), Some((name.as_str(), seq)));
            prop_assert!(crate::check::check_task_id(&id).is_ok());
        }

        #[test]
        fn readers_never_panic(s in "\\PC{0,60}") {
            let _ = source_seq(&s);
            let _ = parse(&s);
        }
    }
}
