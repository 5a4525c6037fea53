//! Dead letters: tasks that ended in failure, kept in `DEAD` with their
//! payload, headers and last error. [`list`] shows them; [`replay`] puts
//! them back on `TASKS` and removes them from `DEAD`; [`delete`] drops them.
//!
//! A dead letter is untrusted input like any task: [`replay`] reads its
//! tenant and kind from the subject the node wrote it under, checks its id
//! and reply subject as a node checks a task's, strips every JetStream
//! header (`Nats-*`), and purges nothing but that task's own result. A
//! letter that fails a check is skipped and reported; the rest are replayed.

use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::Context;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;

use crate::check::{check_reply_subject, check_task_id};
use crate::contract::{self, header, msg_id};
use crate::error::{Error, ErrorKind, ResultExt};
use crate::priority::Priority;

/// One dead letter.
#[derive(Debug, Clone, Serialize)]
pub struct DeadTask {
    /// Its sequence in `DEAD`.
    pub seq: u64,
    /// The task's kind.
    pub kind: String,
    /// The task's tenant (none for the fleet account's own tasks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The task's id.
    pub id: String,
    /// The band it ran in (`high`, `normal`, `low`), where a replay goes.
    pub priority: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last error's code.
    pub code: u16,
    /// The last error.
    pub error: String,
    /// Payload size in bytes (as kept: see `truncated`).
    pub bytes: usize,
    /// The payload was cut to fit the server's `max_payload`; its size then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<usize>,
    /// The subject it is kept under.
    #[serde(skip)]
    pub subject: String,
    /// Its headers, as kept.
    #[serde(skip)]
    pub headers: HeaderMap,
    /// Its payload, as kept.
    #[serde(skip)]
    pub payload: Bytes,
}

/// Headers the node adds to a dead letter; dropped again on replay.
const DEAD_ONLY: &[&str] = &[
    header::TASK_KIND,
    header::TASK_SEQ,
    header::TASK_ATTEMPT,
    header::TASK_NODE,
    header::TASK_TRUNCATED,
    header::SERVICE_ERROR,
    header::SERVICE_ERROR_CODE,
];

/// The subjects holding dead letters of `kind` (every kind when `None`),
/// in the fleet account and every tenant.
fn filters(kind: Option<&str>) -> Vec<String> {
    let dead = contract::dead_subject(kind.unwrap_or(">"));
    vec![dead.clone(), format!("{}*.{dead}", contract::TENANT_PREFIX)]
}

/// Every dead letter, or those of `kind`, oldest first.
///
/// # Errors
/// [`ErrorKind::NotSetUp`] when `DEAD` is missing, [`ErrorKind::Connection`]
/// when NATS does not answer.
pub async fn list(js: &Context, kind: Option<&str>) -> Result<Vec<DeadTask>, Error> {
    let reading = || "reading dead letters".to_string();
    let stream = js
        .get_stream(contract::DEAD_STREAM)
        .await
        .or_fail(ErrorKind::NotSetUp, || {
            format!("no {} stream: run `fleet setup`", contract::DEAD_STREAM)
        })?;
    let mut consumer = stream
        .create_consumer(OrderedConfig {
            filter_subjects: filters(kind),
            ..Default::default()
        })
        .await
        .or_fail(ErrorKind::Setup, reading)?;
    let mut dead = Vec::new();
    if consumer
        .info()
        .await
        .or_fail(ErrorKind::Connection, reading)?
        .num_pending
        == 0
    {
        return Ok(dead);
    }
    let mut messages = consumer
        .messages()
        .await
        .or_fail(ErrorKind::Connection, reading)?;
    while let Some(msg) = messages.next().await {
        let msg = msg.or_fail(ErrorKind::Connection, reading)?;
        let info = msg.info().or_fail(ErrorKind::Connection, reading)?;
        let (seq, pending) = (info.stream_sequence, info.pending);
        dead.push(read(
            seq,
            &msg.subject,
            msg.headers.clone().unwrap_or_default(),
            msg.payload.clone(),
        ));
        if pending == 0 {
            break;
        }
    }
    Ok(dead)
}

fn read(seq: u64, subject: &str, headers: HeaderMap, payload: Bytes) -> DeadTask {
    let get = |name: &str| {
        headers
            .get(name)
            .map(|v| v.as_str().to_string())
            .unwrap_or_default()
    };
    let (tenant, rest) = contract::split_tenant(subject);
    DeadTask {
        seq,
        kind: rest
            .strip_prefix(contract::DEAD_PREFIX)
            .unwrap_or_default()
            .to_string(),
        tenant: tenant.map(str::to_string),
        id: get(header::TASK_ID),
        priority: headers
            .get(header::TASK_PRIORITY)
            .map_or_else(|| Priority::Normal.to_string(), |v| v.as_str().to_string()),
        attempts: get(header::TASK_ATTEMPT).parse().unwrap_or(0),
        code: get(header::SERVICE_ERROR_CODE).parse().unwrap_or(0),
        error: get(header::SERVICE_ERROR),
        bytes: payload.len(),
        truncated: headers
            .get(header::TASK_TRUNCATED)
            .and_then(|v| v.as_str().parse().ok()),
        subject: subject.to_string(),
        headers,
        payload,
    }
}

