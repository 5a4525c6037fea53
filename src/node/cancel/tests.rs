//! Cancel marks as a node reads and keeps them.

use super::*;
use std::sync::Arc;
use std::time::Duration;

fn mark(tenant: &str, batch: bool, name: &str) -> Mark {
    Mark {
        tenant: tenant.into(),
        own: false,
        batch,
        name: name.into(),
    }
}

#[test]
fn key_prefixes_are_the_contracts() {
    assert_eq!(contract::cancel_task_key("x"), format!("{TASK_KEY}x"));
    assert_eq!(contract::cancel_batch_key("x"), format!("{BATCH_KEY}x"));
}

#[test]
fn batch_members_are_name_dot_number() {
    assert_eq!(batch_of("nightly.7"), Some("nightly"));
    assert_eq!(batch_of("nightly.0042"), Some("nightly"));
    for id in [
        "7",
        "nightly",
        "nightly.",
        ".7",
        "nightly.x",
        "nightly.7a",
        "a.b.1",
        "nightly.-1",
        "nightly.+1",
        "nightly. 1",
    ] {
        assert_eq!(batch_of(id), None, "{id}");
    }
    let id = contract::batch_task_id("b-1_x", 12);
    assert_eq!(batch_of(&id), Some("b-1_x"));
}

#[test]
fn keys_name_a_task_or_a_batch_of_a_tenant() {
    assert_eq!(parse_key("task.b.1"), Some(mark("", false, "b.1")));
    assert_eq!(parse_key("batch.b"), Some(mark("", true, "b")));
    assert_eq!(
        parse_key("tenant.alice.task.b.1"),
        Some(mark("alice", false, "b.1"))
    );
    assert_eq!(
        parse_key("tenant.alice.batch.b"),
        Some(mark("alice", true, "b"))
    );
    // A fleet-account task whose id starts with "tenant." is its own.
    assert_eq!(
        parse_key("task.tenant.alice.1"),
        Some(mark("", false, "tenant.alice.1"))
    );
    for key in [
        "task.",
        "batch.",
        "tasks.x",
        "x",
        "",
        "tenant.alice.x.1",
        "tenant.alice",
    ] {
        assert_eq!(parse_key(key), None, "{key}");
    }
}

#[test]
fn puts_mark_and_deletes_purges_and_expiries_unmark() {
    let subject = "$KV.fleet-cancel.task.b.1";
    let put = Change::Put(mark("", false, "b.1"));
    let gone = Change::Remove(mark("", false, "b.1"));
    assert_eq!(change(subject, None), Some(put.clone()));
    let with = |name: &str, value: &str| {
        let mut h = HeaderMap::new();
        h.insert(name, value);
        change(subject, Some(&h))
    };
    assert_eq!(with("KV-Operation", "DEL"), Some(gone.clone()));
    assert_eq!(with("KV-Operation", "PURGE"), Some(gone.clone()));
    assert_eq!(with("Nats-Marker-Reason", "MaxAge"), Some(gone));
    assert_eq!(with("KV-Operation", "PUT"), Some(put));
    assert_eq!(change("$KV.other.task.b.1", None), None);
    assert_eq!(change("$KV.fleet-cancel.junk", None), None);
}

#[test]
fn a_task_is_marked_by_its_id_or_its_batch_within_its_tenant() {
    let marks = Marks::default();
    assert!(!marks.is_marked(None, "b.1"));
    marks.apply(Change::Put(mark("", false, "solo")));
    marks.apply(Change::Put(mark("", true, "night")));
    marks.apply(Change::Put(mark("alice", false, "b.1")));
    assert!(marks.is_marked(None, "solo"));
    assert!(marks.is_marked(None, "night.3"));
    assert!(!marks.is_marked(None, "night.x"));
    assert!(!marks.is_marked(None, "nightly.3"));
    assert!(!marks.is_marked(None, "b.1"), "alice's mark is hers");
    assert!(marks.is_marked(Some("alice"), "b.1"));
    assert!(
        !marks.is_marked(Some("alice"), "solo"),
        "the fleet's mark is not alice's"
    );
    assert!(!marks.is_marked(Some("bob"), "b.1"));
    marks.apply(Change::Remove(mark("", true, "night")));
    assert!(!marks.is_marked(None, "night.3"));
    marks.apply(Change::Remove(mark("", false, "solo")));
    marks.apply(Change::Remove(mark("alice", false, "b.1")));
    assert!(
        !marks.any.load(Ordering::Relaxed),
        "no marks left: asking is free again"
    );
    marks.apply(Change::Remove(mark("", false, "never")));
    assert!(!marks.any.load(Ordering::Relaxed));
}

