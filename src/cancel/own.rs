//! A tenant cancelling its own tasks, on its own connection
//! (`fleet cancel --tenant T`, or `FLEET_TENANT`).
//!
//! The fleet's bucket of marks is shared, and a bucket with per-key TTLs
//! always takes rollups: one `Nats-Rollup: all` from a tenant would wipe
//! every mark (seen on 2.15.2). Sourcing a tenant's marks into it would not
//! help either: a sourced message's rollup is applied even where rollups
//! are refused. So a tenant's marks stay in its own stream,
//! `SCHEDULES_<t>`, on `sched.cancel.task.<id>` and
//! `sched.cancel.batch.<name>` as the tenant writes them (its import puts
//! them under `tenant.<t>.`), and nodes watch each tenant's stream as they
//! watch the bucket (`node::cancel_watch`). A tenant's rollup there wipes
//! only its own marks and schedules.
//!
//! | the task …                         | done here                                              | [`Outcome`] |
//! |------------------------------------|--------------------------------------------------------|-------------|
//! | has a result kept on `results.<id>` | nothing                                               | `AlreadyFinished` |
//! | is delayed (`sched.task.<id>`)     | marked, its schedule replaced by one firing now        | `Fired` |
//! | is queued or running               | marked: it ends as 499 where it is                     | `Marked` |
//!
//! A tenant may not write `RESULTS` nor delete from its stream, so a
//! delayed task is not withdrawn with a 499 written here, as the fleet's
//! are: its schedule is brought forward (`@at` a moment ago, a
//! compare-and-set on the schedule's sequence, so a schedule that fired in
//! between is not fired twice) and the node that takes the task, already
//! marked, keeps its `499 cancelled`.

use async_nats::jetstream::Context;
use async_nats::{Client, HeaderMap};

use super::{each, BatchCancelled, Cancelled, Outcome, MARK_VALUE};
use crate::contract::{self, header};
use crate::direct::{self, Stored};
use crate::error::{Error, ErrorKind};

/// Most delayed tasks of one batch brought forward by one cancel.
const BATCH_LIMIT: usize = 100_000;

/// Cancels the tasks `ids` of `tenant`, on the tenant's own connection.
///
/// # Errors
/// [`ErrorKind::Usage`] for a malformed id or tenant (nothing is changed);
/// [`ErrorKind::NotSetUp`] when the tenant has no stream of its own
/// (`fleet setup --tenant`); [`ErrorKind::Connection`] when NATS does not
/// answer. Ids before the one that failed are cancelled.
pub async fn cancel(js: &Context, tenant: &str, ids: &[String]) -> Result<Vec<Cancelled>, Error> {
    check(tenant)?;
    // Results are read as the tenant names them: its import maps the
    // direct get.
    each(js, None, ids, |id| async move {
        mark(js, tenant, &contract::cancel_task_key(&id)).await?;
        bring_forward(js, tenant, &id).await
    })
    .await
}

/// Cancels every task of `batch` of `tenant`, on the tenant's own
/// connection: marks the batch, then brings its delayed tasks forward.
///
/// # Errors
/// As [`cancel`].
pub async fn cancel_batch(
    js: &Context,
    tenant: &str,
    batch: &str,
) -> Result<BatchCancelled, Error> {
    check(tenant)?;
    super::check_batch(batch)?;
    mark(js, tenant, &contract::cancel_batch_key(batch)).await?;
    let prefix = contract::delayed_subject(&format!("{batch}."));
    let held = direct::from_seq(
        &js.client(),
        contract::SCHEDULES_STREAM,
        &format!("{}*", contract::in_tenant(Some(tenant), &prefix)),
        1,
        BATCH_LIMIT,
    )
    .await?;
    let mut delayed = Vec::new();
    for stored in held {
        let Some(id) = contract::split_tenant(&stored.subject)
            .1
            .strip_prefix(&prefix)
            .map(|n| format!("{batch}.{n}"))
        else {
            continue;
        };
        let outcome = fire_now(&js.client(), &stored).await?;
        delayed.push(Cancelled { id, outcome });
    }
    Ok(BatchCancelled {
        batch: batch.to_string(),
        delayed,
    })
}

fn check(tenant: &str) -> Result<(), Error> {
    crate::setup::tenant::check_tenant_name(tenant).map_err(|e| Error::new(ErrorKind::Usage, e))
}

/// Writes the mark `key` on `sched.cancel.<key>` and waits for it to be
/// kept. Each key keeps its last write only. The write must land in
/// `SCHEDULES_<tenant>` (`Nats-Expected-Stream`): on another account's
/// connection it lands nowhere, and the error says whose it is.
async fn mark(js: &Context, tenant: &str, key: &str) -> Result<(), Error> {
    let subject = contract::own_cancel_subject(key);
    let stream = contract::tenant_schedules_stream(tenant);
    let mut headers = HeaderMap::new();
    headers.insert(header::ROLLUP, "sub");
    headers.insert(EXPECTED_STREAM, stream.as_str());
    match publish(&js.client(), &subject, headers, MARK_VALUE.into()).await? {
        Written::Kept => Ok(()),
        Written::NoStream => Err(Error::new(
            ErrorKind::NotSetUp,
            format!(
                "no stream takes {subject}: the fleet's admin runs `fleet setup --tenant {tenant}` (and the server's config imports sched.> for this account)"
            ),
        )),
        Written::Refused(STREAM_NOT_MATCH, _) => Err(Error::new(
            ErrorKind::Usage,
            format!(
                "this connection does not write into tenant {tenant}'s stream {stream}: --tenant names the tenant whose user is connected (the fleet's admin cancels a tenant's tasks with --for-tenant)"
            ),
        )),
        Written::Refused(code, description) => Err(Error::new(
            ErrorKind::Connection,
            format!("writing the cancel mark {subject}: {description} ({code})"),
        )),
    }
}

