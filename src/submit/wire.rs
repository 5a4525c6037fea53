//! The wire of fast batch publishing (ADR-50): the reply subjects that
//! carry the protocol, and what the server's replies on them say.
//!
//! A message is published with a reply subject that carries the protocol:
//! `<inbox>.<batch>.<flow>.fail.<seq>.<op>.$FI` (op 0 starts a batch, 1
//! appends, 3 commits without storing). The server answers with one flow
//! ack per `flow` stored messages (`{"type":"ack","seq":k}`: messages 1..k
//! are stored), instead of a PubAck per task.
//!
//! | reply                                  | what it means                                  |
//! |----------------------------------------|------------------------------------------------|
//! | `{"type":"ack","seq":k,"msgs":f}`      | 1..k stored; the server's flow is now `f`      |
//! | `{"type":"err","seq":k,"error":…}`     | k refused (the batch ends: a PubAck follows)   |
//! | `{"type":"gap",…}`                     | messages lost on the way (the batch ends)      |
//! | PubAck with `count` c                  | batch over: 1..c stored, the rest sent again   |
//! | PubAck without `count`                 | that one message stored: no batching here      |
//! | PubAck error 10205                     | the stream does not take batches               |
//! | any other PubAck error                 | the batch is gone: the unconfirmed sent again  |
//! | status 503 (no responders)             | no stream takes the subject                    |

use crate::contract;
use async_nats::{Message, StatusCode};
use serde::Deserialize;

/// Where one message goes out: its batch, its sequence in it, its op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    /// The batch's number (names it).
    pub(crate) batch: u64,
    /// Its sequence in the batch.
    pub(crate) seq: u64,
    /// 0 start, 1 append, 3 commit without storing.
    pub(crate) op: u8,
}

/// The reply subjects of one sender's batches: `<inbox>.<run>x<batch>.<flow>.fail.<seq>.<op>.$FI`,
/// or `<inbox>.single.<seq>` once messages stand alone.
#[derive(Debug, Clone)]
pub(crate) struct Wire {
    inbox: String,
    run: String,
}

impl Wire {
    /// Replies on `inbox` (a fresh inbox of the client's).
    pub(crate) fn new(inbox: String) -> Self {
        let run = inbox.rsplit('.').next().unwrap_or("run").to_string();
        Wire { inbox, run }
    }

    /// What to subscribe to for the replies.
    pub(crate) fn replies(&self) -> String {
        format!("{}.>", self.inbox)
    }

    /// The reply subject of message `slot`.
    pub(crate) fn reply_subject(&self, slot: Slot, single: bool) -> String {
        use contract::Part::{Number, Text};
        if single {
            contract::concat(&[Text(&self.inbox), Text(".single."), Number(slot.seq)])
        } else {
            contract::concat(&[
                Text(&self.inbox),
                Text("."),
                Text(&self.run),
                Text("x"),
                Number(slot.batch),
                Text("."),
                Number(FLOW),
                Text(".fail."),
                Number(slot.seq),
                Text("."),
                Number(u64::from(slot.op)),
                Text(".$FI"),
            ])
        }
    }

    /// Reads one reply: its batch number (0 for a single message) and what
    /// it says; `None` for anything else.
    pub(crate) fn read(&self, msg: &Message) -> Option<(u64, Reply)> {
        let rest = msg
            .subject
            .strip_prefix(self.inbox.as_str())?
            .strip_prefix('.')?;
        let no_responders = msg.status == Some(StatusCode::NO_RESPONDERS);
        if let Some(seq) = rest.strip_prefix("single.") {
            return Some((0, parse(seq.parse().ok()?, no_responders, &msg.payload)?));
        }
        let seq = subject_seq(rest)?;
        let batch = rest
            .split('.')
            .next()?
            .strip_prefix(self.run.as_str())?
            .strip_prefix('x')?
            .parse()
            .ok()?;
        Some((batch, parse(seq, no_responders, &msg.payload)?))
    }
}

/// The flow asked for: a flow ack every this many messages.
pub(crate) const FLOW: u64 = 256;

/// `err_code` of "this stream does not allow batch publishing".
pub(super) const BATCH_NOT_ALLOWED: u64 = 10205;
/// `err_code` of "batch publish ID unknown": the batch ended or timed out.
pub(super) const BATCH_UNKNOWN: u64 = 10208;
/// `err_code` of "message size exceeds maximum allowed".
pub(crate) const TOO_LARGE: u64 = 10054;

/// One reply from the server, as read from its subject and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// Messages 1..`seq` of the batch are stored.
    Ack { seq: u64, flow: u64 },
    /// Message `seq` was refused.
    Refused {
        seq: u64,
        code: u64,
        description: String,
    },
    /// Messages went missing between client and server.
    Gap,
    /// The batch is over: messages 1..`count` are stored.
    End { count: u64 },
    /// The message this reply is addressed to is stored (a plain PubAck).
    Stored { seq: u64 },
    /// The server refused the batch as a whole (a PubAck error).
    Failed {
        seq: u64,
        code: u64,
        description: String,
    },
    /// No stream takes the subject.
    NoStream,
}

