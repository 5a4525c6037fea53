//! The control headers' parsers and rules, without a server.
use super::*;
use proptest::prelude::*;

fn at(rfc3339: &str) -> SystemTime {
    humantime::parse_rfc3339(rfc3339).unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, *v);
    }
    h
}

#[test]
fn a_catch_up_window_counts_from_the_stored_time() {
    let stored = at("2026-11-28T09:00:00Z");
    let mut c = TaskControl::default();
    c.read(&headers(&[("Task-Catch-Up", "10m")])).unwrap();
    assert_eq!(
        c.deadline, None,
        "no deadline before the stored time is known"
    );
    c.anchor(stored, None);
    assert_eq!(c.deadline, Some(at("2026-11-28T09:10:00Z")));
    // Due an hour before it was stored (the server was down then).
    let mut late = c.clone();
    late.anchor(stored, Some(at("2026-11-28T08:00:00Z")));
    assert_eq!(late.deadline, Some(at("2026-11-28T08:10:00Z")));
    assert!(expired(c.deadline, at("2026-11-28T09:09:59Z")).is_none());
    let err = expired(c.deadline, at("2026-11-28T09:10:01Z")).expect("expired");
    assert_eq!(err.code(), 408);

    // An earlier Task-Deadline wins; a later one gives way to the window.
    for (deadline, wanted) in [
        ("2026-11-28T09:05:00Z", "2026-11-28T09:05:00Z"),
        ("2026-11-28T10:00:00Z", "2026-11-28T09:10:00Z"),
    ] {
        let mut c = TaskControl::default();
        c.read(&headers(&[
            ("Task-Catch-Up", "600"),
            ("Task-Deadline", deadline),
        ]))
        .unwrap();
        c.anchor(stored, None);
        assert_eq!(c.deadline, Some(at(wanted)));
    }
    // Without a window, anchoring changes nothing.
    let mut c = TaskControl::default();
    c.anchor(stored, Some(stored));
    assert_eq!(c, TaskControl::default());
    let err = TaskControl::default()
        .read(&headers(&[("Task-Catch-Up", "soon")]))
        .unwrap_err();
    assert_eq!(err.code(), 400);
    assert!(err.message().contains("Task-Catch-Up"), "{}", err.message());
}

#[test]
fn deadlines_take_rfc3339_with_any_offset() {
    assert_eq!(
        parse_deadline("2026-12-01T09:00:00Z").unwrap(),
        at("2026-12-01T09:00:00Z")
    );
    assert_eq!(
        parse_deadline("2026-12-01T10:00:00+01:00").unwrap(),
        at("2026-12-01T09:00:00Z")
    );
    assert_eq!(
        parse_deadline(" 2026-12-01T09:00:00.250Z ").unwrap(),
        at("2026-12-01T09:00:00.250Z")
    );
    for bad in ["", "tomorrow", "2026-12-01", "2026-12-01 09:00:00", "30m"] {
        let err = parse_deadline(bad).unwrap_err();
        assert_eq!((err.code(), err.is_retryable()), (400, false), "{bad}");
        assert!(err.message().contains("Task-Deadline"), "{err}");
    }
    let d = at("2026-12-01T09:00:00.250Z");
    assert_eq!(parse_deadline(&format_deadline(d)).unwrap(), d);
}

#[test]
fn a_task_expires_only_once_its_deadline_passed() {
    let d = at("2026-12-01T09:00:00Z");
    assert_eq!(expired(None, d), None);
    assert_eq!(expired(Some(d), d), None, "at the deadline it may start");
    assert_eq!(expired(Some(d), d - Duration::from_secs(1)), None);
    let err = expired(Some(d), d + Duration::from_millis(1)).unwrap();
    assert_eq!(err.kind(), FailureKind::Expired);
    assert_eq!((err.code(), err.is_retryable()), (408, false));
    assert!(err.message().starts_with("expired"), "{err}");
    assert!(err.message().contains("2026-12-01T09:00:00.000Z"), "{err}");
}

#[test]
fn ttls_are_whole_seconds_of_at_least_one() {
    let ok = |v: &str| parse_ttl("Result-TTL", v).unwrap().as_secs();
    assert_eq!(ok("1s"), 1);
    assert_eq!(ok("2s"), 2);
    assert_eq!(ok("1h"), 3600);
    assert_eq!(ok("90"), 90);
    assert_eq!(ok("1m 30s"), 90);
    for bad in [
        "0", "0s", "500ms", "1.5s", "1500ms", "-1", "abc", "", "never",
    ] {
        let err = parse_ttl("Result-TTL", bad).unwrap_err();
        assert_eq!(err.code(), 400, "{bad}");
        assert!(err.message().contains("Result-TTL"), "{err}");
    }
    assert!(parse_ttl("Result-TTL", "3650d").is_ok());
    assert!(parse_ttl("Result-TTL", "3651d").is_err());
    assert_eq!(ttl_value(Duration::from_secs(3600)), "3600");
}

