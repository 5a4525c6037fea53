//! The fault suite's checker, after Jepsen's: every task NATS acknowledged is
//! classified from what `RESULTS` committed, not from what any process said.
//!
//! - ok: exactly one committed result, and it is a success;
//! - failed: exactly one committed result, an error (expected for poison);
//! - lost: acknowledged, and no committed result;
//! - duplicated: more than one committed result;
//! - unknown: never acknowledged by NATS (the submitter's code 503, not
//!   submitted).
//!
//! With cancellations ([`check_cancels`]), what `fleet cancel` said of each
//! task is checked too: one it cancelled (marked or withdrew) must keep
//! exactly one `499 cancelled` result; one it found finished keeps the
//! result it reported; a task never cancelled must not end as 499. Any
//! other ending is *wrong*. (A task marked while its handler was finishing
//! may rightly keep its ok result; runs avoid that race by cancelling only
//! tasks that cannot finish first, so the checker stays strict.)

use std::collections::{HashMap, HashSet};
use std::fmt;

use fleet::contract::{code, header};

/// The checker's table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Tasks NATS acknowledged.
    pub acknowledged: usize,
    /// One committed ok result.
    pub ok: usize,
    /// One committed error result.
    pub failed: usize,
    /// Acknowledged, no committed result.
    pub lost: usize,
    /// More than one committed result.
    pub duplicated: usize,
    /// Never acknowledged.
    pub unknown: usize,
    /// One committed `499 cancelled` result, as `fleet cancel` said.
    pub cancelled: usize,
    /// One committed result, but not the one the cancellations call for.
    pub wrong: usize,
    /// The lost tasks (numbers in the batch, or ids).
    pub lost_ids: Vec<String>,
    /// The duplicated tasks.
    pub duplicated_ids: Vec<String>,
    /// The tasks that ended wrongly, and how.
    pub wrong_ids: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "| acknowledged | ok | failed | cancelled | lost | duplicated | wrong | unknown |"
        )?;
        writeln!(f, "|---|---|---|---|---|---|---|---|")?;
        write!(
            f,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            self.acknowledged,
            self.ok,
            self.failed,
            self.cancelled,
            self.lost,
            self.duplicated,
            self.wrong,
            self.unknown
        )?;
        if !self.lost_ids.is_empty() {
            write!(
                f,
                "\nlost: {:?}",
                &self.lost_ids[..self.lost_ids.len().min(20)]
            )?;
        }
        if !self.duplicated_ids.is_empty() {
            write!(
                f,
                "\nduplicated: {:?}",
                &self.duplicated_ids[..self.duplicated_ids.len().min(20)]
            )?;
        }
        if !self.wrong_ids.is_empty() {
            write!(
                f,
                "\nwrong: {:?}",
                &self.wrong_ids[..self.wrong_ids.len().min(20)]
            )?;
        }
        Ok(())
    }
}

/// Classifies tasks `1..=tasks` of `batch` (submitted by `fleet submit
/// --batch`), given the submitter's JSON lines (for what was never
/// acknowledged) and the server's `RESULTS`.
pub async fn check(
    url: &str,
    batch: &str,
    tasks: u64,
    submit_lines: &[serde_json::Value],
) -> Report {
    let client = async_nats::connect(url)
        .await
        .expect("connecting to read RESULTS");
    check_from(client, None, batch, tasks, submit_lines).await
}

/// [`check`] reading `RESULTS` through `client` (a role with rights), for a
/// batch submitted by `tenant` (its results are kept under
/// `tenant.<tenant>.results.`).
pub async fn check_from(
    client: async_nats::Client,
    tenant: Option<&str>,
    batch: &str,
    tasks: u64,
    submit_lines: &[serde_json::Value],
) -> Report {
    let never_acked = never_acked(submit_lines);
    let kept = kept_results(client).await;
    let mut report = Report::default();
    for n in 1..=tasks {
        let id = fleet::contract::batch_task_id(batch, n);
        if never_acked.contains(&id) {
            report.unknown += 1;
            continue;
        }
        report.acknowledged += 1;
        let subject = fleet::contract::in_tenant(tenant, &fleet::contract::default_reply(&id));
        match kept.get(&subject).map(Vec::as_slice) {
            None | Some([]) => {
                report.lost += 1;
                report.lost_ids.push(n.to_string());
            }
            Some([None]) => report.ok += 1,
            Some([Some(_)]) => report.failed += 1,
            Some(_) => {
                report.duplicated += 1;
                report.duplicated_ids.push(n.to_string());
            }
        }
    }
    report
}

/// A submitter's JSON lines that are not `ok` (at most `most`), one per
/// line: what to print when a run goes wrong.
pub fn not_ok(submit_lines: &[serde_json::Value], most: usize) -> String {
    submit_lines
        .iter()
        .filter(|l| l["status"] != "ok")
        .take(most)
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The ids of a submitter's JSON lines that NATS never acknowledged.
pub fn never_acked(submit_lines: &[serde_json::Value]) -> HashSet<String> {
    submit_lines
        .iter()
        .filter(|l| l["code"].as_u64() == Some(u64::from(code::NOT_SUBMITTED)))
        .map(|l| l["id"].as_str().expect("every line has an id").to_string())
        .collect()
}

/// Every result `RESULTS` keeps, by subject: `None` for an ok result, the
/// code of an error result.
async fn kept_results(client: async_nats::Client) -> HashMap<String, Vec<Option<u16>>> {
    let mut kept: HashMap<String, Vec<Option<u16>>> = HashMap::new();
    for msg in crate::streams::read_stream_from(client, fleet::contract::RESULTS_STREAM).await {
        let code = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(header::SERVICE_ERROR_CODE))
            .map(|c| c.as_str().trim().parse().unwrap_or(code::HANDLER_FAILED));
        kept.entry(msg.subject.to_string()).or_default().push(code);
    }
    kept
}