/// What the server said to one publish.
#[derive(Debug)]
enum Written {
    Kept,
    NoStream,
    Refused(u64, String),
}

/// Publishes and reads the PubAck (its error code matters here).
async fn publish(
    client: &Client,
    subject: &str,
    headers: HeaderMap,
    payload: bytes::Bytes,
) -> Result<Written, Error> {
    let reply = client
        .request_with_headers(subject.to_string(), headers, payload)
        .await;
    let reply = match reply {
        Ok(reply) => reply,
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
            return Ok(Written::NoStream)
        }
        Err(e) => {
            return Err(Error::with_source(
                ErrorKind::Connection,
                format!("publishing on {subject}"),
                e,
            ))
        }
    };
    let ack: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap_or_default();
    Ok(match ack.get("error") {
        None if ack.get("seq").is_some() => Written::Kept,
        Some(e) => Written::Refused(
            e["err_code"].as_u64().unwrap_or_default(),
            e["description"].as_str().unwrap_or_default().to_string(),
        ),
        None => Written::Refused(0, String::from_utf8_lossy(&reply.payload).into_owned()),
    })
}

/// Header: the stream a publish must land in.
const EXPECTED_STREAM: &str = "Nats-Expected-Stream";
/// `err_code` of a publish that landed in another stream than expected.
const STREAM_NOT_MATCH: u64 = 10060;
/// `err_code` of a compare-and-set that lost (`wrong last sequence`).
const WRONG_LAST_SEQUENCE: u64 = 10071;

/// Brings the delayed task `id` forward, if its schedule is still held.
async fn bring_forward(js: &Context, tenant: &str, id: &str) -> Result<Outcome, Error> {
    let subject = contract::in_tenant(Some(tenant), &contract::delayed_subject(id));
    match direct::last(&js.client(), contract::SCHEDULES_STREAM, &subject).await? {
        Some(stored) => fire_now(&js.client(), &stored).await,
        None => Ok(Outcome::Marked),
    }
}

/// Replaces the schedule `stored` with one that fires at once, unless it
/// changed (fired) since it was read.
async fn fire_now(client: &Client, stored: &Stored) -> Result<Outcome, Error> {
    if stored.header(header::SCHEDULE).is_none() {
        // Not a schedule (a removal left behind): nothing is held.
        return Ok(Outcome::Marked);
    }
    let subject = contract::split_tenant(&stored.subject).1.to_string();
    let now = std::time::SystemTime::now() - std::time::Duration::from_secs(1);
    let headers = fired_now_headers(&stored.headers, stored.seq, now);
    match publish(client, &subject, headers, stored.payload.clone()).await? {
        Written::Kept => Ok(Outcome::Fired),
        // It fired (or changed) since it was read.
        Written::Refused(WRONG_LAST_SEQUENCE, _) => Ok(Outcome::Marked),
        Written::NoStream => Err(Error::new(
            ErrorKind::NotSetUp,
            format!("no stream takes {subject}"),
        )),
        Written::Refused(code, description) => Err(Error::new(
            ErrorKind::Connection,
            format!("bringing {subject} forward: {description} ({code})"),
        )),
    }
}

/// The headers of a schedule replacing the one read with `stored`
/// (sequence `seq`): the same task, target and TTL, firing at `now`,
/// written only if `seq` is still the subject's last.
pub(crate) fn fired_now_headers(
    stored: &HeaderMap,
    seq: u64,
    now: std::time::SystemTime,
) -> HeaderMap {
    let keep = [header::SCHEDULE_TARGET, header::SCHEDULE_TTL, header::TTL];
    let mut headers = header::copy_own(stored, &keep, &[]);
    let at = humantime::format_rfc3339_seconds(now).to_string();
    headers.insert(header::SCHEDULE, format!("@at {at}").as_str());
    headers.insert(
        "Nats-Expected-Last-Subject-Sequence",
        seq.to_string().as_str(),
    );
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_brought_forward_keeps_its_task_and_fires_now() {
        let mut stored = HeaderMap::new();
        stored.insert("Nats-Schedule", "@at 2030-01-01T00:00:00Z");
        stored.insert("Nats-Schedule-Target", "tenant.alice.due.echo");
        stored.insert("Nats-TTL", "never");
        stored.insert("Nats-Rollup", "sub");
        stored.insert("Nats-Sequence", "12");
        stored.insert("Nats-Stream", "SCHEDULES_alice");
        stored.insert("Task-Id", "later");
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let h = fired_now_headers(&stored, 12, at);
        let get = |n: &str| h.get(n).map(|v| v.as_str().to_string());
        assert_eq!(
            get("Nats-Schedule").as_deref(),
            Some("@at 2027-01-15T08:00:00Z")
        );
        assert_eq!(
            get("Nats-Schedule-Target").as_deref(),
            Some("tenant.alice.due.echo")
        );
        assert_eq!(get("Nats-TTL").as_deref(), Some("never"));
        assert_eq!(get("Task-Id").as_deref(), Some("later"));
        assert_eq!(
            get("Nats-Expected-Last-Subject-Sequence").as_deref(),
            Some("12")
        );
        for gone in ["Nats-Sequence", "Nats-Stream", "Nats-Rollup"] {
            assert!(h.get(gone).is_none(), "{gone}");
        }
    }
}
