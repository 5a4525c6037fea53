//! Time on the command line: `fleet results` and `fleet schedule
//! add|list|remove`, each a library call and how its answer is shown; how
//! a batch's results are shown once collected (also after `fleet submit
//! --delay/--at`, see [`crate::submit`]).
//!
//! Exit codes: 0 when everything asked for is there and ok (every task
//! scheduled; every result kept and ok; the schedule added or removed), 1
//! when a task failed, was refused or has no result yet, or the schedule
//! to remove does not exist, 2 for usage, connection and setup errors.

use std::time::Duration;

use bytes::Bytes;
use clap::{ArgGroup, Args, Subcommand};
use fleet::schedule::{self, Recurring, Repeat, Schedule};
use fleet::{BatchReport, CollectConfig, Collected, Collection, Error, ErrorKind};
use futures::StreamExt;

use crate::output::{out_err, print, Format, Printer};

/// `fleet results`.
#[derive(Debug, Args)]
pub(crate) struct ResultsArgs {
    /// The batch: its --batch name, or the one `fleet submit` printed.
    pub(crate) batch: String,
    /// Wait this long for results still missing (e.g. 5m); default: look once.
    #[arg(long)]
    pub(crate) wait: Option<humantime::Duration>,
    /// How to print results.
    #[arg(long, value_enum, default_value_t = Format::Raw)]
    pub(crate) format: Format,
    /// Print results as JSON lines (same as --format json).
    #[arg(long)]
    pub(crate) json: bool,
    /// On a tenant's connection: the tenant's name (see `fleet submit --tenant`).
    #[arg(long, env = "FLEET_TENANT")]
    pub(crate) tenant: Option<String>,
}

/// `fleet schedule`.
#[derive(Debug, Subcommand)]
pub(crate) enum ScheduleCommand {
    /// Add a recurring schedule (replacing one of the same name).
    Add(AddArgs),
    /// List the recurring schedules: pattern, next run, last run.
    List {
        /// Print one JSON object per schedule and line.
        #[arg(long)]
        json: bool,
        /// On a tenant's connection: the tenant's name (its own schedules).
        #[arg(long, env = "FLEET_TENANT")]
        tenant: Option<String>,
    },
    /// Remove a recurring schedule (a task it already fired still runs).
    Remove {
        /// The schedule's name.
        name: String,
        /// On a tenant's connection: the tenant's name (its own schedules).
        #[arg(long, env = "FLEET_TENANT")]
        tenant: Option<String>,
    },
}

/// `fleet schedule add`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("repeat").required(true).args(["cron", "every"])))]
pub(crate) struct AddArgs {
    /// The schedule's name: one word of letters, digits, - and _.
    pub(crate) name: String,
    /// The kind of task it fires.
    pub(crate) kind: String,
    /// The payload of each task (default: empty).
    pub(crate) payload: Option<String>,
    /// A cron line: 5 fields (minute hour day month weekday) or 6 (seconds
    /// first), or @hourly, @daily, @weekly, @monthly, @yearly.
    #[arg(long)]
    pub(crate) cron: Option<String>,
    /// Or an interval, at least 1s (e.g. 30s, 5m), from when it is added.
    #[arg(long)]
    pub(crate) every: Option<humantime::Duration>,
    /// The IANA time zone of the cron line (default UTC), e.g. Europe/Paris.
    #[arg(long)]
    pub(crate) tz: Option<String>,
    /// A run not started within this long after it fired is not run: it
    /// ends 408 expired (no node up, a backlog, a pause). Default: it waits
    /// as long as it takes.
    #[arg(long)]
    pub(crate) catch_up: Option<humantime::Duration>,
    /// Task-Timeout of each task, e.g. 30s.
    #[arg(long)]
    pub(crate) task_timeout: Option<String>,
    /// On a tenant's connection: the tenant's name, as the server maps its
    /// subjects (tenant.NAME.…); the schedule fires into its own space.
    #[arg(long, env = "FLEET_TENANT")]
    pub(crate) tenant: Option<String>,
}

/// `fleet results BATCH`.
pub(crate) async fn results(client: async_nats::Client, args: ResultsArgs) -> Result<i32, Error> {
    let config = CollectConfig {
        batch: args.batch,
        wait: args.wait.map(Into::into).unwrap_or_default(),
        tenant: args.tenant,
        ..Default::default()
    };
    let format = if args.json { Format::Json } else { args.format };
    let collection = fleet::results(client, config).await?;
    let printer = Printer::new(format, tokio::io::BufWriter::new(tokio::io::stdout()));
    show(collection, printer).await
}

