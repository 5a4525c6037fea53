//! What a cancel's outcomes say.

use super::*;

#[test]
fn outcomes_read_as_a_person_says_them() {
    let said = |o: Outcome| o.to_string();
    assert_eq!(
        said(Outcome::AlreadyFinished(Finished::Ok)),
        "already finished: ok"
    );
    assert_eq!(
        said(Outcome::AlreadyFinished(Finished::Failed(500))),
        "already finished: failed 500"
    );
    assert_eq!(
        said(Outcome::AlreadyFinished(Finished::Failed(499))),
        "already finished: cancelled 499"
    );
    assert!(said(Outcome::Marked).starts_with("cancelled"));
    assert!(said(Outcome::Withdrawn).starts_with("cancelled"));
}

#[test]
fn a_kept_result_ends_as_its_code_says() {
    let with = |code: Option<&str>| {
        let mut h = HeaderMap::new();
        h.insert(header::TASK_ID, "b.1");
        if let Some(code) = code {
            h.insert(header::SERVICE_ERROR_CODE, code);
        }
        finished(&h)
    };
    assert_eq!(with(None), Finished::Ok);
    assert_eq!(with(Some("404")), Finished::Failed(404));
    assert_eq!(with(Some(" 499 ")), Finished::Failed(499));
    assert_eq!(with(Some("teapot")), Finished::Failed(500));
}

#[test]
fn a_withdrawn_task_ends_as_a_node_would_end_it() {
    let h = result_headers("b.1");
    let get = |n: &str| h.get(n).map(|v| v.as_str().to_string());
    assert_eq!(get(header::TASK_ID).as_deref(), Some("b.1"));
    assert_eq!(get(header::SERVICE_ERROR_CODE).as_deref(), Some("499"));
    assert_eq!(get(header::SERVICE_ERROR).as_deref(), Some("cancelled"));
    assert!(get(header::TASK_FINISHED).is_some());
    assert_eq!(finished(&h), Finished::Failed(499));
}

fn schedule(headers: &[(&str, &str)]) -> StreamMessage {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(*k, *v);
    }
    StreamMessage {
        subject: "sched.task.b.1".into(),
        sequence: 9,
        headers: h,
        payload: Default::default(),
        time: async_nats::datetime::parse_rfc3339("2026-01-01T00:00:00Z").unwrap(),
    }
}

#[test]
fn a_withdrawn_task_answers_where_its_schedule_says() {
    let own = envelope(None, "b.1", &schedule(&[("Task-Id", "b.1")]));
    assert_eq!(own.result_subject(), "results.b.1");
    assert!(own.reply_is_own());
    let bare = envelope(None, "b.1", &schedule(&[]));
    assert_eq!(
        (bare.id.as_str(), bare.reply.as_str()),
        ("b.1", "results.b.1")
    );
    let shared = envelope(None, "b.1", &schedule(&[("Reply-To", "results.demo")]));
    assert!(shared.reply_is_kept() && !shared.reply_is_own());
    let hostile = envelope(
        None,
        "b.1",
        &schedule(&[("Reply-To", "$JS.API.STREAM.DELETE.TASKS")]),
    );
    assert_eq!(hostile.result_subject(), "results.b.1");
}
