//! The values a schedule carries, as the server reads them (pure, no I/O):
//! when a delayed task fires (`@at`, rounded up to the whole second), how a
//! recurring schedule repeats (a 6-field cron line, `@every`, `@daily`…),
//! a schedule's name, and durations in the forms `Nats-TTL` takes.
//!
//! What the server checks itself (a cron field out of range, an unknown
//! time zone) is left to it: its PubAck says so (see [`super::manage`]).
//! What is checked here is what would otherwise reach the server as
//! something else: a 5-field line (refused as a whole), a newline in a
//! header value, a name that is not one subject token.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::contract;
use crate::error::{Error, ErrorKind};

/// Longest schedule name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;

/// The shortest interval of `@every` the server takes.
pub const MIN_EVERY: Duration = Duration::from_secs(1);

/// How a recurring schedule repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repeat {
    /// A cron line: 5 fields (minute first, as crontab has them) or 6
    /// (seconds first, as the server has them), or `@hourly`, `@daily`,
    /// `@midnight`, `@weekly`, `@monthly`, `@yearly`, `@annually`.
    Cron(String),
    /// Every so often (at least a second), counted from when the schedule
    /// was stored.
    Every(Duration),
}

impl Repeat {
    /// The `Nats-Schedule` value: the cron line with its seconds field,
    /// or `@every <duration>`.
    ///
    /// # Errors
    /// [`ErrorKind::Usage`] for a line of another number of fields, an
    /// unknown `@` word, or an interval under a second.
    pub fn header(&self) -> Result<String, Error> {
        match self {
            Repeat::Cron(line) => cron_line(line),
            Repeat::Every(every) => every_value(*every),
        }
    }

    /// Whether a time zone applies (cron lines only; the server refuses one
    /// on `@every`).
    pub fn takes_time_zone(&self) -> bool {
        matches!(self, Repeat::Cron(_))
    }
}

const NAMED: [&str; 7] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

fn usage(message: String) -> Error {
    Error::new(ErrorKind::Usage, message)
}

/// A cron line as the server takes it: a 5-field line gets a `0` seconds
/// field in front (so `*/5 * * * *` fires at second 0 of every fifth
/// minute, as crontab would), a 6-field line and the `@` words pass as they
/// are, white space is made single.
///
/// # Errors
/// [`ErrorKind::Usage`] for any other number of fields, an unknown `@`
/// word (`@every` has its own flag), or control characters.
pub fn cron_line(line: &str) -> Result<String, Error> {
    let line = line.trim();
    if line.chars().any(char::is_control) {
        return Err(usage(format!("cron line {line:?} has control characters")));
    }
    if line.starts_with('@') {
        let word = line.to_ascii_lowercase();
        if NAMED.contains(&word.as_str()) {
            return Ok(word);
        }
        return Err(usage(format!(
            "unknown cron word {line:?}: use one of {} (for @every use --every; for a one-off time, fleet submit --at)",
            NAMED.join(", ")
        )));
    }
    let fields: Vec<&str> = line.split_whitespace().collect();
    match fields.len() {
        5 => Ok(format!("0 {}", fields.join(" "))),
        6 => Ok(fields.join(" ")),
        n => Err(usage(format!(
            "cron line {line:?} has {n} fields: give 5 (minute hour day-of-month month day-of-week) or 6 (seconds first)"
        ))),
    }
}

/// `@every <interval>` in the server's (Go's) duration form: whole seconds
/// as `90s`, anything finer in milliseconds (`1500ms`).
///
/// # Errors
/// [`ErrorKind::Usage`] under [`MIN_EVERY`].
pub fn every_value(every: Duration) -> Result<String, Error> {
    if every < MIN_EVERY {
        return Err(usage(format!(
            "--every {}: the shortest interval is 1s",
            humantime::format_duration(every)
        )));
    }
    Ok(format!("@every {}", go_duration(every)))
}

