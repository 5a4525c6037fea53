//! A task published on a normal subject with `Task-Priority: high` or
//! `low` (`nats pub tasks.echo -H Task-Priority:high`) moves to its band.
//!
//! The server routes by subject, not by header, so such a task is stored in
//! the normal band. The node that takes it publishes a copy to the band's
//! subject (`tasks-high.echo`, in the task's tenant) and acks the original
//! once `TASKS` has stored the copy. The copy carries:
//!
//! - `Nats-Msg-Id: move-<seq>-<stored ns>`, so a second move of the same
//!   task (its ack was lost, it came back) is dropped as a duplicate;
//! - the task's id made explicit (`Task-Id`), since a task without one is
//!   known by its `TASKS` sequence, or by the firing it came from
//!   (`Nats-Stream-Source`, which a client may not publish);
//! - every other header, except the server's (`Nats-…`), which it refuses
//!   from a client (`Nats-Stream-Source`, `Nats-Scheduler`) or which held
//!   only for the first publish (`Nats-Expected-…`); `Nats-TTL` stays.
//!
//! If the copy cannot be stored (no right to publish there, the stream
//! full, no answer within 2 s) the task runs in the normal band, and moves
//! stop for 30 s: a priority not honoured is better than a task stuck.
//! A site's task taken from the centre (`--domain`) is not moved: the
//! centre cannot publish into the site's stream.

use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind};
use async_nats::HeaderMap;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::contract::{self, header};
use crate::envelope::route;
use crate::priority::Priority;

/// How long a move may take before the task runs where it is.
const MOVE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long moves stay off after one failed.
const MOVES_OFF: Duration = Duration::from_secs(30);

/// Whether moves are on (they go off for a while after one fails).
#[derive(Debug, Default)]
pub(super) struct Mover {
    off_until: Mutex<Option<Instant>>,
}

impl Mover {
    fn on(&self, now: Instant) -> bool {
        let off = self.off_until.lock().expect("mover lock");
        off.is_none_or(|until| now >= until)
    }

    fn failed(&self, now: Instant) {
        *self.off_until.lock().expect("mover lock") = Some(now + MOVES_OFF);
    }
}

/// The band a delivered task asks for, when it is not the band of the
/// subject it was stored under: only a normal-band task with
/// `Task-Priority: high|low` moves. A value that is not a band stays (the
/// envelope refuses it, 400).
pub(crate) fn wanted(subject: &str, headers: Option<&HeaderMap>) -> Option<Priority> {
    let asked = header::get(headers?, header::TASK_PRIORITY)?.parse().ok()?;
    let route = route(subject);
    (route.band == Priority::Normal && !route.kind.is_empty() && asked != Priority::Normal)
        .then_some(asked)
}

/// The copy of the task stored at `seq` (at `stored_ns`) under `subject`,
/// for `band`: its subject and headers.
pub(crate) fn copy(
    subject: &str,
    headers: &HeaderMap,
    band: Priority,
    (seq, stored_ns): (u64, i128),
) -> (String, HeaderMap) {
    let route = route(subject);
    let to = contract::in_tenant(route.tenant, &band.task_subject(route.kind));
    let mut out = header::copy_own(headers, &[header::TTL], &[]);
    if headers.get(header::TASK_ID).is_none() {
        let id = crate::schedule::occurrence::task_id(headers).unwrap_or_else(|| seq.to_string());
        out.insert(header::TASK_ID, id);
    }
    out.insert(
        async_nats::header::NATS_MESSAGE_ID,
        format!("move-{seq}-{stored_ns}"),
    );
    (to, out)
}

