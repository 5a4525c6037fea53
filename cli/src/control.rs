//! `fleet pause`, `fleet resume`, and the control flags of `fleet submit`
//! (`--expire-after`, `--result-ttl`, `--unique`, `--unique-for`).

use std::time::SystemTime;

use clap::Args;
use fleet::control::UniqueKey;
use fleet::pause::{self, PauseState, Target};
use fleet::{Error, ErrorKind, TaskControls};
use humantime::Duration;

use crate::output::{print, ExitCode};

/// Deadlines, result lifetimes and unique keys of the tasks of a submit.
#[derive(Debug, Args)]
pub(crate) struct SubmitControlArgs {
    /// A task not started this long after it is published is not run: it
    /// ends `408 expired` (sets Task-Deadline).
    #[arg(long, value_name = "DUR")]
    pub(crate) expire_after: Option<Duration>,
    /// How long each kept result lives in RESULTS (whole seconds, at least
    /// 1s; sets Result-TTL).
    #[arg(long, value_name = "DUR")]
    pub(crate) result_ttl: Option<Duration>,
    /// A key no other queued or running task of this kind may hold: a task
    /// whose key is taken is not published (409) and the holder is named.
    #[arg(long, value_name = "KEY")]
    pub(crate) unique: Option<String>,
    /// Keep the unique key taken this long after the task ends.
    #[arg(long, value_name = "DUR", requires = "unique")]
    pub(crate) unique_for: Option<Duration>,
    /// The key per-key limits count the tasks under (a customer, a tenant,
    /// a domain; sets Task-Key; see `fleet limit set --per-key-concurrency`).
    #[arg(long, value_name = "KEY")]
    pub(crate) key: Option<String>,
    /// The priority band: high, normal or low. High tasks start first; low
    /// ones when the others leave room, never starved (published to
    /// tasks-high.<kind> / tasks-low.<kind>, with Task-Priority).
    #[arg(long, value_name = "BAND", default_value = "normal")]
    pub(crate) priority: fleet::priority::Priority,
}

impl SubmitControlArgs {
    /// The library's controls (checked by `fleet::submit`).
    pub(crate) fn controls(&self) -> TaskControls {
        TaskControls {
            expire_after: self.expire_after.map(Into::into),
            result_ttl: self.result_ttl.map(Into::into),
            unique: self.unique.as_ref().map(|key| UniqueKey {
                key: key.clone(),
                hold_for: self.unique_for.map(Into::into),
            }),
            key: self.key.clone(),
            priority: self.priority,
        }
    }
}

/// Which groups `fleet pause` and `fleet resume` act on.
#[derive(Debug, Args)]
pub(crate) struct TargetArgs {
    /// The kind whose group to act on; refused when the group takes other
    /// kinds too.
    #[arg(required_unless_present = "group", conflicts_with = "group")]
    pub(crate) kind: Option<String>,
    /// The group (durable consumer) to act on.
    #[arg(long)]
    pub(crate) group: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

impl TargetArgs {
    fn target(&self) -> Target {
        match (&self.group, &self.kind) {
            (Some(group), _) => Target::Group(group.clone()),
            (None, Some(kind)) => Target::Kind(kind.clone()),
            (None, None) => unreachable!("clap requires a kind or --group"),
        }
    }
}

/// `fleet pause`.
#[derive(Debug, Args)]
pub(crate) struct PauseArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,
    /// Until when: a time (2026-12-01T09:00:00Z) or a duration (10m);
    /// default until `fleet resume`.
    #[arg(long, value_name = "TIME|DUR")]
    pub(crate) until: Option<String>,
}

/// `fleet pause`: nodes of the group start no task until it is resumed
/// (or `--until`); running tasks finish; the queue keeps filling.
pub(crate) async fn pause(
    js: &async_nats::jetstream::Context,
    args: PauseArgs,
) -> Result<ExitCode, Error> {
    let now = SystemTime::now();
    let until = match &args.until {
        Some(text) => Some(
            pause::parse_until(text, now)
                .map_err(|why| Error::new(ErrorKind::Usage, format!("--until: {why}")))?,
        ),
        None => None,
    };
    let done = pause::pause(js, &args.target.target(), until).await?;
    report(&done, args.target.json).await
}

/// `fleet resume`: the group's nodes start tasks again at once.
pub(crate) async fn resume(
    js: &async_nats::jetstream::Context,
    args: TargetArgs,
) -> Result<ExitCode, Error> {
    let done = pause::resume(js, &args.target()).await?;
    report(&done, args.json).await
}

async fn report(done: &[PauseState], json: bool) -> Result<ExitCode, Error> {
    let mut out = String::new();
    for state in done {
        if json {
            out.push_str(&serde_json::to_string(state).expect("a pause state serializes"));
        } else if state.paused {
            let until = state
                .until
                .as_deref()
                .and_then(|u| humantime::parse_rfc3339(u).ok())
                .map_or("resumed".into(), |u| {
                    pause::until_text(u, SystemTime::now())
                });
            out.push_str(&format!("paused group {} until {until}", state.group));
        } else {
            out.push_str(&format!("resumed group {}", state.group));
        }
        out.push('\n');
    }
    print(out).await?;
    Ok(0)
}
