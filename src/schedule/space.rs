//! A tenant's recurring schedules (pure): what differs from the fleet
//! account's, which [`super::manage`] reads and writes.
//!
//! A tenant publishes `sched.cron.<name>` as anyone does; its import puts
//! it on `tenant.<t>.sched.cron.<name>` in its own stream
//! `SCHEDULES_<t>` (see `fleet::setup::tenant`). Two things are not mapped
//! by the server and are written here in the fleet account's form: the
//! target (`tenant.<t>.due.<kind>`), and what a direct get of the stream
//! answers (subjects and `Nats-Scheduler` under `tenant.<t>.`), which
//! [`local`] turns back into the tenant's form so that the rest of the
//! listing reads it as the fleet's own.
//!
//! A tenant cannot purge (the stream API answers only accounts with
//! JetStream), so it removes a schedule by a rollup onto its subject: an
//! empty message with `Nats-Rollup: sub` replaces the schedule (the server
//! stops it at once, verified on 2.15.2), and its `Nats-TTL` of one second
//! leaves nothing behind.

use async_nats::HeaderMap;

use crate::contract::{self, header};
use crate::direct::Stored;

/// How long the message that removes a tenant's schedule is kept.
pub(super) const REMOVED_TTL: &str = "1s";

/// The headers of the message that removes a schedule by rolling its
/// subject up.
pub(super) fn removal_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("Nats-Rollup", "sub");
    h.insert(header::TTL, REMOVED_TTL);
    h
}

/// `subject` (or a header value naming one) as `tenant` sees it: without
/// `tenant.<t>.`. A value outside the tenant's space is left as it is.
fn strip(tenant: &str, value: &str) -> String {
    match contract::split_tenant(value) {
        (Some(t), rest) if t == tenant => rest.to_string(),
        _ => value.to_string(),
    }
}

/// A message of `tenant`'s schedule stream as the tenant names things:
/// its subject, `Nats-Schedule-Target` and `Nats-Scheduler` without the
/// tenant's prefix.
pub(crate) fn local(tenant: &str, mut stored: Stored) -> Stored {
    stored.subject = strip(tenant, &stored.subject);
    for name in [header::SCHEDULE_TARGET, header::SCHEDULER] {
        if let Some(value) = stored.header(name).map(|v| strip(tenant, v)) {
            stored.headers.insert(name, value.as_str());
        }
    }
    stored
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn a_tenants_stream_reads_as_its_own_names() {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Schedule-Target", "tenant.alice.due.echo");
        headers.insert("Nats-Scheduler", "tenant.alice.sched.cron.tick");
        headers.insert("Nats-Schedule", "@every 2s");
        let stored = Stored {
            subject: "tenant.alice.due.echo".into(),
            seq: 3,
            time: "2026-11-28T00:00:00Z".into(),
            headers,
            payload: Bytes::new(),
        };
        let s = local("alice", stored);
        assert_eq!(s.subject, "due.echo");
        assert_eq!(s.header("Nats-Schedule-Target"), Some("due.echo"));
        assert_eq!(s.header("Nats-Scheduler"), Some("sched.cron.tick"));
        assert_eq!(s.header("Nats-Schedule"), Some("@every 2s"));
        // Another space's names are not made to look like the tenant's.
        assert_eq!(strip("alice", "tenant.bob.due.echo"), "tenant.bob.due.echo");
        assert_eq!(strip("alice", "due.echo"), "due.echo");
    }

    #[test]
    fn a_removal_rolls_the_subject_up_and_goes() {
        let h = removal_headers();
        assert_eq!(h.get("Nats-Rollup").map(|v| v.as_str()), Some("sub"));
        assert_eq!(h.get("Nats-TTL").map(|v| v.as_str()), Some("1s"));
        assert!(h.get("Nats-Schedule").is_none());
    }
}
