//! Unique tasks: the key `<kind>.<key>` holds the id of the one task that
//! may be queued or running with it. The fleet account's keys are in the
//! `fleet-unique` bucket, a tenant's in its own schedule stream
//! (`sched.unique.<kind>.<key>` in `SCHEDULES_<tenant>`): one protocol,
//! two [`Place`]s.
//!
//! | step                         | write to the key (its subject at the [`Place`])                   | when                        |
//! |------------------------------|-------------------------------------------------------------------|-----------------------------|
//! | take (submitter)             | the task id, `Nats-TTL: 24h`, expected last subject seq 0 (or the marker's) | before publishing the task |
//! | taken by another             | nothing: the holder's id is read and reported                     | the value is another id     |
//! | publish failed (submitter)   | purge marker, expected seq = ours                                 | the task was never stored   |
//! | task ended for good (node)   | purge marker, or the id again with `Nats-TTL: <unique-for>`       | the value is still its id   |
//!
//! Every write is a compare-and-set on the subject's last sequence
//! (`Nats-Expected-Last-Subject-Sequence`): of two submitters racing for a
//! key exactly one wins, and a node never frees a key another task holds.
//! The writes are raw JetStream publishes rather than async-nats's
//! key-value calls: `create_with_ttl` over a deleted or expired key drops
//! the TTL (async-nats 0.51), a node may not read the bucket's stream
//! info, and a tenant's keys are no bucket. Reads are direct gets of the
//! one subject.
//!
//! The `Nats-TTL` of a taken key ([`SAFETY_TTL`]) frees it even when nobody
//! else does: a submitter that died between taking and publishing, a task
//! removed from the queue by its own TTL or a purge.

use std::time::Duration;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::Context;
use async_nats::{HeaderMap, Message, StatusCode};
use bytes::Bytes;

use crate::contract::header;
use crate::control::unique_name;
use crate::error::{Error, ErrorKind};

mod place;
pub use place::Place;

/// How long a key stays taken when nobody frees it: as long as `RESULTS`
/// keeps a result. A task queued or running longer loses its key.
pub const SAFETY_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// How long the marker a freed key leaves behind lives.
pub const MARKER_TTL: Duration = Duration::from_secs(60);
/// Compare-and-set rounds before a key counts as too contended.
const ROUNDS: usize = 8;

/// The KV operation header of a delete or purge marker.
const KV_OPERATION: &str = "KV-Operation";
/// Set by the server on the marker it leaves when a key expires.
const MARKER_REASON: &str = "Nats-Marker-Reason";
/// The sequence of a message read with a direct get.
const SEQUENCE: &str = "Nats-Sequence";

/// What taking a key came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is this task's now (or was already: a resumed batch).
    Taken {
        /// The bucket's sequence of the write, to free it by.
        revision: u64,
    },
    /// Another task holds the key.
    Held {
        /// The id of the task holding it.
        holder: String,
    },
}

/// What freeing a key came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    /// Freed: anyone may take it.
    Freed,
    /// Kept taken, by this task's id, for the given time.
    HeldFor(Duration),
    /// Not this task's (any more): left as it is.
    NotOurs,
}

/// The last write of a key, as a direct get read it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Last {
    seq: u64,
    /// The task id held, or `None` for a marker (deleted, purged, expired).
    holder: Option<String>,
}

/// What to do after a take was refused, given what the key holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// Write again, expecting this last sequence.
    Write { expect: u64 },
    /// The key is this task's already.
    Ours { revision: u64 },
    /// Another task holds it.
    Held(String),
}

fn next_step(last: Option<&Last>, task_id: &str) -> Step {
    match last {
        None => Step::Write { expect: 0 },
        Some(Last { seq, holder: None }) => Step::Write { expect: *seq },
        Some(Last {
            seq,
            holder: Some(id),
        }) if id == task_id => Step::Ours { revision: *seq },
        Some(Last {
            holder: Some(id), ..
        }) => Step::Held(id.clone()),
    }
}

/// Reads a direct get's answer: `None` for "no message".
fn read_last(msg: &Message) -> Result<Option<Last>, String> {
    match msg.status {
        None | Some(StatusCode::OK) => {}
        Some(StatusCode::NOT_FOUND) => return Ok(None),
        Some(status) => {
            return Err(format!(
                "direct get answered {status}: {}",
                msg.description.as_deref().unwrap_or("")
            ))
        }
    }
    let headers = msg.headers.as_ref();
    let get = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
    let seq = get(SEQUENCE)
        .and_then(|s| s.trim().parse().ok())
        .ok_or("a direct get without Nats-Sequence")?;
    let marker = get(MARKER_REASON).is_some()
        || matches!(get(KV_OPERATION), Some(op) if op.eq_ignore_ascii_case("DEL") || op.eq_ignore_ascii_case("PURGE"));
    let holder = (!marker).then(|| String::from_utf8_lossy(&msg.payload).into_owned());
    Ok(Some(Last { seq, holder }))
}

