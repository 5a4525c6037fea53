//! The built-in handlers, for demos, tests and benchmarks.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::error::TaskError;
use crate::task::{parse_timeout, Task};

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