#[test]
fn the_backstop_outlives_the_deadline_by_the_grace() {
    let now = at("2026-12-01T09:00:00Z");
    let in_30m = now + Duration::from_secs(1800);
    assert_eq!(
        backstop_ttl(in_30m, now),
        Duration::from_secs(1800) + DEADLINE_GRACE
    );
    assert_eq!(
        backstop_ttl(now + Duration::from_millis(1500), now),
        Duration::from_secs(2) + DEADLINE_GRACE,
        "rounded up"
    );
    assert_eq!(
        backstop_ttl(now - Duration::from_secs(5), now),
        DEADLINE_GRACE
    );
}

#[test]
fn unique_keys_are_one_safe_token() {
    for good in ["report-42", "a", "user_7=x/y", &"k".repeat(MAX_KEY_BYTES)] {
        assert!(check_key(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "a.b",
        "a b",
        "*",
        ">",
        "a:b",
        "é",
        "a\nb",
        &"k".repeat(MAX_KEY_BYTES + 1),
    ] {
        assert!(check_key(bad).is_err(), "{bad:?}");
    }
    assert_eq!(unique_name("echo", "r-1").unwrap(), "echo.r-1");
    assert_eq!(
        unique_name("image.resize", "r-1").unwrap(),
        "image.resize.r-1"
    );
    assert!(unique_name("a:b", "r").is_err());
    assert!(unique_name("a..b", "r").is_err());
    assert!(unique_name("echo", "a.b").is_err());
}

#[test]
fn headers_are_read_into_controls() {
    let mut c = TaskControl::default();
    c.read(&headers(&[
        ("Task-Unique", "r-1"),
        ("Task-Unique-For", "1h"),
        ("Task-Deadline", "2026-12-01T09:00:00Z"),
        ("Result-TTL", "2s"),
    ]))
    .unwrap();
    assert_eq!(
        c,
        TaskControl {
            deadline: Some(at("2026-12-01T09:00:00Z")),
            result_ttl: Some(Duration::from_secs(2)),
            unique: Some(UniqueKey {
                key: "r-1".into(),
                hold_for: Some(Duration::from_secs(3600)),
            }),
            catch_up: None,
        }
    );
    let mut none = TaskControl::default();
    none.read(&headers(&[("Task-Unique-For", "1h")])).unwrap();
    assert_eq!(none, TaskControl::default(), "a hold without a key");
}

#[test]
fn a_bad_header_is_a_400_and_the_key_is_still_known() {
    let mut c = TaskControl::default();
    let err = c
        .read(&headers(&[
            ("Task-Unique", "r-1"),
            ("Task-Deadline", "soon"),
        ]))
        .unwrap_err();
    assert_eq!(err.code(), 400);
    assert_eq!(c.unique.unwrap().key, "r-1", "so the node frees it");
    let mut c = TaskControl::default();
    let err = c.read(&headers(&[("Task-Unique", "a.b")])).unwrap_err();
    assert!(err.message().contains("Task-Unique"), "{err}");
    assert_eq!(c.unique, None);
}

#[test]
fn results_carry_their_ttl_and_an_expired_one_its_deadline() {
    let d = at("2026-12-01T09:00:00Z");
    let c = TaskControl {
        deadline: Some(d),
        result_ttl: Some(Duration::from_secs(2)),
        ..TaskControl::default()
    };
    let mut h = HeaderMap::new();
    c.result_headers(None, &mut h);
    assert_eq!(h.get("Nats-TTL").map(|v| v.as_str()), Some("2"));
    assert!(h.get("Task-Deadline").is_none());
    let mut h = HeaderMap::new();
    let err = expired(Some(d), d + Duration::from_secs(1)).unwrap();
    c.result_headers(Some(&err), &mut h);
    assert_eq!(
        h.get("Task-Deadline").map(|v| v.as_str()),
        Some("2026-12-01T09:00:00.000Z")
    );
    let mut h = HeaderMap::new();
    c.result_headers(Some(&TaskError::reject("x")), &mut h);
    assert!(h.get("Task-Deadline").is_none());
}

proptest! {
    #[test]
    fn parsers_never_panic(s in "\\PC{0,60}") {
        let _ = parse_deadline(&s);
        let _ = parse_ttl("Result-TTL", &s);
        let _ = check_key(&s);
        let _ = unique_name(&s, &s);
    }

    #[test]
    fn accepted_keys_are_single_literal_tokens(s in "[a-zA-Z0-9_.*> :/=-]{0,20}") {
        if check_key(&s).is_ok() {
            prop_assert!(!s.is_empty());
            prop_assert!(!s.contains(['.', '*', '>', ' ', ':']));
        }
    }
}
