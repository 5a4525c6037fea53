//! The fault suite's checker, after Jepsen's: every task NATS acknowledged is
//! classified from what `RESULTS` committed, not from what any process said.
//!
//! - ok: exactly one committed result, and it is a success;
//! - failed: exactly one committed result, an error (expected for poison);
//! - lost: acknowledged, and no committed result;
//! - duplicated: more than one committed result;
//! - unknown: never acknowledged by NATS (the submitter's code 503, not
//!   submitted).

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
    /// Numbers of the lost tasks.
    pub lost_ids: Vec<u64>,
    /// Numbers of the duplicated tasks.
    pub duplicated_ids: Vec<u64>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "| acknowledged | ok | failed | lost | duplicated | unknown |"
        )?;
        writeln!(f, "|---|---|---|---|---|---|")?;
        write!(
            f,
            "| {} | {} | {} | {} | {} | {} |",
            self.acknowledged, self.ok, self.failed, self.lost, self.duplicated, self.unknown
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
    let never_acked: HashSet<String> = submit_lines
        .iter()
        .filter(|l| l["code"].as_u64() == Some(u64::from(code::NOT_SUBMITTED)))
        .map(|l| l["id"].as_str().expect("every line has an id").to_string())
        .collect();
    let mut kept: HashMap<String, Vec<bool>> = HashMap::new();
    for msg in crate::streams::read_stream_from(client, fleet::contract::RESULTS_STREAM).await {
        let is_error = msg
            .headers
            .as_ref()
            .is_some_and(|h| h.get(header::SERVICE_ERROR_CODE).is_some());
        kept.entry(msg.subject.to_string())
            .or_default()
            .push(!is_error);
    }
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
                report.lost_ids.push(n);
            }
            Some([true]) => report.ok += 1,
            Some([false]) => report.failed += 1,
            Some(_) => {
                report.duplicated += 1;
                report.duplicated_ids.push(n);
            }
        }
    }
    report
}