async fn last(js: &Context, place: &Place, name: &str) -> Result<Option<Last>, Error> {
    let (subject, body) = place.read_request(name);
    let msg = js.client().request(subject, body).await.map_err(|e| {
        Error::with_source(
            ErrorKind::Connection,
            format!("reading unique key {name}"),
            e,
        )
    })?;
    read_last(&msg).map_err(|why| {
        Error::new(
            ErrorKind::Connection,
            format!("reading unique key {name}: {why}"),
        )
    })
}

async fn write(
    js: &Context,
    place: &Place,
    name: &str,
    publish: PublishMessage,
) -> Result<Option<u64>, PublishError> {
    let ack = js
        .send_publish(place.publish_subject(name), publish)
        .await?
        .await;
    match ack {
        Ok(ack) => Ok(Some(ack.sequence)),
        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(None),
        Err(e) => Err(e),
    }
}

fn write_error(place: &Place, name: &str, err: PublishError) -> Error {
    let kind = match err.kind() {
        PublishErrorKind::StreamNotFound => ErrorKind::NotSetUp,
        _ => ErrorKind::Connection,
    };
    let hint = match (kind, err.kind()) {
        (ErrorKind::NotSetUp, _) => format!(" ({})", place.set_up_by()),
        // What a tenant's connection that did not say so meets: its
        // server drops the publish to the fleet's bucket.
        (_, PublishErrorKind::TimedOut) if *place == Place::fleet() => {
            " (on a tenant's connection, name the tenant: --tenant)".to_string()
        }
        _ => String::new(),
    };
    Error::with_source(kind, format!("writing unique key {name}{hint}"), err)
}

/// Takes key `key` of `kind` at `place` for task `task_id`, for at most
/// `ttl`.
///
/// # Errors
/// [`ErrorKind::Usage`] for a kind or key that cannot name a key;
/// [`ErrorKind::NotSetUp`] without the bucket (the tenant's stream);
/// [`ErrorKind::Connection`] when a write or read fails, or the key stays
/// contended.
pub async fn claim(
    js: &Context,
    place: &Place,
    kind: &str,
    key: &str,
    task_id: &str,
    ttl: Duration,
) -> Result<Claim, Error> {
    let name = unique_name(kind, key).map_err(|why| Error::new(ErrorKind::Usage, why))?;
    let mut expect = 0;
    for _ in 0..ROUNDS {
        let publish = PublishMessage::build()
            .payload(Bytes::from(task_id.to_string()))
            .ttl(ttl)
            .expected_last_subject_sequence(expect);
        if let Some(revision) = write(js, place, &name, publish)
            .await
            .map_err(|e| write_error(place, &name, e))?
        {
            return Ok(Claim::Taken { revision });
        }
        match next_step(last(js, place, &name).await?.as_ref(), task_id) {
            Step::Write { expect: next } => expect = next,
            Step::Ours { revision } => return Ok(Claim::Taken { revision }),
            Step::Held(holder) => return Ok(Claim::Held { holder }),
        }
    }
    Err(Error::new(
        ErrorKind::Connection,
        format!("unique key {name}: still contended after {ROUNDS} tries"),
    ))
}

/// Frees key `key` of `kind` at `place` if task `task_id` still holds it:
/// at once, or after `hold_for` (the key is written again with that TTL).
///
/// # Errors
/// As [`claim`].
pub async fn release(
    js: &Context,
    place: &Place,
    kind: &str,
    key: &str,
    task_id: &str,
    hold_for: Option<Duration>,
) -> Result<Released, Error> {
    let name = unique_name(kind, key).map_err(|why| Error::new(ErrorKind::Usage, why))?;
    let revision = match next_step(last(js, place, &name).await?.as_ref(), task_id) {
        Step::Ours { revision } => revision,
        Step::Write { .. } | Step::Held(_) => return Ok(Released::NotOurs),
    };
    let publish = match hold_for {
        Some(ttl) => PublishMessage::build()
            .payload(Bytes::from(task_id.to_string()))
            .ttl(ttl),
        None => PublishMessage::build().headers(purge_headers()),
    }
    .expected_last_subject_sequence(revision);
    match write(js, place, &name, publish)
        .await
        .map_err(|e| write_error(place, &name, e))?
    {
        None => Ok(Released::NotOurs),
        Some(_) => Ok(hold_for.map_or(Released::Freed, Released::HeldFor)),
    }
}

