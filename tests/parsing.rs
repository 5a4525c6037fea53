//! Property tests of the parsers that read untrusted input: ack subjects,
//! durations, task ids and reply subjects. They never panic, and they accept
//! exactly what the wire contract allows.

use std::time::Duration;

use async_nats::HeaderMap;
use fleet::task::{check_reply_subject, check_task_id, parse_timeout, Delivery, Envelope};
use proptest::prelude::*;

fn allowed() -> Vec<String> {
    vec!["results.".to_string(), "_INBOX.".to_string()]
}

proptest! {
    #[test]
    fn parsers_never_panic(s in "\\PC{0,300}") {
        let _ = Delivery::parse(&s);
        let _ = parse_timeout(&s);
        let _ = check_task_id(&s);
        let _ = check_reply_subject(&s, &allowed());
    }

    #[test]
    fn ack_subjects_round_trip(stream in "[A-Z]{1,8}", consumer in "[a-z]{1,8}", delivered in 1u32..1000, seq in 1u64..u64::MAX, cseq in 1u64..1_000_000, ts in 0u64..u64::MAX, pending in 0u64..1000) {
        let v1 = format!("$JS.ACK.{stream}.{consumer}.{delivered}.{seq}.{cseq}.{ts}.{pending}");
        prop_assert_eq!(Delivery::parse(&v1), Some(Delivery { attempt: delivered, stream_seq: seq }));
        let v2 = format!("$JS.ACK.hub.ACCHASH.{stream}.{consumer}.{delivered}.{seq}.{cseq}.{ts}.{pending}.rand");
        prop_assert_eq!(Delivery::parse(&v2), Some(Delivery { attempt: delivered, stream_seq: seq }));
    }

    #[test]
    fn accepted_reply_subjects_are_literal_and_allowed(s in "[a-zA-Z0-9_$*>. -]{0,40}") {
        if check_reply_subject(&s, &allowed()).is_ok() {
            prop_assert!(s.starts_with("results.") || s.starts_with("_INBOX."));
            prop_assert!(!s.contains('*') && !s.contains('>') && !s.contains(' '));
            prop_assert!(s.split('.').all(|t| !t.is_empty()));
        }
    }

    #[test]
    fn durations_round_trip(ms in 1u64..86_400_000) {
        let d = Duration::from_millis(ms);
        let text = humantime::format_duration(d).to_string();
        prop_assert_eq!(parse_timeout(&text).unwrap(), d);
    }

    #[test]
    fn envelope_never_panics_on_any_headers(id in "\\PC{0,40}", timeout in "\\PC{0,20}", reply in "\\PC{0,40}") {
        let mut headers = HeaderMap::new();
        headers.insert("Task-Id", id.as_str());
        headers.insert("Task-Timeout", timeout.as_str());
        headers.insert("Reply-To", reply.as_str());
        match Envelope::read(Some(&headers), 7, Duration::from_secs(1), &allowed()) {
            Ok(env) => prop_assert!(check_reply_subject(&env.reply, &allowed()).is_ok()),
            // Even a refused task is answered on a subject of its own.
            Err((env, err)) => {
                prop_assert_eq!(err.code(), 400);
                prop_assert!(env.reply.starts_with("results."));
                prop_assert!(check_reply_subject(&env.reply, &allowed()).is_ok());
            }
        }
    }
}

#[test]
fn contract_examples() {
    assert_eq!(parse_timeout("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_timeout("30s").unwrap(), Duration::from_secs(30));
    assert!(parse_timeout("0s").is_err());
    assert!(parse_timeout("2days").is_err());
    assert!(check_reply_subject("results.demo", &allowed()).is_ok());
    assert!(check_reply_subject("_INBOX.abc.1", &allowed()).is_ok());
    for bad in [
        "$JS.API.STREAM.DELETE.TASKS",
        "$SYS.REQ",
        "results.*",
        "results.>",
        "results..x",
        "results.",
        "other.x",
        "",
        "results.a b",
    ] {
        assert!(
            check_reply_subject(bad, &allowed()).is_err(),
            "{bad:?} accepted"
        );
    }
    assert!(check_task_id("batch.17").is_ok());
    assert!(check_task_id("a b").is_err());
}
