//! Direct gets (ADR-31) in their JSON form, `$JS.API.DIRECT.GET.<stream>`
//! with a request body: every message on the subjects a filter covers from
//! a sequence on (`next_by_subj` with a batch, in pages), the last message
//! among the subjects a wildcard covers (`last_by_subj`; verified on
//! nats-server 2.15.2), the last message on one subject up to a sequence.
//!
//! A batch is answered with one message per stored message, then a status
//! 204 "EOB" whose `Nats-Num-Pending` says how many are left; the next page
//! starts at the sequence after the last message. (`multi_last`, the last
//! message of each subject, is refused with 413 "Too Many Results" once a
//! filter covers more than 1024 subjects on 2.15.2, so it is not used: the
//! subjects read here hold one message each.) The JSON form is the fleet
//! account's (tenants are given the subject form only, see
//! `submit::kept`).

use std::time::Duration;

use async_nats::{Client, HeaderMap, Message, StatusCode};
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;

use crate::error::{Error, ErrorKind, ResultExt};

/// Messages asked for per page.
const PAGE: usize = 256;

/// How long one reply of a direct get may take.
const REPLY_WITHIN: Duration = Duration::from_secs(5);

/// A direct get's body.
#[derive(Debug, Default, Serialize)]
struct Request<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    next_by_subj: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_by_subj: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    multi_last: Option<[&'a str; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    up_to_seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    batch: Option<usize>,
}

/// A message as a stream keeps it.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    /// Its subject.
    pub(crate) subject: String,
    /// Its sequence in the stream.
    pub(crate) seq: u64,
    /// When the stream stored it (RFC 3339, as the server writes it).
    pub(crate) time: String,
    /// Its headers, the server's `Nats-*` ones of the direct get included.
    pub(crate) headers: HeaderMap,
    /// Its payload.
    pub(crate) payload: Bytes,
}

impl Stored {
    /// The value of header `name`, if any.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.as_str())
    }
}

/// What one reply to a direct get says.
#[derive(Debug)]
enum Reply {
    Message(Stored),
    /// The end of a batch: how many messages are left.
    End {
        pending: u64,
    },
    NotFound,
    NoStream,
    Refused(String),
}

fn read(msg: Message) -> Reply {
    let get = |name: &str| {
        msg.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .and_then(|v| v.as_str().trim().parse::<u64>().ok())
    };
    match msg.status {
        None | Some(StatusCode::OK) => {}
        Some(StatusCode::NO_RESPONDERS) => return Reply::NoStream,
        Some(StatusCode::NOT_FOUND) => return Reply::NotFound,
        Some(code) if code.as_u16() == 204 => {
            return Reply::End {
                pending: get("Nats-Num-Pending").unwrap_or(0),
            }
        }
        Some(code) => {
            return Reply::Refused(format!(
                "{code} {}",
                msg.description.as_deref().unwrap_or_default()
            ))
        }
    }
    let headers = msg.headers.clone().unwrap_or_default();
    let text = |name: &str| {
        headers
            .get(name)
            .map(|v| v.as_str().to_string())
            .unwrap_or_default()
    };
    match get("Nats-Sequence") {
        Some(seq) => Reply::Message(Stored {
            subject: text("Nats-Subject"),
            seq,
            time: text("Nats-Time-Stamp"),
            payload: msg.payload,
            headers,
        }),
        None => Reply::Refused("a reply without Nats-Sequence".into()),
    }
}

/// Sends one request and reads its replies: the messages, then how many
/// are left (a single get has no end: 0 left).
async fn ask(
    client: &Client,
    stream: &str,
    request: &Request<'_>,
) -> Result<(Vec<Stored>, u64), Error> {
    let subject = format!("$JS.API.DIRECT.GET.{stream}");
    let doing = || format!("reading {stream} (direct get)");
    let body = serde_json::to_vec(request).expect("a direct get serializes");
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .or_fail(ErrorKind::Connection, doing)?;
    client
        .publish_with_reply(subject, inbox, body.into())
        .await
        .or_fail(ErrorKind::Connection, doing)?;
    let mut found = Vec::new();
    loop {
        let msg = match tokio::time::timeout(REPLY_WITHIN, replies.next()).await {
            Ok(Some(msg)) => msg,
            Ok(None) => {
                return Err(Error::new(
                    ErrorKind::Connection,
                    "connection to NATS closed",
                ))
            }
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::Connection,
                    format!("{}: no answer within {REPLY_WITHIN:?}", doing()),
                ))
            }
        };
        match read(msg) {
            Reply::Message(stored) => {
                found.push(stored);
                if request.batch.is_none() {
                    return Ok((found, 0));
                }
            }
            Reply::End { pending } => return Ok((found, pending)),
            Reply::NotFound => return Ok((found, 0)),
            Reply::NoStream => {
                return Err(Error::new(
                    ErrorKind::NotSetUp,
                    format!("no stream {stream} answers: run `fleet setup`"),
                ))
            }
            Reply::Refused(why) => {
                return Err(Error::new(ErrorKind::Setup, format!("{}: {why}", doing())))
            }
        }
    }
}