/// Frees a key at `place` taken at `revision` whose task was never stored.
///
/// # Errors
/// As [`claim`].
pub async fn undo(
    js: &Context,
    place: &Place,
    kind: &str,
    key: &str,
    revision: u64,
) -> Result<(), Error> {
    let name = unique_name(kind, key).map_err(|why| Error::new(ErrorKind::Usage, why))?;
    let publish = PublishMessage::build()
        .headers(purge_headers())
        .expected_last_subject_sequence(revision);
    write(js, place, &name, publish)
        .await
        .map_err(|e| write_error(place, &name, e))?;
    Ok(())
}

/// A purge marker (as `nats kv purge` writes), gone after [`MARKER_TTL`].
fn purge_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(KV_OPERATION, "PURGE");
    headers.insert("Nats-Rollup", "sub");
    headers.insert(header::TTL, MARKER_TTL.as_secs().to_string().as_str());
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(status: Option<StatusCode>, headers: &[(&str, &str)], payload: &'static str) -> Message {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, *v);
        }
        Message {
            subject: "x".into(),
            reply: None,
            payload: payload.into(),
            headers: Some(h),
            status,
            description: None,
            length: 0,
        }
    }

    #[test]
    fn a_refused_take_reads_what_the_key_holds() {
        assert_eq!(next_step(None, "b.1"), Step::Write { expect: 0 });
        let marker = Last {
            seq: 7,
            holder: None,
        };
        assert_eq!(next_step(Some(&marker), "b.1"), Step::Write { expect: 7 });
        let ours = Last {
            seq: 8,
            holder: Some("b.1".into()),
        };
        assert_eq!(next_step(Some(&ours), "b.1"), Step::Ours { revision: 8 });
        assert_eq!(next_step(Some(&ours), "c.1"), Step::Held("b.1".into()));
    }

    #[test]
    fn markers_are_not_holders() {
        let value = msg(None, &[("Nats-Sequence", "5")], "b.1");
        assert_eq!(
            read_last(&value),
            Ok(Some(Last {
                seq: 5,
                holder: Some("b.1".into())
            }))
        );
        for marker in [
            [("Nats-Sequence", "6"), ("KV-Operation", "PURGE")],
            [("Nats-Sequence", "6"), ("KV-Operation", "DEL")],
            [("Nats-Sequence", "6"), ("Nats-Marker-Reason", "MaxAge")],
        ] {
            assert_eq!(
                read_last(&msg(None, &marker, "")),
                Ok(Some(Last {
                    seq: 6,
                    holder: None
                }))
            );
        }
        assert_eq!(
            read_last(&msg(Some(StatusCode::NOT_FOUND), &[], "")),
            Ok(None)
        );
        assert!(read_last(&msg(Some(StatusCode::TIMEOUT), &[], "")).is_err());
        assert!(read_last(&msg(None, &[], "b.1")).is_err());
    }

    #[test]
    fn a_failed_write_says_what_to_do_where_the_key_is() {
        let err = |place: &Place, kind| write_error(place, "echo.k", PublishError::new(kind));
        let missing = err(&Place::tenant("alice"), PublishErrorKind::StreamNotFound);
        assert_eq!(missing.kind(), ErrorKind::NotSetUp);
        assert!(
            missing.to_string().contains("fleet setup --tenant alice"),
            "{missing}"
        );
        let missing = err(&Place::fleet(), PublishErrorKind::StreamNotFound);
        assert!(
            missing.to_string().contains("run `fleet setup`"),
            "{missing}"
        );
        // A tenant's connection that did not name its tenant: the server
        // drops its publish to the fleet's bucket.
        let dropped = err(&Place::fleet(), PublishErrorKind::TimedOut);
        assert_eq!(dropped.kind(), ErrorKind::Connection);
        assert!(dropped.to_string().contains("--tenant"), "{dropped}");
        let slow = err(&Place::tenant("alice"), PublishErrorKind::TimedOut);
        assert!(!slow.to_string().contains("--tenant"), "{slow}");
    }

    #[test]
    fn a_freed_key_leaves_a_short_lived_purge_marker() {
        let h = purge_headers();
        assert_eq!(h.get("KV-Operation").map(|v| v.as_str()), Some("PURGE"));
        assert_eq!(h.get("Nats-TTL").map(|v| v.as_str()), Some("60"));
    }
}