/// Moves `msg` to `band`; gives it back when it could not (it then runs
/// where it is).
pub(super) async fn move_to(
    js: &jetstream::Context,
    mover: &Mover,
    msg: jetstream::Message,
    band: Priority,
) -> Option<jetstream::Message> {
    let now = Instant::now();
    if !mover.on(now) {
        return Some(msg);
    }
    let Ok(info) = msg.info() else {
        return Some(msg);
    };
    let at = (info.stream_sequence, info.published.unix_timestamp_nanos());
    let empty = HeaderMap::new();
    let (to, headers) = copy(
        &msg.subject,
        msg.headers.as_ref().unwrap_or(&empty),
        band,
        at,
    );
    let publish = async {
        js.publish_with_headers(to.clone(), headers, msg.payload.clone())
            .await?
            .await
    };
    let stored = match tokio::time::timeout(MOVE_TIMEOUT, publish).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) if err.kind() == PublishErrorKind::StreamNotFound => {
            Err(format!("no stream takes {to}"))
        }
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {MOVE_TIMEOUT:?}")),
    };
    match stored {
        Ok(()) => {
            debug!(from = %msg.subject, %to, "moved to its band");
            // A lost ack brings the original back; its move is then a
            // duplicate the stream drops, and this ack is tried again.
            if let Err(err) = msg.double_ack().await {
                warn!(%err, subject = %msg.subject, "moved a task to its band but could not ack the original; it comes back after ack_wait and is acked then");
            }
            None
        }
        Err(err) => {
            mover.failed(now);
            warn!(%err, %to, "could not move a task to its priority band (Task-Priority); it runs in the normal band, and moves stop for 30s");
            Some(msg)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, *v);
        }
        h
    }

    #[test]
    fn only_a_normal_task_asking_for_another_band_moves() {
        let high = headers(&[("Task-Priority", "high")]);
        assert_eq!(wanted("tasks.echo", Some(&high)), Some(Priority::High));
        let low = headers(&[("Task-Priority", "low")]);
        assert_eq!(
            wanted("tenant.alice.tasks.a.b", Some(&low)),
            Some(Priority::Low)
        );
        assert_eq!(wanted("tasks-high.echo", Some(&low)), None);
        assert_eq!(wanted("tasks-low.echo", Some(&high)), None);
        let normal = headers(&[("Task-Priority", "normal")]);
        assert_eq!(wanted("tasks.echo", Some(&normal)), None);
        let odd = headers(&[("Task-Priority", "asap")]);
        assert_eq!(wanted("tasks.echo", Some(&odd)), None);
        assert_eq!(wanted("tasks.echo", None), None);
        assert_eq!(wanted("tasks.", Some(&high)), None);
    }

    #[test]
    fn the_copy_keeps_the_task_and_drops_what_the_server_owns() {
        let original = headers(&[
            ("Task-Priority", "high"),
            ("Task-Timeout", "5s"),
            ("Reply-To", "_INBOX.x"),
            ("Nats-Msg-Id", "mine"),
            ("Nats-Expected-Last-Subject-Sequence", "0"),
            ("Nats-TTL", "1h"),
        ]);
        let (to, h) = copy("tenant.bob.tasks.echo", &original, Priority::High, (42, 7));
        assert_eq!(to, "tenant.bob.tasks-high.echo");
        assert_eq!(h.get("Task-Id").map(|v| v.as_str()), Some("42"));
        assert_eq!(h.get("Nats-Msg-Id").map(|v| v.as_str()), Some("move-42-7"));
        assert_eq!(h.get("Task-Timeout").map(|v| v.as_str()), Some("5s"));
        assert_eq!(h.get("Reply-To").map(|v| v.as_str()), Some("_INBOX.x"));
        assert_eq!(h.get("Nats-TTL").map(|v| v.as_str()), Some("1h"));
        assert!(h.get("Nats-Expected-Last-Subject-Sequence").is_none());
        assert_eq!(h.get("Task-Priority").map(|v| v.as_str()), Some("high"));
    }

    #[test]
    fn a_task_id_is_kept_and_an_occurrence_keeps_its_own() {
        let named = headers(&[("Task-Id", "t1"), ("Task-Priority", "low")]);
        let (to, h) = copy("tasks.a.b", &named, Priority::Low, (3, 1));
        assert_eq!(to, "tasks-low.a.b");
        assert_eq!(h.get("Task-Id").map(|v| v.as_str()), Some("t1"));
        let fired = headers(&[
            ("Task-Schedule", "nightly"),
            ("Task-Priority", "high"),
            (
                "Nats-Stream-Source",
                "SCHEDULES 17 due.> tasks.> due.echo abc",
            ),
        ]);
        let (_, h) = copy("tasks.echo", &fired, Priority::High, (99, 1));
        assert_eq!(
            h.get("Task-Id").map(|v| v.as_str()),
            crate::schedule::occurrence::task_id(&fired).as_deref()
        );
        assert!(h.get("Nats-Stream-Source").is_none());
        assert_ne!(h.get("Task-Id").map(|v| v.as_str()), Some("99"));
    }
}