/// What `fleet cancel` said of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// Marked or withdrawn: it must end as 499.
    Cancelled,
    /// Already finished, with this result (`None`: ok; an error's code).
    Finished(Option<u16>),
}

impl Cancel {
    /// Reads one line of `fleet cancel --json`: the task id and what was said.
    pub fn from_line(line: &serde_json::Value) -> Option<(String, Cancel)> {
        let id = line["id"].as_str()?.to_string();
        let said = match line["outcome"].as_str()? {
            "marked" | "withdrawn" => Cancel::Cancelled,
            "already_finished" => {
                Cancel::Finished(line["code"].as_u64().and_then(|c| u16::try_from(c).ok()))
            }
            _ => return None,
        };
        Some((id, said))
    }
}

/// One task the checker expects to end: its id, the subject its result is
/// kept on, and what `fleet cancel` said of it (if it was cancelled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The task id (for the report).
    pub id: String,
    /// Where its result is kept (`results.<id>`, or a tenant's).
    pub subject: String,
    /// What `fleet cancel` said of it.
    pub cancel: Option<Cancel>,
}

/// How one task ended, judged by the checker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// No committed result.
    Lost,
    /// More than one committed result.
    Duplicated,
    /// One result, not the one the cancellations call for.
    Wrong,
    /// One ok result.
    Ok,
    /// One error result (not a cancellation's).
    Failed,
    /// One `499 cancelled` result of a task `fleet cancel` cancelled.
    Cancelled,
}

/// How a task whose results `kept` (`None`: ok; an error's code) ended,
/// given what `fleet cancel` said of it.
pub fn ending(kept: &[Option<u16>], cancel: Option<Cancel>) -> Ending {
    let one = match kept {
        [] => return Ending::Lost,
        [one] => *one,
        _ => return Ending::Duplicated,
    };
    let cancelled = Some(code::CANCELLED);
    let right = match cancel {
        Some(Cancel::Cancelled) => one == cancelled,
        Some(Cancel::Finished(result)) => one == result,
        None => one != cancelled,
    };
    match one {
        _ if !right => Ending::Wrong,
        None => Ending::Ok,
        c if c == cancelled => Ending::Cancelled,
        Some(_) => Ending::Failed,
    }
}

/// Classifies every task of `tasks` from what `RESULTS` committed, read
/// through `client`, against what `fleet cancel` said (see the module
/// docs). Ids in `never_acked` are unknown.
pub async fn check_cancels(
    client: async_nats::Client,
    tasks: &[Expected],
    never_acked: &HashSet<String>,
) -> Report {
    let kept = kept_results(client).await;
    let mut report = Report::default();
    for task in tasks {
        if never_acked.contains(&task.id) {
            report.unknown += 1;
            continue;
        }
        report.acknowledged += 1;
        let kept = kept
            .get(&task.subject)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let id = task.id.clone();
        match ending(kept, task.cancel) {
            Ending::Lost => {
                report.lost += 1;
                report.lost_ids.push(id);
            }
            Ending::Duplicated => {
                report.duplicated += 1;
                report.duplicated_ids.push(id);
            }
            Ending::Wrong => {
                report.wrong += 1;
                report
                    .wrong_ids
                    .push(format!("{id} (said {:?}, kept {kept:?})", task.cancel));
            }
            Ending::Ok => report.ok += 1,
            Ending::Failed => report.failed += 1,
            Ending::Cancelled => report.cancelled += 1,
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_task_has_one_right_ending() {
        use Cancel::*;
        let c = Some(499);
        assert_eq!(ending(&[], None), Ending::Lost);
        assert_eq!(ending(&[None, None], None), Ending::Duplicated);
        assert_eq!(ending(&[c, None], Some(Cancelled)), Ending::Duplicated);
        assert_eq!(ending(&[None], None), Ending::Ok);
        assert_eq!(ending(&[Some(500)], None), Ending::Failed);
        assert_eq!(ending(&[c], None), Ending::Wrong, "a 499 nobody asked for");
        assert_eq!(ending(&[c], Some(Cancelled)), Ending::Cancelled);
        assert_eq!(ending(&[None], Some(Cancelled)), Ending::Wrong);
        assert_eq!(ending(&[Some(500)], Some(Cancelled)), Ending::Wrong);
        assert_eq!(ending(&[None], Some(Finished(None))), Ending::Ok);
        assert_eq!(ending(&[c], Some(Finished(None))), Ending::Wrong);
        assert_eq!(
            ending(&[Some(500)], Some(Finished(Some(500)))),
            Ending::Failed
        );
    }

    #[test]
    fn cancel_lines_are_read_as_fleet_cancel_writes_them() {
        let line = |v: serde_json::Value| Cancel::from_line(&v);
        assert_eq!(
            line(serde_json::json!({"id": "b.1", "outcome": "marked"})),
            Some(("b.1".into(), Cancel::Cancelled))
        );
        assert_eq!(
            line(serde_json::json!({"id": "b.2", "outcome": "withdrawn"})),
            Some(("b.2".into(), Cancel::Cancelled))
        );
        assert_eq!(
            line(serde_json::json!({"id": "b.3", "outcome": "already_finished", "result": "ok"})),
            Some(("b.3".into(), Cancel::Finished(None)))
        );
        assert_eq!(
            line(
                serde_json::json!({"id": "b.4", "outcome": "already_finished", "result": "error", "code": 500})
            ),
            Some(("b.4".into(), Cancel::Finished(Some(500))))
        );
        assert_eq!(
            line(serde_json::json!({"batch": "b", "outcome": "marked"})),
            None
        );
    }
}
