//! Handlers: the [`Handler`] trait, the [`Registry`] that maps a kind to its
//! handler, and the one dispatch point the node calls.
//!
//! A handler is any `async fn(Task) -> Result<impl Into<Bytes>, TaskError>`.
//! Adding a built-in is a new function in `builtin.rs` and one line in
//! [`Registry::with_builtins`] (or [`Registry::with_dev_builtins`] for
//! those a production node must not run); operators add programs with [`exec`].

pub mod builtin;
pub mod exec;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use crate::envelope::Task;
use crate::error::TaskError;

/// The future a handler returns, boxed so handlers of any type share one map.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Bytes, TaskError>> + Send>>;

/// Runs tasks of one kind.
pub trait Handler: Send + Sync + 'static {
    /// Runs one task. Dropping the future cancels the task: a handler that
    /// starts processes must stop them on drop (see [`exec`]).
    fn call(&self, task: Task) -> HandlerFuture;
}

impl<F, Fut, R> Handler for F
where
    F: Fn(Task) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, TaskError>> + Send + 'static,
    R: Into<Bytes>,
{
    fn call(&self, task: Task) -> HandlerFuture {
        let fut = (self)(task);
        Box::pin(async move { fut.await.map(Into::into) })
    }
}

/// Kind to handler. Cheap to clone.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn Handler>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.kinds()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The built-ins safe anywhere: `echo` and `sha256`.
    pub fn with_builtins() -> Self {
        let mut registry = Self::new();
        registry.register("echo", builtin::echo);
        registry.register("sha256", builtin::sha256);
        registry
    }

    /// The built-ins plus those for development and tests: `sleep` (any
    /// task could hold a slot for as long as it names) and `fail`.
    pub fn with_dev_builtins() -> Self {
        let mut registry = Self::with_builtins();
        registry.register("sleep", builtin::sleep);
        registry.register("fail", builtin::fail);
        registry
    }

    /// Registers `handler` for `kind`, replacing any earlier one.
    pub fn register(&mut self, kind: impl Into<String>, handler: impl Handler) -> &mut Self {
        self.handlers.insert(kind.into(), Arc::new(handler));
        self
    }

    /// The handler for `kind`, if any.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Handler>> {
        self.handlers.get(kind)
    }

    /// Every registered kind, sorted.
    pub fn kinds(&self) -> Vec<&str> {
        let mut kinds: Vec<&str> = self.handlers.keys().map(String::as_str).collect();
        kinds.sort_unstable();
        kinds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_builtins_leave_out_sleep_and_fail() {
        assert_eq!(Registry::with_builtins().kinds(), ["echo", "sha256"]);
        assert_eq!(
            Registry::with_dev_builtins().kinds(),
            ["echo", "fail", "sha256", "sleep"]
        );
        assert!(Registry::new().get("echo").is_none());
    }
}
