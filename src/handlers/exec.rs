//! Exec handlers: any program as a handler, declared by the operator.
//!
//! The payload goes to the program's standard input and its standard output
//! is the result. The command line is fixed by the operator; the payload is
//! never interpolated into it. The program runs in its own process group,
//! killed whole when the task is cancelled (deadline, shutdown).
//!
//! Exit 0 is success. Exit 65 (`EX_DATAERR`) means the input is bad: the task
//! fails at once with code 400. Any other exit is a retryable failure whose
//! message carries the tail of standard error.
//!
//! The program's environment is cleared: it sees [`BASE_ENV`] and the names
//! the operator allows (`--exec-env`), taken from the node's environment,
//! plus `TASK_ID`, `TASK_KIND`, `TASK_ATTEMPT` and `TASK_TENANT`. Never the
//! node's credentials.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::envelope::Task;
use crate::error::{FailureKind, TaskError};
use crate::handlers::{Handler, HandlerFuture, Registry};

/// Largest output an exec handler may produce before it is refused.
const MAX_OUTPUT: usize = 64 * 1024 * 1024;
/// How much of standard error an error result keeps.
const STDERR_TAIL: usize = 2048;
/// Exit code that marks bad input (sysexits.h `EX_DATAERR`): no retry.
const EXIT_BAD_INPUT: i32 = 65;

/// Variables of the node's environment every program sees (when set).
pub const BASE_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"];

/// A program run through `sh -c`, one process group per task.
#[derive(Debug, Clone, Deserialize)]
pub struct ExecHandler {
    /// The command line, run by `/bin/sh -c`.
    pub command: String,
    /// An upper bound on the task's own timeout, e.g. `30s`.
    #[serde(default, with = "humantime_serde_opt")]
    pub timeout: Option<Duration>,
    /// Names of the node's environment variables the program may see, on
    /// top of [`BASE_ENV`].
    #[serde(default)]
    pub env: Vec<String>,
}

impl ExecHandler {
    /// A handler that runs `command` with `sh -c`.
    pub fn new(command: impl Into<String>) -> Self {
        ExecHandler {
            command: command.into(),
            timeout: None,
            env: Vec::new(),
        }
    }

    /// The environment the program starts with (the task's variables are
    /// added per task).
    fn environment(&self) -> Vec<(String, String)> {
        BASE_ENV
            .iter()
            .map(|n| n.to_string())
            .chain(self.env.iter().cloned())
            .filter_map(|name| std::env::var(&name).ok().map(|value| (name, value)))
            .collect()
    }
}

impl Handler for ExecHandler {
    fn call(&self, task: Task) -> HandlerFuture {
        let this = self.clone();
        Box::pin(async move {
            match this.timeout {
                Some(limit) => tokio::time::timeout(limit, this.run(task))
                    .await
                    .unwrap_or_else(|_| {
                        Err(TaskError::new(
                            FailureKind::TimedOut,
                            format!("timed out after {}", humantime::format_duration(limit)),
                        ))
                    }),
                None => this.run(task).await,
            }
        })
    }
}

