//! `fleet cancel`: the library's [`fleet::cancel`], and one line per task
//! (or per batch) saying what happened.

use clap::Args;
use fleet::cancel::{self, Cancelled, Finished, Outcome};
use fleet::Error;

use crate::output::{print, ExitCode};

/// Which tasks to cancel.
#[derive(Debug, Args)]
pub(crate) struct CancelArgs {
    /// Task ids (`nightly.7`, or the id a task's `Task-Id` header gave it).
    #[arg(required_unless_present = "batch")]
    pub(crate) ids: Vec<String>,
    /// Cancel every task of this batch (ids `<batch>.<n>`, as `fleet submit --batch` gives).
    #[arg(long)]
    pub(crate) batch: Option<String>,
    /// On a tenant's connection: the tenant's name (its marks go to its
    /// own stream, SCHEDULES_<tenant>).
    #[arg(long, env = "FLEET_TENANT", conflicts_with = "for_tenant")]
    pub(crate) tenant: Option<String>,
    /// The admin cancelling a tenant's tasks (its ids are its own); default:
    /// the fleet account's.
    #[arg(long, value_name = "TENANT")]
    pub(crate) for_tenant: Option<String>,
    /// Print one JSON object per task (and per batch) instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Cancels what `args` names; exit 0 whatever each task's state was.
pub(crate) async fn run(
    js: &async_nats::jetstream::Context,
    args: CancelArgs,
) -> Result<ExitCode, Error> {
    let tenant = args.for_tenant.as_deref();
    let own = args.tenant.as_deref();
    let mut out = String::new();
    if let Some(batch) = &args.batch {
        let done = match own {
            Some(t) => cancel::own::cancel_batch(js, t, batch).await?,
            None => cancel::cancel_batch(js, tenant, batch).await?,
        };
        out.push_str(&if args.json {
            serde_json::json!({"batch": done.batch, "outcome": "marked"}).to_string()
        } else {
            format!(
                "batch {}: cancelled: marked; its tasks end as 499 where they are queued or running",
                done.batch
            )
        });
        out.push('\n');
        for task in &done.delayed {
            out.push_str(&line(task, args.json));
        }
    }
    let done = match own {
        Some(t) => cancel::own::cancel(js, t, &args.ids).await?,
        None => cancel::cancel(js, tenant, &args.ids).await?,
    };
    for task in done {
        out.push_str(&line(&task, args.json));
    }
    print(out).await?;
    Ok(0)
}

/// One task's line: `<id>: <what happened>`, or a JSON object.
fn line(task: &Cancelled, json: bool) -> String {
    if !json {
        return format!("{}: {}\n", task.id, task.outcome);
    }
    let value = match task.outcome {
        Outcome::AlreadyFinished(Finished::Ok) => {
            serde_json::json!({"id": task.id, "outcome": "already_finished", "result": "ok"})
        }
        Outcome::AlreadyFinished(Finished::Failed(code)) => serde_json::json!({
            "id": task.id, "outcome": "already_finished", "result": "error", "code": code
        }),
        Outcome::Marked => serde_json::json!({"id": task.id, "outcome": "marked"}),
        Outcome::Withdrawn => serde_json::json!({"id": task.id, "outcome": "withdrawn"}),
        Outcome::Fired => serde_json::json!({"id": task.id, "outcome": "fired"}),
    };
    format!("{value}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_task_gets_one_line() {
        let task = |outcome| Cancelled {
            id: "b.1".into(),
            outcome,
        };
        assert_eq!(
            line(&task(Outcome::AlreadyFinished(Finished::Ok)), false),
            "b.1: already finished: ok\n"
        );
        assert_eq!(
            line(
                &task(Outcome::AlreadyFinished(Finished::Failed(500))),
                false
            ),
            "b.1: already finished: failed 500\n"
        );
        let json: serde_json::Value = serde_json::from_str(&line(
            &task(Outcome::AlreadyFinished(Finished::Failed(500))),
            true,
        ))
        .unwrap();
        assert_eq!(json["code"], 500);
        assert_eq!(json["outcome"], "already_finished");
        let json: serde_json::Value =
            serde_json::from_str(&line(&task(Outcome::Withdrawn), true)).unwrap();
        assert_eq!(
            (json["id"].as_str(), json["outcome"].as_str()),
            (Some("b.1"), Some("withdrawn"))
        );
    }
}