/// Prints each result as it comes, then what is missing; the exit code.
pub(crate) async fn show<W: tokio::io::AsyncWrite + Unpin>(
    mut collection: Collection,
    mut printer: Printer<W>,
) -> Result<i32, Error> {
    let mut report = None;
    let mut idle = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            event = collection.next() => match event {
                None => break,
                Some(event) => match event? {
                    Collected::Ended(end) => printer.print(&end).await.map_err(out_err)?,
                    Collected::Finished(r) => report = Some(r),
                },
            },
            _ = idle.tick() => printer.flush().await.map_err(out_err)?,
        }
    }
    printer.flush().await.map_err(out_err)?;
    let report =
        report.ok_or_else(|| Error::new(ErrorKind::Io, "the collection ended without a report"))?;
    eprintln!("{}", report_text(&report));
    Ok(if report.all_ok() { 0 } else { 1 })
}

/// How many ids of missing tasks a report names.
const NAMED: usize = 10;

fn report_text(r: &BatchReport) -> String {
    if r.tasks == 0 {
        return format!(
            "batch {}: no results kept and nothing scheduled (no such batch, or its results are gone)",
            r.batch
        );
    }
    let mut text = format!(
        "batch {}: {} tasks: {} ok, {} failed, {} missing",
        r.batch,
        r.tasks,
        r.ok,
        r.failed,
        r.missing.len()
    );
    if !r.missing.is_empty() {
        let mut named = r.missing[..r.missing.len().min(NAMED)].join(", ");
        if r.missing.len() > NAMED {
            named.push_str(", …");
        }
        text.push_str(&format!(" ({named})"));
    }
    if !r.scheduled.is_empty() {
        let at = r.at.as_deref().unwrap_or("later");
        text.push_str(&format!(
            "; {} of them still scheduled, for {at}",
            r.scheduled.len()
        ));
    }
    text
}

/// `fleet schedule …`.
pub(crate) async fn run(
    client: async_nats::Client,
    command: ScheduleCommand,
) -> Result<i32, Error> {
    match command {
        ScheduleCommand::Add(args) => {
            let repeat = match (args.cron, args.every) {
                (Some(line), _) => Repeat::Cron(line),
                (None, Some(every)) => Repeat::Every(every.into()),
                (None, None) => unreachable!("clap requires --cron or --every"),
            };
            let recurring = Recurring {
                name: args.name,
                kind: args.kind,
                repeat,
                time_zone: args.tz,
                catch_up: args.catch_up.map(Into::into),
                task_timeout: args.task_timeout,
                payload: Bytes::from(args.payload.unwrap_or_default()),
            };
            let added = schedule::add_in(&client, args.tenant.as_deref(), &recurring).await?;
            let verb = if added.replaced { "replaced" } else { "added" };
            let zone = recurring
                .time_zone
                .map(|z| format!(" ({z})"))
                .unwrap_or_default();
            print(format!(
                "{verb} schedule {}: {}{zone} -> {}\n",
                recurring.name, added.pattern, recurring.kind
            ))
            .await?;
            Ok(0)
        }
        ScheduleCommand::List { json, tenant } => {
            let schedules = schedule::list_in(&client, tenant.as_deref()).await?;
            let mut out = String::new();
            for s in &schedules {
                out.push_str(&if json { json_line(s) } else { text_line(s) });
                out.push('\n');
            }
            print(out).await?;
            if !json {
                eprintln!("{} schedules", schedules.len());
            }
            Ok(0)
        }
        ScheduleCommand::Remove { name, tenant } => {
            if schedule::remove_in(&client, tenant.as_deref(), &name).await? {
                print(format!("removed schedule {name}\n")).await?;
                Ok(0)
            } else {
                eprintln!("error: no schedule named {name:?} (fleet schedule list shows them)");
                Ok(1)
            }
        }
    }
}

fn json_line(s: &Schedule) -> String {
    serde_json::to_string(s).expect("a schedule serializes")
}

fn text_line(s: &Schedule) -> String {
    let last = match &s.last_run {
        Some(run) => {
            let status = match run.code {
                Some(code) => format!("error {code}"),
                None => run.status.clone(),
            };
            let at = run.started.as_deref().unwrap_or("?");
            format!("{status} at {at} ({})", run.id)
        }
        None => "-".to_string(),
    };
    format!(
        "{:<16} {:<12} {:<22} {:<14} next {:<22} last {last}",
        s.name,
        s.kind,
        s.pattern,
        s.time_zone.as_deref().unwrap_or("UTC"),
        s.next_run.as_deref().unwrap_or("-"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_names_what_is_missing() {
        let r = BatchReport {
            batch: "b".into(),
            tasks: 3,
            ok: 1,
            missing: vec!["b.2".into(), "b.3".into()],
            scheduled: vec!["b.3".into()],
            at: Some("2026-12-01T09:00:00Z".into()),
            ..Default::default()
        };
        assert_eq!(
            report_text(&r),
            "batch b: 3 tasks: 1 ok, 0 failed, 2 missing (b.2, b.3); 1 of them still scheduled, for 2026-12-01T09:00:00Z"
        );
        let none = BatchReport {
            batch: "x".into(),
            ..Default::default()
        };
        assert!(report_text(&none).contains("no such batch"));
    }
}
