//! The built-in handlers, for demos, tests and benchmarks.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::check::parse_timeout;
use crate::envelope::Task;
use crate::error::TaskError;

/// Returns the payload unchanged.
pub async fn echo(task: Task) -> Result<Bytes, TaskError> {
    Ok(task.payload)
}

/// Returns the lowercase hex SHA-256 digest of the payload bytes.
pub async fn sha256(task: Task) -> Result<String, TaskError> {
    Ok(hex::encode(Sha256::digest(&task.payload)))
}

/// Sleeps for the duration in the payload (`250ms`, `2s`) and returns nothing.
///
/// # Errors
/// Code 400 when the payload is not a duration.
pub async fn sleep(task: Task) -> Result<Bytes, TaskError> {
    let text = std::str::from_utf8(&task.payload)
        .map_err(|_| TaskError::reject("sleep takes a duration such as 250ms"))?;
    let duration = parse_timeout(text).map_err(|_| {
        TaskError::reject(format!(
            "sleep takes a duration such as 250ms, not {text:?}"
        ))
    })?;
    tokio::time::sleep(duration).await;
    Ok(Bytes::new())
}

/// Always fails with a retryable error: exercises retries and dead letters.
pub async fn fail(task: Task) -> Result<Bytes, TaskError> {
    Err(TaskError::retry(format!(
        "fail always fails (attempt {})",
        task.attempt
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn task(payload: &'static [u8]) -> Task {
        Task {
            id: "1".into(),
            kind: "k".into(),
            tenant: None,
            attempt: 2,
            deadline: tokio::time::Instant::now(),
            payload: Bytes::from_static(payload),
            headers: Arc::default(),
        }
    }

    #[tokio::test]
    async fn echo_and_sha256() {
        assert_eq!(echo(task(b"hi")).await.unwrap(), Bytes::from_static(b"hi"));
        assert_eq!(
            sha256(task(b"hello")).await.unwrap(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
    }

    #[tokio::test]
    async fn sleep_refuses_what_is_not_a_duration() {
        assert_eq!(sleep(task(b"soon")).await.unwrap_err().code(), 400);
        assert_eq!(sleep(task(b"\xff")).await.unwrap_err().code(), 400);
        assert!(sleep(task(b"1ms")).await.is_ok());
    }

    #[tokio::test]
    async fn fail_is_retryable_and_names_its_attempt() {
        let err = fail(task(b"")).await.unwrap_err();
        assert!(err.is_retryable());
        assert!(err.message().contains("attempt 2"), "{err}");
    }
}