/// A dead letter checked for replay: where it goes and what it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checked {
    /// `tasks.<kind>` in the letter's tenant (`tasks-high.<kind>` for a
    /// letter of the high band: its `Task-Priority`).
    pub(crate) task_subject: String,
    /// The task's own result subject in its tenant, to purge, when the
    /// task answers there.
    pub(crate) purge: Option<String>,
    /// The headers to replay with.
    pub(crate) headers: HeaderMap,
}

/// Checks a dead letter as a node checks a task; says why it may not be
/// replayed.
pub(crate) fn check(task: &DeadTask) -> Result<Checked, String> {
    let (tenant, rest) = contract::split_tenant(&task.subject);
    if !rest.starts_with(contract::DEAD_PREFIX) {
        return Err(format!("not a dead letter subject: {:?}", task.subject));
    }
    if let Some(t) = tenant {
        check_task_id(t).map_err(|e| format!("bad tenant: {}", e.message()))?;
        if t.contains('.') {
            return Err(format!("bad tenant {t:?}"));
        }
    }
    check_task_id(&task.kind).map_err(|e| format!("bad kind {:?}: {}", task.kind, e.message()))?;
    if task.id.is_empty() {
        return Err(format!("no {}", header::TASK_ID));
    }
    check_task_id(&task.id).map_err(|e| e.message().to_string())?;
    if task.truncated.is_some() {
        return Err(
            "its payload was cut to fit max_payload; replaying it would run a different task"
                .into(),
        );
    }
    let headers = header::copy_own(&task.headers, &[], DEAD_ONLY);
    let band: Priority = match headers.get(header::TASK_PRIORITY) {
        Some(p) => p.as_str().parse()?,
        None => Priority::Normal,
    };
    let own = contract::default_reply(&task.id);
    let reply = headers
        .get(header::REPLY_TO)
        .map(|v| v.as_str().to_string());
    if let Some(reply) = &reply {
        let allowed: Vec<String> = contract::DEFAULT_ALLOWED_REPLY_PREFIXES
            .iter()
            .map(|p| p.to_string())
            .collect();
        check_reply_subject(reply, &allowed).map_err(|e| e.message().to_string())?;
    }
    let purge = reply
        .as_deref()
        .is_none_or(|r| r == own)
        .then(|| contract::in_tenant(tenant, &own));
    Ok(Checked {
        task_subject: contract::in_tenant(tenant, &band.task_subject(&task.kind)),
        purge,
        headers,
    })
}

/// What a replay did.
#[derive(Debug, Clone, Default)]
pub struct Replayed {
    /// Letters put back on `TASKS` (and removed from `DEAD`).
    pub replayed: Vec<DeadTask>,
    /// Letters left in `DEAD`, with why.
    pub skipped: Vec<(DeadTask, String)>,
}

/// Puts dead letters back on `TASKS`: those of `kind`, and of `ids` (task
/// ids or `DEAD` sequences) when any are given. A replayed task's old
/// result is purged from its own result subject, so the new result can be
/// kept. A letter that fails a check, or whose publish JetStream does not
/// confirm, is skipped with the reason; the others are replayed.
///
/// # Errors
/// As [`list`].
pub async fn replay(js: &Context, kind: Option<&str>, ids: &[String]) -> Result<Replayed, Error> {
    let chosen = chosen(js, kind, ids).await?;
    let dead_stream = js
        .get_stream_no_info(contract::DEAD_STREAM)
        .await
        .or_fail(ErrorKind::NotSetUp, || "reading DEAD".into())?;
    let results = js
        .get_stream_no_info(contract::RESULTS_STREAM)
        .await
        .or_fail(ErrorKind::NotSetUp, || "reading RESULTS".into())?;
    let mut done = Replayed::default();
    for task in chosen {
        let checked = match check(&task) {
            Ok(checked) => checked,
            Err(why) => {
                done.skipped.push((task, why));
                continue;
            }
        };
        let step = async {
            if let Some(subject) = &checked.purge {
                results
                    .purge()
                    .filter(subject.as_str())
                    .await
                    .map_err(|e| format!("purging {subject}: {e}"))?;
            }
            let publish = PublishMessage::build()
                .payload(task.payload.clone())
                .headers(checked.headers.clone())
                .message_id(format!("{}{}", msg_id::REPLAY, task.seq));
            js.send_publish(checked.task_subject.clone(), publish)
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| format!("publishing to {}: {e}", checked.task_subject))?;
            dead_stream
                .delete_message(task.seq)
                .await
                .map_err(|e| format!("replayed, but not removed from DEAD: {e}"))
        };
        match step.await {
            Ok(_) => done.replayed.push(task),
            Err(why) => done.skipped.push((task, why)),
        }
    }
    Ok(done)
}

