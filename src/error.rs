//! Typed failures and errors.
//!
//! - A [`FailureKind`] is why a task ended badly; its wire code and whether it
//!   is retried follow from it, so a retryable 400 cannot be written down.
//! - A [`TaskError`] is a failure kind with a message: what handlers return.
//! - An [`Error`] is what the library's commands return: an [`ErrorKind`] to
//!   match on, a message, and the cause as [`std::error::Error::source`].
//!
//! Imports only [`crate::contract`] (the codes are part of the wire).

use std::fmt;

use crate::contract::code;

/// Why a task ended badly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// The task itself is wrong (a malformed header, a forbidden reply
    /// subject, input the handler refuses): 400, never retried.
    BadInput,
    /// No handler for the task's kind: 404, never retried.
    NoSuchKind,
    /// The attempt ran past its deadline: 408, retried.
    TimedOut,
    /// The result is larger than the server takes: 413, never retried.
    TooLarge,
    /// The handler failed: 500, retried.
    HandlerFailed,
    /// Delivered again and again without ever finishing (its nodes died
    /// running it): 500, never retried.
    Unfinished,
    /// JetStream never stored the task (a submitter's verdict): 503.
    NotSubmitted,
    /// Cancelled (`fleet cancel`) before or while it ran: 499, never
    /// retried, never dead-lettered.
    Cancelled,
    /// Its `Task-Deadline` passed before a node started it: 408, never
    /// retried, never dead-lettered.
    Expired,
}

impl FailureKind {
    /// The code carried in `Nats-Service-Error-Code`.
    pub const fn code(self) -> u16 {
        match self {
            FailureKind::BadInput => code::BAD_INPUT,
            FailureKind::NoSuchKind => code::NO_SUCH_KIND,
            FailureKind::TimedOut | FailureKind::Expired => code::TIMED_OUT,
            FailureKind::TooLarge => code::TOO_LARGE,
            FailureKind::HandlerFailed | FailureKind::Unfinished => code::HANDLER_FAILED,
            FailureKind::NotSubmitted => code::NOT_SUBMITTED,
            FailureKind::Cancelled => code::CANCELLED,
        }
    }

    /// Whether another attempt may succeed.
    pub const fn is_retryable(self) -> bool {
        matches!(self, FailureKind::TimedOut | FailureKind::HandlerFailed)
    }

    /// The kind a code read from a result stands for (500 reads as
    /// [`FailureKind::HandlerFailed`]); `None` for a code fleet never writes.
    pub const fn from_code(value: u16) -> Option<FailureKind> {
        Some(match value {
            code::BAD_INPUT => FailureKind::BadInput,
            code::NO_SUCH_KIND => FailureKind::NoSuchKind,
            code::TIMED_OUT => FailureKind::TimedOut,
            code::TOO_LARGE => FailureKind::TooLarge,
            code::HANDLER_FAILED => FailureKind::HandlerFailed,
            code::NOT_SUBMITTED => FailureKind::NotSubmitted,
            code::CANCELLED => FailureKind::Cancelled,
            _ => return None,
        })
    }
}

/// Why a task failed: a [`FailureKind`] and a message.
///
/// Handlers return it; `?` converts any error (anything `anyhow` takes) into
/// a retryable [`FailureKind::HandlerFailed`], so plain handler bodies need
/// no ceremony. Use [`TaskError::reject`] for input that will never succeed.
#[derive(Clone, PartialEq, Eq)]
pub struct TaskError {
    kind: FailureKind,
    message: String,
}

impl TaskError {
    /// A failure that may pass (I/O, a busy dependency): retried with backoff.
    pub fn retry(message: impl Into<String>) -> Self {
        Self::new(FailureKind::HandlerFailed, message)
    }

    /// Input that will never succeed: answered at once with code 400, no retry.
    pub fn reject(message: impl Into<String>) -> Self {
        Self::new(FailureKind::BadInput, message)
    }