impl ExecHandler {
    async fn run(&self, task: Task) -> Result<Bytes, TaskError> {
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(&self.command)
            .env_clear()
            .envs(self.environment())
            .env("TASK_TENANT", task.tenant.as_deref().unwrap_or(""))
            .env("TASK_ID", &task.id)
            .env("TASK_KIND", &task.kind)
            .env("TASK_ATTEMPT", task.attempt.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {:?}", self.command))?;
        let _group = child.id().map(GroupKiller);

        let mut stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let payload = task.payload;
        let feed = async move {
            // A program that does not read its input closes the pipe early;
            // that is its business, not an error.
            let _ = stdin.write_all(&payload).await;
            drop(stdin);
        };
        let (_, out, err, status) = tokio::join!(
            feed,
            read_capped(stdout, MAX_OUTPUT),
            read_tail(stderr, STDERR_TAIL),
            child.wait()
        );
        let status = status.context("waiting for the program")?;
        let out = match out {
            Output::Read(bytes) => bytes,
            Output::TooLarge => {
                return Err(TaskError::new(
                    FailureKind::TooLarge,
                    format!("output larger than {MAX_OUTPUT} bytes"),
                ))
            }
            Output::Failed(e) => {
                return Err(TaskError::retry(format!(
                    "reading the program's output: {e}"
                )))
            }
        };
        outcome(status, out, &err)
    }
}

fn outcome(status: ExitStatus, out: Vec<u8>, err: &[u8]) -> Result<Bytes, TaskError> {
    if status.success() {
        return Ok(out.into());
    }
    let tail = &err[err.len().saturating_sub(STDERR_TAIL)..];
    let tail = String::from_utf8_lossy(tail);
    let message = format!("{status}: {}", tail.trim_end());
    if status.code() == Some(EXIT_BAD_INPUT) {
        Err(TaskError::reject(message))
    } else {
        Err(TaskError::retry(message))
    }
}

/// What reading a program's output gave.
#[derive(Debug)]
enum Output {
    /// All of it, within the cap.
    Read(Vec<u8>),
    /// More than the cap.
    TooLarge,
    /// Reading failed.
    Failed(std::io::Error),
}

async fn read_capped(reader: impl AsyncRead + Unpin, cap: usize) -> Output {
    let mut buf = Vec::new();
    let mut limited = reader.take(cap as u64 + 1);
    if let Err(e) = limited.read_to_end(&mut buf).await {
        return Output::Failed(e);
    }
    if buf.len() > cap {
        return Output::TooLarge;
    }
    Output::Read(buf)
}

/// Reads `reader` to its end, keeping only its last `keep` bytes (a chatty
/// program's standard error must not fill the node's memory).
async fn read_tail(mut reader: impl AsyncRead + Unpin, keep: usize) -> Vec<u8> {
    let mut tail = Vec::with_capacity(keep * 2);
    let mut chunk = [0u8; 8192];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => return tail,
            Ok(n) => {
                tail.extend_from_slice(&chunk[..n]);
                if tail.len() > keep * 2 {
                    tail.drain(..tail.len() - keep);
                }
            }
        }
    }
}

/// Kills the whole process group of a task's program when dropped, so a
/// cancelled task leaves no grandchildren behind.
struct GroupKiller(u32);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.0 as i32);
        // ESRCH (already gone) is the normal case.
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    }
}

/// Parses `KIND=COMMAND`, the form of `--exec`.
///
/// # Errors
/// When there is no `=` or either side is empty.
pub fn parse_exec_flag(flag: &str) -> anyhow::Result<(String, ExecHandler)> {
    let Some((kind, command)) = flag.split_once('=') else {
        bail!("--exec takes KIND=COMMAND, got {flag:?}");
    };
    let kind = kind.trim();
    if kind.is_empty() || command.trim().is_empty() {
        bail!("--exec takes KIND=COMMAND with both sides set, got {flag:?}");
    }
    crate::check::check_task_id(kind)
        .map_err(|e| anyhow::anyhow!("--exec kind {kind:?}: {}", e.message()))?;
    Ok((kind.to_string(), ExecHandler::new(command)))
}

/// Reads a handlers file: one table per kind.
///
/// ```toml
/// [thumbnail]
/// command = "convert - -resize 64x64 png:-"
/// timeout = "30s"
/// ```
///
/// # Errors
/// When the file cannot be read or is not of that shape.
pub fn load_file(path: &Path) -> anyhow::Result<Vec<(String, ExecHandler)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let table: BTreeMap<String, ExecHandler> =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(table.into_iter().collect())
}

