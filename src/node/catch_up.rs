//! When a schedule's run was due, for its catch-up window (`--catch-up`).
//!
//! A fired run is stored when the server fires it, which after the server
//! was down is at startup: the one catch-up firing of the runs it missed.
//! Nothing on that run says when they were due, but the schedule's
//! previous firing does: its `Nats-Schedule-Next` is the time of the next
//! run, the first one missed. So for a run that carries a window, the node
//! reads the previous firing of the same schedule from `SCHEDULES` (the
//! last `due.<kind>` message at or before the one this run came from, and
//! before that while it is another schedule's; a few direct gets, only for
//! these runs) and counts the window from that time.
//!
//! Not found (the first firing, the copies aged out, SCHEDULES not
//! readable): `None`, and the window counts from the stored time.

use std::time::SystemTime;

use async_nats::{Client, HeaderMap};
use tracing::warn;

use crate::contract::{self, header};
use crate::direct;
use crate::schedule::occurrence;

/// Other firings of the kind (delayed tasks, other schedules) looked past
/// at most, before giving up.
const LOOK_BACK: usize = 16;

/// When the run `headers` describe was due, if it is a schedule's run and
/// its previous firing is found.
pub(super) async fn due(client: &Client, headers: &HeaderMap, kind: &str) -> Option<SystemTime> {
    let scheduler = headers.get(header::SCHEDULER)?.as_str();
    let fired_at = occurrence::source_seq(headers.get(header::STREAM_SOURCE)?.as_str())?;
    let subject = contract::due_subject(kind);
    let mut up_to = fired_at.checked_sub(1)?;
    for _ in 0..LOOK_BACK {
        let stored = match direct::last_up_to(client, contract::SCHEDULES_STREAM, &subject, up_to)
            .await
        {
            Ok(Some(stored)) => stored,
            Ok(None) => return None,
            Err(err) => {
                warn!(%err, "cannot read the previous firing; the catch-up window counts from the stored time");
                return None;
            }
        };
        if stored.header(header::SCHEDULER) == Some(scheduler) {
            let next = stored.header(header::SCHEDULE_NEXT)?;
            return humantime::parse_rfc3339(next.trim()).ok();
        }
        up_to = stored.seq.checked_sub(1)?;
    }
    None
}
