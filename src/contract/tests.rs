//! The contract's own checks.
use super::*;

#[test]
fn subjects_follow_the_contract() {
    assert_eq!(task_subject("image.resize"), "tasks.image.resize");
    assert_eq!(default_reply("b.1"), "results.b.1");
    assert_eq!(dead_subject("echo"), "dead.echo");
    assert_eq!(batch_task_id("nightly", 7), "nightly.7");
    assert_eq!(delayed_subject("nightly.7"), "sched.task.nightly.7");
    assert_eq!(cron_subject("report"), "sched.cron.report");
    assert_eq!(due_subject("image.resize"), "due.image.resize");
    assert_eq!(batch_record_subject("nightly"), "sched.batch.nightly");
    assert_eq!(occurrence_task_id("report", 42), "sched.report.42");
    assert_eq!(tenant_unique_subject("echo.r-1"), "sched.unique.echo.r-1");
    assert_eq!(cancel_task_key("nightly.7"), "task.nightly.7");
    assert_eq!(cancel_batch_key("nightly"), "batch.nightly");
    assert_eq!(
        api::consumer_next(TASKS_STREAM, DEFAULT_GROUP),
        "$JS.API.CONSUMER.MSG.NEXT.TASKS.workers"
    );
    assert_eq!(
        api::consumer_next_in(Some("site1"), TASKS_STREAM, "site1"),
        "$JS.site1.API.CONSUMER.MSG.NEXT.TASKS.site1"
    );
    assert_eq!(
        edge_subject("site1", "results.b.1"),
        "edge.site1.results.b.1"
    );
}

#[test]
fn pull_requests_carry_priority_fields_only_when_set() {
    let plain = api::PullRequest {
        batch: 4,
        expires: Duration::from_secs(2),
        ..Default::default()
    };
    assert_eq!(
        serde_json::to_string(&plain).unwrap(),
        r#"{"batch":4,"expires":2000000000}"#
    );
    let overflow = api::PullRequest {
        group: Some("edge"),
        min_pending: Some(4),
        ..plain
    };
    assert_eq!(
        serde_json::to_string(&overflow).unwrap(),
        r#"{"batch":4,"expires":2000000000,"group":"edge","min_pending":4}"#
    );
}

#[test]
fn tenants_own_a_prefix_of_the_fleet_account() {
    assert_eq!(
        in_tenant(Some("alice"), "results.b.1"),
        "tenant.alice.results.b.1"
    );
    assert_eq!(in_tenant(None, "results.b.1"), "results.b.1");
    assert_eq!(
        split_tenant("tenant.alice.tasks.image.resize"),
        (Some("alice"), "tasks.image.resize")
    );
    assert_eq!(split_tenant("tasks.tenant.x"), (None, "tasks.tenant.x"));
    assert_eq!(split_tenant("tenant.alice"), (None, "tenant.alice"));
    assert_eq!(split_tenant("tenant..tasks.x"), (None, "tenant..tasks.x"));
    assert_eq!(
        stream_subjects(TASK_PREFIX),
        ["tasks.>", "tenant.*.tasks.>"]
    );
}

#[test]
fn node_written_ids_carry_the_stored_time() {
    assert_eq!(
        msg_id::result(7, 1_700_000_000_123_456_789),
        "result-7-1700000000123456789"
    );
    assert_eq!(msg_id::dead(7, 1), "dead-7-1");
}

#[test]
fn task_numbers_parse_only_under_their_prefix() {
    assert_eq!(task_number("results.b.12", "results.b."), Some(12));
    assert_eq!(task_number("results.c.12", "results.b."), None);
    assert_eq!(task_number("results.b.x", "results.b."), None);
    assert_eq!(task_number("results.b.", "results.b."), None);
}

#[test]
fn pull_request_body_is_what_the_server_reads() {
    let body = serde_json::to_string(&api::PullRequest {
        batch: 16,
        expires: Duration::from_secs(2),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(body, r#"{"batch":16,"expires":2000000000}"#);
}

proptest::proptest! {
    /// A node's `Task-Started`/`Task-Finished` are what humantime writes,
    /// for any millisecond from 1970 to 9999.
    #[test]
    fn stamps_are_rfc3339_millis(ms in 0u64..253_402_300_799_999) {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
        proptest::prop_assert_eq!(
            header::stamp(t),
            humantime::format_rfc3339_millis(t).to_string()
        );
    }
}

#[test]
fn stamps_of_known_days() {
    let at = |s: u64, ms: u64| {
        header::stamp(std::time::UNIX_EPOCH + std::time::Duration::from_millis(s * 1000 + ms))
    };
    assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
    assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
    assert_eq!(at(1_795_912_345, 999), "2026-11-29T00:32:25.999Z");
    assert_eq!(
        header::stamp(std::time::UNIX_EPOCH - std::time::Duration::from_secs(1)),
        "1970-01-01T00:00:00.000Z"
    );
}

#[test]
fn a_header_is_found_by_scan_and_by_hash_alike() {
    for extra in [0, 40] {
        let mut h = async_nats::HeaderMap::new();
        for i in 0..extra {
            h.insert(format!("X-Filler-{i}").as_str(), "f");
        }
        h.insert("Task-Id", "b.1");
        h.append("Task-Id", "b.2");
        h.insert("task-timeout", "5s");
        h.insert("Nats-Msg-Id", "m");
        assert_eq!(header::get(&h, header::TASK_ID), Some("b.1"), "{extra}");
        assert_eq!(header::get(&h, header::MSG_ID), Some("m"), "{extra}");
        // Names are compared as HeaderMap compares them: case and all.
        assert_eq!(
            header::get(&h, header::TASK_TIMEOUT),
            h.get(header::TASK_TIMEOUT).map(|v| v.as_str()),
            "{extra}"
        );
        assert_eq!(header::get(&h, header::REPLY_TO), None, "{extra}");
    }
}

#[test]
fn concat_joins_text_and_numbers() {
    use Part::{Number, Text};
    assert_eq!(concat(&[]), "");
    assert_eq!(concat(&[Text("b"), Text("."), Number(0)]), "b.0");
    assert_eq!(
        concat(&[Number(u64::MAX), Text("x"), Number(7)]),
        format!("{}x7", u64::MAX)
    );
    assert_eq!(batch_task_id("nightly", 1234567), "nightly.1234567");
}
