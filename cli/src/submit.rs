//! `fleet submit`: feeds the library's submitter from the arguments or
//! standard input, and shows its events: each task's end, a progress bar,
//! the summary, the exit code. With `--delay/--at`, schedules the batch
//! and collects its results as `fleet results` does.

use std::io::{self, IsTerminal};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fleet::schedule::pattern;
use fleet::{CollectConfig, Error, ErrorKind, Event, Scheduled, SubmitConfig, Summary};
use futures::{Stream, StreamExt};
use tokio::io::AsyncBufReadExt;

use crate::args::SubmitArgs;
use crate::output::{out_err, print, Format, Printer};

/// Runs `fleet submit`; returns the exit code: 0 when every task succeeded,
/// 1 when any failed or timed out.
pub(crate) async fn run(
    client: async_nats::Client,
    args: SubmitArgs,
    msg_id_salt: Option<String>,
) -> Result<i32, Error> {
    if args.delay.is_some() || args.at.is_some() || args.no_wait {
        return submit_later(client, args, msg_id_salt).await;
    }
    let from_args = !args.payloads.is_empty();
    let config = config(&args, msg_id_salt);
    // A bar for large or unknown-sized batches, on a terminal only.
    let progress = !args.no_progress
        && io::stderr().is_terminal()
        && (!from_args || args.payloads.len() > 100);
    let bar = crate::progress::bar(from_args.then_some(args.payloads.len() as u64), progress);
    let format = if args.json { Format::Json } else { args.format };
    let mut printer = Printer::new(format, tokio::io::BufWriter::new(tokio::io::stdout()));
    let input = input(args.payloads);
    let mut events = fleet::submit(client.clone(), config, input).await?;
    let mut summary: Option<Summary> = None;
    // Results are shown as they come: what was printed is flushed whenever
    // no event has come for a tenth of a second.
    let mut idle = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        tokio::select! {
            event = events.next() => match event {
                None => break,
                Some(event) => match event? {
                    Event::Ended(end) => {
                        bar.inc(1);
                        printer.print(&end).await.map_err(out_err)?;
                    }
                    Event::Finished(s) => summary = Some(s),
                },
            },
            _ = idle.tick() => printer.flush().await.map_err(out_err)?,
        }
    }
    printer.flush().await.map_err(out_err)?;
    bar.finish_and_clear();
    let summary = summary
        .ok_or_else(|| Error::new(ErrorKind::Io, "the submission ended without a summary"))?;
    let _ = client.flush().await;
    eprintln!("{summary}");
    if let Some(path) = args.summary_json {
        let json = serde_json::to_vec_pretty(&summary).expect("the summary serializes");
        std::fs::write(&path, json).map_err(|e| {
            Error::with_source(ErrorKind::Io, format!("writing {}", path.display()), e)
        })?;
    }
    if summary.all_ok() {
        return Ok(0);
    }
    if summary.failed + summary.timed_out > 0 {
        eprintln!(
            "error: {} of {} tasks failed or timed out",
            summary.failed + summary.timed_out,
            summary.tasks
        );
    }
    if summary.expired + summary.refused > 0 {
        eprintln!(
            "error: {} of {} tasks expired or were refused (unique key held)",
            summary.expired + summary.refused,
            summary.tasks
        );
    }
    Ok(1)
}