#[test]
fn a_fresh_read_replaces_every_mark() {
    let marks = Marks::default();
    marks.apply(Change::Put(mark("", false, "old")));
    marks.replace(None, [mark("", false, "new")]);
    assert!(!marks.is_marked(None, "old"));
    assert!(marks.is_marked(None, "new"));
    marks.replace(None, []);
    assert!(!marks.any.load(Ordering::Relaxed));
}

#[tokio::test]
async fn a_running_task_learns_of_its_mark() {
    let marks = Arc::new(Marks::default());
    let waiting = {
        let marks = marks.clone();
        tokio::spawn(async move { marks.until_marked(None, "b.2").await })
    };
    tokio::task::yield_now().await;
    marks.apply(Change::Put(mark("", false, "b.1")));
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished(), "another task's mark");
    marks.apply(Change::Put(mark("", true, "b")));
    tokio::time::timeout(Duration::from_secs(1), waiting)
        .await
        .expect("woken by its batch's mark")
        .unwrap();
}

#[test]
fn a_cancelled_task_is_acked_once_its_result_is_kept_or_refused() {
    assert_eq!(after_cancel(&Written::Kept), AckReply::Ack);
    assert_eq!(after_cancel(&Written::AlreadyKept), AckReply::Ack);
    assert_eq!(after_cancel(&Written::TooLarge("x".into())), AckReply::Ack);
    assert_eq!(
        after_cancel(&Written::Failed("timeout".into())),
        AckReply::Nak(Some(REWRITE_DELAY))
    );
    let err = cancelled();
    assert_eq!((err.code(), err.is_retryable()), (499, false));
}

#[test]
fn a_tenants_own_marks_are_its_own_whatever_their_key_says() {
    let subject = |rest: &str| format!("tenant.alice.sched.cancel.{rest}");
    let own = |batch, name: &str| Mark {
        tenant: "alice".into(),
        own: true,
        batch,
        name: name.into(),
    };
    assert_eq!(
        own_change("alice", &subject("task.b.1"), None),
        Some(Change::Put(own(false, "b.1")))
    );
    assert_eq!(
        own_change("alice", &subject("batch.b"), None),
        Some(Change::Put(own(true, "b")))
    );
    // A key naming another tenant is just a task id of alice's.
    assert_eq!(
        own_change("alice", &subject("task.tenant.bob.task.x"), None),
        Some(Change::Put(own(false, "tenant.bob.task.x")))
    );
    assert_eq!(
        own_change("alice", "tenant.bob.sched.cancel.task.x", None),
        None
    );
    assert_eq!(own_change("alice", &subject("junk"), None), None);
    let mut h = HeaderMap::new();
    h.insert("KV-Operation", "DEL");
    assert_eq!(
        own_change("alice", &subject("task.b.1"), Some(&h)),
        Some(Change::Remove(own(false, "b.1")))
    );

    let marks = Marks::default();
    marks.apply(Change::Put(own(false, "b.1")));
    marks.apply(Change::Put(mark("", false, "fleet")));
    assert!(marks.is_marked(Some("alice"), "b.1"));
    assert!(!marks.is_marked(Some("bob"), "b.1"));
    assert!(!marks.is_marked(None, "b.1"), "not the fleet's task");
    // A fresh read of alice's stream replaces her own marks only, and one
    // of the bucket the bucket's only.
    marks.replace(Some("alice"), [own(false, "b.2")]);
    assert!(!marks.is_marked(Some("alice"), "b.1"));
    assert!(marks.is_marked(Some("alice"), "b.2"));
    assert!(marks.is_marked(None, "fleet"));
    marks.replace(None, []);
    assert!(!marks.is_marked(None, "fleet"));
    assert!(marks.is_marked(Some("alice"), "b.2"));
}
