//! Typed errors. A [`TaskError`] says whether a failed task may be retried and
//! which status code its error result carries; an [`Error`] is what the
//! library's commands return, with a kind the caller matches on.
//!
//! Nothing here imports the rest of the crate.

use std::fmt;

/// Why a task failed, and whether trying again may help.
///
/// Handlers return it; `?` converts any error (anything `anyhow` takes) into a
/// retryable failure with code 500, so plain handler bodies need no ceremony.
/// Use [`TaskError::reject`] for input that will never succeed.
pub struct TaskError {
    code: u16,
    retryable: bool,
    message: String,
}

impl TaskError {
    /// A failure that may pass (I/O, a busy dependency): retried with backoff.
    pub fn retry(message: impl Into<String>) -> Self {
        Self::new(crate::contract::code::HANDLER_FAILED, true, message)
    }

    /// Input that will never succeed: answered at once with code 400, no retry.
    pub fn reject(message: impl Into<String>) -> Self {
        Self::new(crate::contract::code::BAD_INPUT, false, message)
    }

    /// A failure with an explicit code and retry decision.
    pub fn new(code: u16, retryable: bool, message: impl Into<String>) -> Self {
        TaskError {
            code,
            retryable,
            message: message.into(),
        }
    }

    /// The status code carried in `Nats-Service-Error-Code`.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
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
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskError")
            .field("code", &self.code)
            .field("retryable", &self.retryable)
            .field("message", &self.message)
            .finish()
    }
}

/// What went wrong in a library command, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The arguments or the input are wrong; nothing was sent.
    Usage,
    /// NATS could not be reached, or refused us.
    Connection,
    /// Streams or consumers could not be created or bound.
    Setup,
    /// Anything else that stopped the command.
    Other,
}

/// An error from a library command: a kind to match on and the cause.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    source: anyhow::Error,
}

impl Error {
    /// Wraps `source` as an error of `kind`.
    pub fn new(kind: ErrorKind, source: impl Into<anyhow::Error>) -> Self {
        Error {
            kind,
            source: source.into(),
        }
    }

    /// Which kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.source)
    }
}

impl std::error::Error for Error {}

/// Attaches an [`ErrorKind`] to any fallible result.
pub trait ResultExt<T> {
    /// Maps the error into an [`Error`] of `kind`.
    fn kind(self, kind: ErrorKind) -> Result<T, Error>;
}

impl<T, E: Into<anyhow::Error>> ResultExt<T> for Result<T, E> {
    fn kind(self, kind: ErrorKind) -> Result<T, Error> {
        self.map_err(|e| Error::new(kind, e))
    }
}
