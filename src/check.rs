//! The pure checks of what a task names from outside: its id, its reply
//! subject, its timeout. Total: bad input becomes a [`TaskError`] with code
//! 400, never a panic (the tests below fuzz them).

use std::time::Duration;

use crate::contract::{self, header};
use crate::error::TaskError;

/// Parses a duration such as `250ms`, `30s` or `1m 30s`: more than zero and
/// at most [`contract::MAX_TASK_TIMEOUT`].
///
/// # Errors
/// A [`TaskError`] with code 400 naming the bad value.
pub fn parse_timeout(value: &str) -> Result<Duration, TaskError> {
    let parsed = humantime::parse_duration(value.trim())
        .map_err(|e| TaskError::reject(format!("bad {}: {value:?}: {e}", header::TASK_TIMEOUT)))?;
    if parsed.is_zero() || parsed > contract::MAX_TASK_TIMEOUT {
        return Err(TaskError::reject(format!(
            "bad {}: {value:?}: must be more than 0 and at most {}",
            header::TASK_TIMEOUT,
            humantime::format_duration(contract::MAX_TASK_TIMEOUT)
        )));
    }
    Ok(parsed)
}

/// Checks that `id` can name a task: subject-safe tokens, at most
/// [`contract::MAX_TASK_ID_BYTES`].
///
/// # Errors
/// A [`TaskError`] with code 400.
pub fn check_task_id(id: &str) -> Result<(), TaskError> {
    if id.len() > contract::MAX_TASK_ID_BYTES {
        return Err(TaskError::reject(format!(
            "bad {}: longer than {} bytes",
            header::TASK_ID,
            contract::MAX_TASK_ID_BYTES
        )));
    }
    check_tokens(id)
        .map_err(|why| TaskError::reject(format!("bad {} {id:?}: {why}", header::TASK_ID)))
}

/// Checks that a result may be published to `subject`: a literal subject
/// (no wildcards, no empty tokens, no `$` system subjects) under one of the
/// `allowed` prefixes.
///
/// # Errors
/// A [`TaskError`] with code 400 saying why it was refused.
pub(crate) fn check_reply_subject(subject: &str, allowed: &[String]) -> Result<(), TaskError> {
    let refuse = |why: &str| TaskError::reject(format!("reply subject {subject:?} refused: {why}"));
    if subject.len() > contract::MAX_REPLY_BYTES {
        return Err(refuse(&format!(
            "longer than {} bytes",
            contract::MAX_REPLY_BYTES
        )));
    }
    check_tokens(subject).map_err(|why| refuse(&why))?;
    if subject.starts_with('$') {
        return Err(refuse("system subjects ($JS, $SYS, ...) are never a reply"));
    }
    if !allowed
        .iter()
        .any(|prefix| subject.starts_with(prefix.as_str()) && subject.len() > prefix.len())
    {
        return Err(refuse(&format!(
            "not under an allowed prefix ({})",
            allowed.join(", ")
        )));
    }
    Ok(())
}

fn check_tokens(s: &str) -> Result<(), String> {
    // The usual subject or id, printable ASCII with no wildcard and no
    // empty token, is passed in one look at its bytes (a node checks two
    // per task); anything else is checked below, which says what is wrong.
    let mut after_dot = true;
    let mut plain = !s.is_empty();
    for &b in s.as_bytes() {
        let dot = b == b'.';
        plain &= b.is_ascii_graphic() && b != b'*' && b != b'>' && !(dot && after_dot);
        after_dot = dot;
    }
    if plain && !after_dot {
        return Ok(());
    }
    if s.is_empty() {
        return Err("empty".into());
    }
    for token in s.split('.') {
        if token.is_empty() {
            return Err("empty token".into());
        }
        if token.contains(['*', '>']) {
            return Err("wildcards are not allowed".into());
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("white space or control characters".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn allowed() -> Vec<String> {
        contract::DEFAULT_ALLOWED_REPLY_PREFIXES
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn limits_come_from_the_contract() {
        assert!(check_task_id(&"a".repeat(contract::MAX_TASK_ID_BYTES)).is_ok());
        assert!(check_task_id(&"a".repeat(contract::MAX_TASK_ID_BYTES + 1)).is_err());
        let long = format!("results.{}", "a".repeat(contract::MAX_REPLY_BYTES));
        assert!(check_reply_subject(&long, &allowed()).is_err());
        assert!(parse_timeout("24h").is_ok());
        assert!(parse_timeout("24h 1s").is_err());
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,300}") {
            let _ = parse_timeout(&s);
            let _ = check_task_id(&s);
            let _ = check_reply_subject(&s, &allowed());
        }

        #[test]
        fn accepted_reply_subjects_are_literal_and_allowed(s in "[a-zA-Z0-9_$*>. -]{0,40}") {
            if check_reply_subject(&s, &allowed()).is_ok() {
                prop_assert!(!s.contains('*') && !s.contains('>') && !s.contains(' '));
                prop_assert!(!s.starts_with('$'));
                prop_assert!(s.starts_with("results.") || s.starts_with("_INBOX."));
                prop_assert!(!s.split('.').any(str::is_empty));
            }
        }

        #[test]
        fn durations_round_trip(ms in 1u64..86_400_000) {
            let text = humantime::format_duration(Duration::from_millis(ms)).to_string();
            prop_assert_eq!(parse_timeout(&text).unwrap(), Duration::from_millis(ms));
        }
    }
}