/// `fleet submit --delay/--at [--no-wait]`: schedules the batch, then (without
/// --no-wait) collects its results, each waited for until its time plus
/// --timeout.
pub(crate) async fn submit_later(
    client: async_nats::Client,
    args: SubmitArgs,
    msg_id_salt: Option<String>,
) -> Result<i32, Error> {
    let at = match (args.delay, &args.at) {
        (Some(delay), _) => SystemTime::now() + Duration::from(delay),
        (None, Some(at)) => pattern::parse_time(at)?,
        (None, None) => {
            return Err(Error::new(
                ErrorKind::Usage,
                "--no-wait goes with --delay or --at",
            ))
        }
    };
    let config = config(&args, msg_id_salt);
    let timeout: Duration = args.timeout.into();
    let format = if args.json { Format::Json } else { args.format };
    let input = input(args.payloads);
    let done = fleet::submit_at(client.clone(), config, at, input).await?;
    let mut printer = Printer::new(format, tokio::io::BufWriter::new(tokio::io::stdout()));
    for end in &done.refused {
        printer.print(end).await.map_err(out_err)?;
    }
    let when = pattern::rfc3339(done.at);
    if args.no_wait {
        let mut out = String::new();
        for id in done.ids() {
            if format == Format::Json {
                let line = serde_json::json!({"id": id, "batch": done.batch, "kind": done.kind, "status": "scheduled", "at": when});
                out.push_str(&format!("{line}\n"));
            } else {
                out.push_str(&format!("{id}\n"));
            }
        }
        printer.flush().await.map_err(out_err)?;
        print(out).await?;
    }
    eprintln!("{}", scheduled_line(&done, &when, args.tenant.as_deref()));
    if args.no_wait {
        return Ok(if done.refused.is_empty() { 0 } else { 1 });
    }
    let wait = done
        .at
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        + timeout;
    let config = CollectConfig {
        batch: done.batch.clone(),
        wait,
        tasks: Some(done.tasks),
        kind: Some(done.kind.clone()),
        tenant: args.tenant.clone(),
    };
    let collection = fleet::results(client, config).await?;
    crate::schedule::show(collection, printer).await
}

fn scheduled_line(done: &Scheduled, when: &str, tenant: Option<&str>) -> String {
    let (batch, n, kind) = (&done.batch, done.tasks, &done.kind);
    if done.earlier {
        return format!(
            "batch {batch} was scheduled before ({n} tasks of {kind} for {when}): nothing sent again"
        );
    }
    let refused = match done.refused.len() {
        0 => String::new(),
        r => format!(", {r} refused"),
    };
    format!(
        "{} of {n} tasks of {kind} scheduled for {when} in batch {batch}{refused} (collect them with: fleet results {batch}{})",
        done.stored.len(),
        tenant.map(|t| format!(" --tenant {t}")).unwrap_or_default()
    )
}

/// The library's settings of a run, from the command line's.
pub(crate) fn config(args: &SubmitArgs, msg_id_salt: Option<String>) -> SubmitConfig {
    SubmitConfig {
        kind: args.kind.clone(),
        window: args.window,
        timeout: args.timeout.into(),
        ephemeral: args.ephemeral,
        batch: args.batch.clone(),
        task_timeout: args.task_timeout.clone(),
        msg_id_salt,
        create: args.create,
        controls: args.control.controls(),
        tenant: args.tenant.clone(),
    }
}

/// The payloads: the arguments, or with none, the lines of standard input.
pub(crate) fn input(
    payloads: Vec<String>,
) -> Box<dyn Stream<Item = io::Result<Bytes>> + Send + Unpin> {
    if payloads.is_empty() {
        return Box::new(stdin_lines());
    }
    let items: Vec<io::Result<Bytes>> = payloads.into_iter().map(|p| Ok(Bytes::from(p))).collect();
    Box::new(futures::stream::iter(items))
}

/// Standard input, one payload per line (bytes, not necessarily UTF-8),
/// read as needed: a million lines are never held at once.
fn stdin_lines() -> impl Stream<Item = io::Result<Bytes>> + Send + Unpin {
    let reader = tokio::io::BufReader::with_capacity(64 * 1024, tokio::io::stdin());
    Box::pin(futures::stream::unfold(reader, |mut reader| async move {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) => None,
            Ok(_) => {
                if line.ends_with(b"\n") {
                    line.pop();
                    if line.ends_with(b"\r") {
                        line.pop();
                    }
                }
                Some((Ok(Bytes::from(line)), reader))
            }
            Err(err) => Some((Err(err), reader)),
        }
    }))
}