/// Up to `limit` messages on `subject` (a wildcard works) from sequence
/// `from` on, oldest first.
///
/// # Errors
/// [`ErrorKind::NotSetUp`] when the stream does not answer;
/// [`ErrorKind::Connection`] when a reply does not come.
pub(crate) async fn from_seq(
    client: &Client,
    stream: &str,
    subject: &str,
    from: u64,
    limit: usize,
) -> Result<Vec<Stored>, Error> {
    let mut all: Vec<Stored> = Vec::new();
    let mut seq = from.max(1);
    while all.len() < limit {
        let request = Request {
            next_by_subj: Some(subject),
            seq: Some(seq),
            batch: Some(PAGE.min(limit - all.len())),
            ..Default::default()
        };
        let (page, pending) = ask(client, stream, &request).await?;
        let last = page.iter().map(|m| m.seq).max();
        all.extend(page);
        match last {
            Some(last) if pending > 0 => seq = last + 1,
            _ => break,
        }
    }
    Ok(all)
}

/// The last message among the subjects `subject` covers, if any.
///
/// # Errors
/// As [`from_seq`].
pub(crate) async fn last(
    client: &Client,
    stream: &str,
    subject: &str,
) -> Result<Option<Stored>, Error> {
    let request = Request {
        last_by_subj: Some(subject),
        ..Default::default()
    };
    Ok(ask(client, stream, &request).await?.0.pop())
}

/// The last message on the literal `subject` at or before sequence
/// `up_to` (`multi_last` with `up_to_seq`: one subject, so never over the
/// 1024-subject bound; verified on nats-server 2.15.2), if any.
///
/// # Errors
/// As [`from_seq`].
pub(crate) async fn last_up_to(
    client: &Client,
    stream: &str,
    subject: &str,
    up_to: u64,
) -> Result<Option<Stored>, Error> {
    let request = Request {
        multi_last: Some([subject]),
        up_to_seq: Some(up_to),
        ..Default::default()
    };
    Ok(ask(client, stream, &request).await?.0.pop())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: Option<u16>, headers: &[(&str, &str)], payload: &'static str) -> Message {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, *v);
        }
        Message {
            subject: "_INBOX.x".into(),
            reply: None,
            payload: payload.into(),
            headers: Some(h),
            status: status.map(|s| StatusCode::from_u16(s).unwrap()),
            description: None,
            length: 0,
        }
    }

    #[test]
    fn requests_carry_only_what_is_asked() {
        let page = Request {
            next_by_subj: Some("results.b.>"),
            seq: Some(8),
            batch: Some(256),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&page).unwrap(),
            r#"{"next_by_subj":"results.b.>","seq":8,"batch":256}"#
        );
        let one = Request {
            last_by_subj: Some("results.sched.tick.>"),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&one).unwrap(),
            r#"{"last_by_subj":"results.sched.tick.>"}"#
        );
    }

    #[test]
    fn replies_are_read_as_the_server_writes_them() {
        let msg = reply(
            None,
            &[
                ("Task-Id", "b.1"),
                ("Nats-Subject", "results.b.1"),
                ("Nats-Sequence", "5"),
                ("Nats-Time-Stamp", "2026-11-28T08:55:27.213704736Z"),
            ],
            "r1",
        );
        let Reply::Message(stored) = read(msg) else {
            panic!("a message")
        };
        assert_eq!((stored.subject.as_str(), stored.seq), ("results.b.1", 5));
        assert_eq!(stored.header("Task-Id"), Some("b.1"));
        assert_eq!(stored.payload, "r1");
        let end = reply(Some(204), &[("Nats-Num-Pending", "4")], "");
        assert!(matches!(read(end), Reply::End { pending: 4 }));
        assert!(matches!(read(reply(Some(404), &[], "")), Reply::NotFound));
        assert!(matches!(read(reply(Some(503), &[], "")), Reply::NoStream));
        assert!(matches!(read(reply(Some(408), &[], "")), Reply::Refused(_)));
        assert!(matches!(read(reply(None, &[], "x")), Reply::Refused(_)));
    }
}