/// Removes dead letters from `DEAD`: those of `kind`, and of `ids` when any
/// are given. Returns those removed.
///
/// # Errors
/// As [`list`]; [`ErrorKind::Connection`] when a delete is not confirmed.
pub async fn delete(
    js: &Context,
    kind: Option<&str>,
    ids: &[String],
) -> Result<Vec<DeadTask>, Error> {
    let chosen = chosen(js, kind, ids).await?;
    let stream = js
        .get_stream_no_info(contract::DEAD_STREAM)
        .await
        .or_fail(ErrorKind::NotSetUp, || "reading DEAD".into())?;
    for task in &chosen {
        stream
            .delete_message(task.seq)
            .await
            .or_fail(ErrorKind::Connection, || {
                format!("deleting dead letter {}", task.seq)
            })?;
    }
    Ok(chosen)
}

async fn chosen(js: &Context, kind: Option<&str>, ids: &[String]) -> Result<Vec<DeadTask>, Error> {
    Ok(list(js, kind)
        .await?
        .into_iter()
        .filter(|d| ids.is_empty() || ids.iter().any(|i| *i == d.id || *i == d.seq.to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(subject: &str, pairs: &[(&str, &str)]) -> DeadTask {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.insert(*k, *v);
        }
        read(7, subject, headers, Bytes::from_static(b"payload"))
    }

    #[test]
    fn a_plain_letter_goes_back_to_its_kind_and_purges_its_own_result() {
        let d = letter(
            "dead.echo",
            &[
                ("Task-Id", "b.1"),
                ("Task-Attempt", "5"),
                ("Nats-Service-Error-Code", "500"),
            ],
        );
        assert_eq!((d.kind.as_str(), d.attempts, d.code), ("echo", 5, 500));
        let c = check(&d).unwrap();
        assert_eq!(c.task_subject, "tasks.echo");
        assert_eq!(c.purge.as_deref(), Some("results.b.1"));
        assert!(c.headers.get("Task-Attempt").is_none() && c.headers.get("Task-Id").is_some());
    }

    #[test]
    fn a_tenant_letter_stays_in_its_tenant() {
        let d = letter("tenant.alice.dead.image.resize", &[("Task-Id", "x")]);
        assert_eq!(
            (d.tenant.as_deref(), d.kind.as_str()),
            (Some("alice"), "image.resize")
        );
        let c = check(&d).unwrap();
        assert_eq!(c.task_subject, "tenant.alice.tasks.image.resize");
        let high = letter(
            "tenant.alice.dead.echo",
            &[("Task-Id", "x"), ("Task-Priority", "high")],
        );
        assert_eq!(
            check(&high).unwrap().task_subject,
            "tenant.alice.tasks-high.echo"
        );
        let odd = letter("dead.echo", &[("Task-Id", "x"), ("Task-Priority", "asap")]);
        assert!(check(&odd).is_err(), "a letter of no band is not replayed");
        assert_eq!(c.purge.as_deref(), Some("tenant.alice.results.x"));
    }

    #[test]
    fn a_wildcard_id_purges_nothing_and_is_skipped() {
        for id in [">", "*", "a.>", "a b", ""] {
            let d = letter("dead.evil", &[("Task-Id", id)]);
            assert!(check(&d).is_err(), "{id:?}");
        }
        assert!(check(&letter("dead.evil", &[])).is_err(), "no Task-Id");
    }

    #[test]
    fn jetstream_headers_are_stripped() {
        let d = letter(
            "dead.echo",
            &[
                ("Task-Id", "a"),
                ("Nats-Expected-Stream", "NOPE"),
                ("nats-msg-id", "dead-9"),
                ("Keep", "me"),
            ],
        );
        let c = check(&d).unwrap();
        assert!(c.headers.get("Nats-Expected-Stream").is_none());
        assert!(c.headers.get("nats-msg-id").is_none());
        assert_eq!(c.headers.get("Keep").map(|v| v.as_str()), Some("me"));
    }

    #[test]
    fn a_bad_reply_subject_or_shared_one_is_handled() {
        let bad = letter(
            "dead.echo",
            &[
                ("Task-Id", "a"),
                ("Reply-To", "$JS.API.STREAM.DELETE.TASKS"),
            ],
        );
        assert!(check(&bad).is_err());
        let shared = letter(
            "dead.echo",
            &[("Task-Id", "a"), ("Reply-To", "results.demo")],
        );
        assert_eq!(
            check(&shared).unwrap().purge,
            None,
            "a shared subject is never purged"
        );
    }

    #[test]
    fn a_truncated_letter_is_not_replayed() {
        let d = letter(
            "dead.echo",
            &[("Task-Id", "a"), ("Task-Truncated", "2000000")],
        );
        assert_eq!(d.truncated, Some(2_000_000));
        assert!(check(&d).unwrap_err().contains("max_payload"));
    }

    #[test]
    fn odd_subjects_are_skipped() {
        assert!(check(&letter("tenant.a.b.dead.x", &[("Task-Id", "a")])).is_err());
        assert!(check(&letter("dead.", &[("Task-Id", "a")])).is_err());
    }
}