fn go_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// A duration as `Nats-TTL` and `Nats-Schedule-TTL` take it: whole seconds
/// (`90s`), rounded up, at least one.
pub fn ttl_value(d: Duration) -> String {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    format!("{}s", secs.max(1))
}

/// Checks a schedule's name: one subject token of letters, digits, `-`
/// and `_`, at most [`MAX_NAME_BYTES`], and none of
/// [`contract::RESERVED_SCHEDULE_NAMES`].
///
/// # Errors
/// [`ErrorKind::Usage`] saying what is wrong.
pub fn check_name(name: &str) -> Result<(), Error> {
    if contract::RESERVED_SCHEDULE_NAMES.contains(&name) {
        Err(usage(format!(
            "schedule name {name:?} is reserved (sched.{name}. holds what is not a schedule): choose another"
        )))
    } else if contract::is_name_token(name, MAX_NAME_BYTES) {
        Ok(())
    } else {
        Err(usage(format!(
            "bad schedule name {name:?}: one word of letters, digits, - and _ (at most {MAX_NAME_BYTES} bytes)"
        )))
    }
}

/// Checks a time zone name before it goes in a header: the server says
/// whether it knows it (IANA names such as `Europe/Paris`).
///
/// # Errors
/// [`ErrorKind::Usage`] for an empty name, white space or control characters.
pub fn check_time_zone(zone: &str) -> Result<(), Error> {
    if zone.is_empty() || zone.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(usage(format!(
            "bad time zone {zone:?}: give an IANA name such as Europe/Paris or UTC"
        )));
    }
    Ok(())
}