/// Registers every exec handler of `flags` and `file` in `registry`; each
/// may see the node's variables named in `env` (and its own `env` list).
///
/// # Errors
/// When a flag or the file is malformed.
pub fn register_all(
    registry: &mut Registry,
    flags: &[String],
    file: Option<&Path>,
    env: &[String],
) -> anyhow::Result<()> {
    let mut handlers = match file {
        Some(path) => load_file(path)?,
        None => Vec::new(),
    };
    for flag in flags {
        handlers.push(parse_exec_flag(flag)?);
    }
    for (kind, mut handler) in handlers {
        handler.env.extend(env.iter().cloned());
        registry.register(kind, handler);
    }
    Ok(())
}

mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| humantime::parse_duration(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn exit_zero_is_the_result() {
        assert_eq!(
            outcome(exited(0), b"out".to_vec(), b"").unwrap(),
            Bytes::from_static(b"out")
        );
    }

    #[test]
    fn exit_65_is_bad_input_and_others_are_retried() {
        let bad = outcome(exited(65), vec![], b"no such image").unwrap_err();
        assert_eq!((bad.code(), bad.is_retryable()), (400, false));
        assert!(bad.message().contains("no such image"));
        let flaky = outcome(exited(1), vec![], b"").unwrap_err();
        assert_eq!((flaky.code(), flaky.is_retryable()), (500, true));
        let killed = outcome(ExitStatus::from_raw(9), vec![], b"").unwrap_err();
        assert!(killed.is_retryable(), "{killed}");
    }

    #[test]
    fn error_results_keep_only_the_tail_of_stderr() {
        let mut err = vec![b'a'; 10_000];
        err.extend_from_slice(b"the end");
        let failed = outcome(exited(2), vec![], &err).unwrap_err();
        assert!(failed.message().ends_with("the end"));
        assert!(failed.message().len() < STDERR_TAIL + 100);
    }

    #[tokio::test]
    async fn output_over_the_cap_is_too_large_not_an_io_error() {
        assert!(matches!(read_capped(&b"12345"[..], 5).await, Output::Read(b) if b == b"12345"));
        assert!(matches!(
            read_capped(&b"123456"[..], 5).await,
            Output::TooLarge
        ));
    }

    #[tokio::test]
    async fn only_the_tail_of_stderr_is_held() {
        let long: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let tail = read_tail(&long[..], 100).await;
        assert!(tail.len() >= 100 && tail.len() <= 200);
        assert!(long.ends_with(&tail));
    }

    #[test]
    fn exec_flags_take_kind_equals_command() {
        let (kind, handler) = parse_exec_flag("upper=tr a-z A-Z").unwrap();
        assert_eq!(
            (kind.as_str(), handler.command.as_str()),
            ("upper", "tr a-z A-Z")
        );
        for bad in ["upper", "=cmd", "upper=  ", "a b=cmd", "x.>=cmd"] {
            assert!(parse_exec_flag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn programs_see_only_the_allowed_environment() {
        std::env::set_var("FLEET_EXEC_TEST_SECRET", "s3cret");
        std::env::set_var("FLEET_EXEC_TEST_OK", "fine");
        let mut handler = ExecHandler::new("env");
        handler.env.push("FLEET_EXEC_TEST_OK".into());
        let env = handler.environment();
        assert!(env
            .iter()
            .any(|(k, v)| k == "FLEET_EXEC_TEST_OK" && v == "fine"));
        assert!(env.iter().all(|(k, _)| k != "FLEET_EXEC_TEST_SECRET"));
        assert!(env.iter().any(|(k, _)| k == "PATH"));
    }

    #[test]
    fn handlers_files_are_tables_of_kinds() {
        let dir = std::env::temp_dir().join(format!("fleet-exec-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("handlers.toml");
        std::fs::write(
            &path,
            "[upper]\ncommand = \"tr a-z A-Z\"\ntimeout = \"30s\"\n",
        )
        .unwrap();
        let handlers = load_file(&path).unwrap();
        assert_eq!(handlers.len(), 1);
        assert_eq!(handlers[0].1.timeout, Some(Duration::from_secs(30)));
        std::fs::write(&path, "[upper]\ntimeout = \"soon\"\n").unwrap();
        assert!(load_file(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