    /// A failure of `kind`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        TaskError {
            kind,
            message: message.into(),
        }
    }

    /// Why the task failed.
    pub fn kind(&self) -> FailureKind {
        self.kind
    }

    /// The status code carried in `Nats-Service-Error-Code`.
    pub fn code(&self) -> u16 {
        self.kind.code()
    }

    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    /// The text carried in `Nats-Service-Error`.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl<E: Into<anyhow::Error>> From<E> for TaskError {
    fn from(err: E) -> Self {
        TaskError::retry(format!("{:#}", err.into()))
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code())
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .finish()
    }
}

/// What went wrong in a library command, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The arguments or the input are wrong; nothing was sent.
    Usage,
    /// NATS could not be reached.
    Connection,
    /// NATS refused the credentials, or the user lacks a permission.
    Auth,
    /// The streams or the group's consumer do not exist: run `fleet setup`.
    NotSetUp,
    /// Streams or consumers could not be created, bound or read.
    Setup,
    /// Reading the input or writing the output failed.
    Io,
}

/// The cause of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error from a library command: a kind to match on, what was being
/// done, and the cause.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<BoxError>,
}

impl Error {
    /// An error of `kind` saying `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An error of `kind`: `message` says what was being done, `source` why
    /// it failed.
    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error {
            kind,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// Which kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Attaches an [`ErrorKind`] and what was being done to any fallible result.
pub(crate) trait ResultExt<T> {
    /// Maps the error into an [`Error`] of `kind` saying `doing`.
    fn or_fail(self, kind: ErrorKind, doing: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T, E: Into<BoxError>> ResultExt<T> for Result<T, E> {
    fn or_fail(self, kind: ErrorKind, doing: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|e| Error::with_source(kind, doing(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    const ALL: [FailureKind; 9] = [
        FailureKind::BadInput,
        FailureKind::NoSuchKind,
        FailureKind::TimedOut,
        FailureKind::TooLarge,
        FailureKind::HandlerFailed,
        FailureKind::Unfinished,
        FailureKind::NotSubmitted,
        FailureKind::Cancelled,
        FailureKind::Expired,
    ];

    #[test]
    fn only_timeouts_and_handler_failures_are_retried() {
        let retried: Vec<_> = ALL.iter().filter(|k| k.is_retryable()).collect();
        assert_eq!(
            retried,
            [&FailureKind::TimedOut, &FailureKind::HandlerFailed]
        );
    }

    #[test]
    fn no_retryable_failure_has_a_4xx_code_other_than_timeout() {
        for kind in ALL {
            if kind.is_retryable() {
                assert!(
                    kind.code() >= 500 || kind.code() == code::TIMED_OUT,
                    "{kind:?}"
                );
            }
        }
    }

    #[test]
    fn codes_round_trip() {
        for kind in ALL {
            let back = FailureKind::from_code(kind.code()).unwrap();
            assert_eq!(back.code(), kind.code(), "{kind:?}");
        }
        assert_eq!(FailureKind::from_code(418), None);
        assert_eq!(
            FailureKind::from_code(500),
            Some(FailureKind::HandlerFailed)
        );
    }

    #[test]
    fn question_mark_makes_a_retryable_handler_failure() {
        fn body() -> Result<(), TaskError> {
            Err(std::io::Error::other("disk on fire"))?;
            Ok(())
        }
        let err = body().unwrap_err();
        assert_eq!(err.kind(), FailureKind::HandlerFailed);
        assert!(err.is_retryable());
        assert!(err.message().contains("disk on fire"));
    }

    #[test]
    fn reject_is_final_bad_input() {
        let err = TaskError::reject("no");
        assert_eq!((err.code(), err.is_retryable()), (400, false));
        assert_eq!(err.to_string(), "no (400)");
    }

    #[test]
    fn errors_keep_their_cause() {
        let cause = std::io::Error::other("refused");
        let err = Error::with_source(ErrorKind::Connection, "connecting to nats://x", cause);
        assert_eq!(err.to_string(), "connecting to nats://x");
        assert_eq!(err.source().unwrap().to_string(), "refused");
        assert_eq!(err.kind(), ErrorKind::Connection);
        let plain = Error::new(ErrorKind::Usage, "bad");
        assert!(plain.source().is_none());
    }
}