/// `t` rounded up to the whole second: the server fires on whole seconds,
/// so a delayed task never runs before the time it was given.
pub fn round_up(t: SystemTime) -> SystemTime {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() + u64::from(since.subsec_nanos() > 0);
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// `t` rounded to the nearest whole second, halves up (Go's
/// `Time.Round(time.Second)`, which the server's `@every` counts from).
pub fn round_nearest(t: SystemTime) -> SystemTime {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() + u64::from(since.subsec_nanos() >= 500_000_000);
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// The `Nats-Schedule` value of a task due at `t` (whole seconds, UTC).
pub fn at_value(t: SystemTime) -> String {
    format!("@at {}", rfc3339(round_up(t)))
}

/// `t` in RFC 3339, UTC, whole seconds.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Reads a time given as RFC 3339 (`2026-12-01T09:00:00Z`, an offset such
/// as `+02:00`, fractions of a second), or as `2026-12-01 09:00:00` in UTC.
///
/// # Errors
/// [`ErrorKind::Usage`] naming the value.
pub fn parse_time(text: &str) -> Result<SystemTime, Error> {
    let text = text.trim();
    if let Ok(t) = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
    {
        return Ok(t.into());
    }
    humantime::parse_rfc3339_weak(text).map_err(|_| {
        usage(format!(
            "bad time {text:?}: give RFC 3339, such as 2026-12-01T09:00:00Z or 2026-12-01T10:00:00+01:00"
        ))
    })
}

/// When a task delayed by `delay` from `now` is due: `now + delay`,
/// rounded up to the second.
pub fn due_after(now: SystemTime, delay: Duration) -> SystemTime {
    round_up(now + delay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn times_round_up_to_the_whole_second() {
        assert_eq!(round_up(at(100, 0)), at(100, 0));
        assert_eq!(round_up(at(100, 1)), at(101, 0));
        assert_eq!(round_up(at(100, 999_999_999)), at(101, 0));
        assert_eq!(
            due_after(at(100, 300_000_000), Duration::from_secs(2)),
            at(103, 0)
        );
        assert_eq!(round_nearest(at(100, 499_999_999)), at(100, 0));
        assert_eq!(round_nearest(at(100, 500_000_000)), at(101, 0));
        assert_eq!(
            at_value(at(1_796_115_600, 5)),
            "@at 2026-12-01T09:00:01Z",
            "never early"
        );
    }

    #[test]
    fn five_field_lines_get_a_seconds_field() {
        assert_eq!(cron_line("*/5 * * * *").unwrap(), "0 */5 * * * *");
        assert_eq!(
            cron_line("  30 9  * * MON-FRI ").unwrap(),
            "0 30 9 * * MON-FRI"
        );
        assert_eq!(cron_line("*/3 * * * * *").unwrap(), "*/3 * * * * *");
        assert_eq!(cron_line("@Daily").unwrap(), "@daily");
        for bad in [
            "",
            "* * * *",
            "1 2 3 4 5 6 7",
            "@every 5s",
            "@at 2026-01-01T00:00:00Z",
            "* * *\n* *",
        ] {
            let err = cron_line(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Usage, "{bad:?}");
        }
    }

    #[test]
    fn intervals_are_written_as_the_server_reads_them() {
        assert_eq!(every_value(Duration::from_secs(2)).unwrap(), "@every 2s");
        assert_eq!(
            every_value(Duration::from_secs(3600)).unwrap(),
            "@every 3600s"
        );
        assert_eq!(
            every_value(Duration::from_millis(1500)).unwrap(),
            "@every 1500ms"
        );
        assert!(every_value(Duration::from_millis(999)).is_err());
        assert_eq!(ttl_value(Duration::from_millis(1500)), "2s");
        assert_eq!(ttl_value(Duration::from_secs(600)), "600s");
        assert_eq!(ttl_value(Duration::ZERO), "1s");
    }

    #[test]
    fn names_are_one_subject_token() {
        for good in ["nightly", "report-2", "a_b", &"x".repeat(MAX_NAME_BYTES)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a.b",
            "a b",
            "*",
            ">",
            "é",
            &"x".repeat(MAX_NAME_BYTES + 1),
            "unique",
            "cancel",
        ] {
            assert_eq!(
                check_name(bad).unwrap_err().kind(),
                ErrorKind::Usage,
                "{bad:?}"
            );
        }
        assert!(check_time_zone("Europe/Paris").is_ok());
        assert!(check_time_zone("Europe/ Paris").is_err());
        assert!(check_time_zone("").is_err());
    }

    #[test]
    fn times_read_with_offsets_and_without() {
        let utc = parse_time("2026-12-01T09:00:00Z").unwrap();
        assert_eq!(parse_time("2026-12-01T10:00:00+01:00").unwrap(), utc);
        assert_eq!(parse_time("2026-12-01 09:00:00").unwrap(), utc);
        assert_eq!(rfc3339(utc), "2026-12-01T09:00:00Z");
        assert_eq!(
            round_up(parse_time("2026-12-01T09:00:00.2Z").unwrap()),
            parse_time("2026-12-01T09:00:01Z").unwrap()
        );
        assert_eq!(parse_time("tomorrow").unwrap_err().kind(), ErrorKind::Usage);
    }

    #[test]
    fn only_cron_lines_take_a_time_zone() {
        assert!(Repeat::Cron("@daily".into()).takes_time_zone());
        assert!(!Repeat::Every(Duration::from_secs(5)).takes_time_zone());
    }

    proptest! {
        #[test]
        fn rounding_is_never_early_and_never_a_second_late(secs in 0u64..4_000_000_000, nanos in 0u32..1_000_000_000) {
            let t = at(secs, nanos);
            let r = round_up(t);
            prop_assert!(r >= t);
            prop_assert!(r.duration_since(t).unwrap() < Duration::from_secs(1));
            prop_assert_eq!(r.duration_since(UNIX_EPOCH).unwrap().subsec_nanos(), 0);
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,60}") {
            let _ = cron_line(&s);
            let _ = check_name(&s);
            let _ = parse_time(&s);
            let _ = check_time_zone(&s);
        }

        #[test]
        fn normalised_lines_have_six_fields_or_are_words(s in "[0-9*/,A-Z -]{0,40}") {
            if let Ok(line) = cron_line(&s) {
                prop_assert!(line.starts_with('@') || line.split(' ').count() == 6);
            }
        }
    }
}