#[derive(Deserialize)]
struct Json {
    #[serde(rename = "type")]
    kind: Option<String>,
    seq: Option<u64>,
    msgs: Option<u64>,
    count: Option<u64>,
    stream: Option<String>,
    error: Option<WireError>,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

/// The batch sequence a reply subject `…<seq>.<op>.$FI` is addressed to.
pub(crate) fn subject_seq(subject: &str) -> Option<u64> {
    let mut tokens = subject.rsplit('.');
    (tokens.next()? == "$FI").then_some(())?;
    let _op = tokens.next()?;
    tokens.next()?.parse().ok()
}

/// Reads one reply addressed to message `seq`; `no_responders` when it is
/// the server's 503 status. `None` for what is none of these.
pub(crate) fn parse(seq: u64, no_responders: bool, payload: &[u8]) -> Option<Reply> {
    if no_responders {
        return Some(Reply::NoStream);
    }
    let wire: Json = serde_json::from_slice(payload).ok()?;
    let error = |e: WireError| (e.err_code, e.description);
    Some(match (wire.kind.as_deref(), wire.error) {
        (Some("ack"), _) => Reply::Ack {
            seq: wire.seq?,
            flow: wire.msgs.unwrap_or(FLOW),
        },
        (Some("err"), Some(e)) => {
            let (code, description) = error(e);
            Reply::Refused {
                seq: wire.seq?,
                code,
                description,
            }
        }
        (Some("gap"), _) => Reply::Gap,
        (None, Some(e)) => {
            let (code, description) = error(e);
            Reply::Failed {
                seq,
                code,
                description,
            }
        }
        (None, None) if wire.stream.is_some() => match wire.count {
            Some(count) => Reply::End { count },
            None => Reply::Stored { seq },
        },
        _ => return None,
    })
}

/// A reply on `subject` as the client hands it over (for tests).
#[cfg(test)]
pub(crate) fn reply_message(subject: &str, payload: &'static str) -> Message {
    Message {
        subject: subject.into(),
        reply: None,
        payload: payload.into(),
        headers: None,
        status: None,
        description: None,
        length: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(json: &str) -> Reply {
        parse(7, false, json.as_bytes()).unwrap()
    }

    #[test]
    fn replies_are_read_as_the_server_writes_them() {
        assert_eq!(
            reply(r#"{"type":"ack","seq":20,"msgs":10}"#),
            Reply::Ack { seq: 20, flow: 10 }
        );
        assert_eq!(
            reply(
                r#"{"type":"err","seq":2,"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 58"}}"#
            ),
            Reply::Refused {
                seq: 2,
                code: 10071,
                description: "wrong last sequence: 58".into()
            }
        );
        assert_eq!(reply(r#"{"type":"gap","last_seq":3,"seq":5}"#), Reply::Gap);
        assert_eq!(
            reply(r#"{"stream":"TASKS","seq":63,"batch":"35dd","count":5}"#),
            Reply::End { count: 5 }
        );
        assert_eq!(
            reply(r#"{"stream":"TASKS","seq":63}"#),
            Reply::Stored { seq: 7 }
        );
        assert_eq!(
            reply(
                r#"{"error":{"code":400,"err_code":10205,"description":"batch publish is disabled"},"stream":"TASKS","seq":0}"#
            ),
            Reply::Failed {
                seq: 7,
                code: 10205,
                description: "batch publish is disabled".into()
            }
        );
        assert_eq!(parse(1, true, b""), Some(Reply::NoStream));
        assert_eq!(parse(1, false, b"not json"), None);
    }

    #[test]
    fn the_sequence_is_read_from_the_reply_subject() {
        assert_eq!(subject_seq("_INBOX.abc.3.256.fail.42.1.$FI"), Some(42));
        assert_eq!(subject_seq("_INBOX.abc.1"), None);
    }

    #[test]
    fn reply_subjects_name_batch_and_message() {
        let wire = Wire::new("_INBOX.run7".into());
        let slot = Slot {
            batch: 3,
            seq: 42,
            op: 1,
        };
        assert_eq!(
            wire.reply_subject(slot, false),
            "_INBOX.run7.run7x3.256.fail.42.1.$FI"
        );
        assert_eq!(wire.reply_subject(slot, true), "_INBOX.run7.single.42");
        assert_eq!(wire.replies(), "_INBOX.run7.>");
        let msg = reply_message;
        let ack = msg(
            "_INBOX.run7.run7x3.256.fail.42.1.$FI",
            r#"{"type":"ack","seq":40,"msgs":256}"#,
        );
        assert_eq!(
            wire.read(&ack),
            Some((3, Reply::Ack { seq: 40, flow: 256 }))
        );
        let single = msg("_INBOX.run7.single.5", r#"{"stream":"TASKS","seq":9}"#);
        assert_eq!(wire.read(&single), Some((0, Reply::Stored { seq: 5 })));
        assert_eq!(wire.read(&msg("_INBOX.other.1", "{}")), None);
    }
}
