//! Header names, on tasks, results and dead letters.

/// On tasks: the subject for the result; when absent, `results.<task-id>`.
pub const REPLY_TO: &str = "Reply-To";
/// On tasks and results: the submitter's own id for a task; when absent,
/// the task's `TASKS` stream sequence.
pub const TASK_ID: &str = "Task-Id";
/// On tasks: how long one attempt may run, e.g. `30s` or `250ms`.
pub const TASK_TIMEOUT: &str = "Task-Timeout";
/// On results and dead letters: the node that ran the task.
pub const TASK_NODE: &str = "Task-Node";
/// On results and dead letters: which delivery produced it (1 for the first).
pub const TASK_ATTEMPT: &str = "Task-Attempt";
/// On results: when the node started the attempt (RFC 3339, UTC).
pub const TASK_STARTED: &str = "Task-Started";
/// On results: when the attempt's result was written (RFC 3339, UTC).
pub const TASK_FINISHED: &str = "Task-Finished";
/// On dead letters: the task's kind.
pub const TASK_KIND: &str = "Task-Kind";
/// On dead letters: the `TASKS` stream sequence the task had.
pub const TASK_SEQ: &str = "Task-Seq";
/// On tasks: an absolute deadline (RFC 3339); the task is not run after it.
pub const TASK_DEADLINE: &str = "Task-Deadline";
/// On tasks: how long the kept result lives (`1h`, whole seconds at
/// least); it becomes the result's `Nats-TTL`.
pub const RESULT_TTL: &str = "Result-TTL";
/// On tasks: the priority band (`high`, `normal`, `low`). The subject
/// decides the band (`tasks-high.<kind>`); a task on a normal subject
/// asking for another band is moved there by the node that takes it.
pub const TASK_PRIORITY: &str = "Task-Priority";
/// On tasks: a key no other queued or running task of the kind holds.
pub const TASK_UNIQUE: &str = "Task-Unique";
/// On tasks: how long the unique key stays taken after the task ends.
pub const TASK_UNIQUE_FOR: &str = "Task-Unique-For";
/// On recurring schedules and the tasks they fire (`--catch-up`): a
/// fired task not started within this long of entering `TASKS` is not
/// run (`408 expired`), as if it carried a deadline that far out.
pub const TASK_CATCH_UP: &str = "Task-Catch-Up";
/// On tasks: the key (a customer, a tenant, a domain) per-key limits
/// count the task under (`fleet limit set --per-key-concurrency`).
pub const TASK_KEY: &str = "Task-Key";
/// On recurring schedules and the tasks they fire: the schedule's name.
pub const TASK_SCHEDULE: &str = "Task-Schedule";
/// Set by the server on a task a schedule fired: the schedule's subject.
pub const SCHEDULER: &str = "Nats-Scheduler";
/// On a schedule: `@at <RFC 3339>`, `@every <duration>` or a cron line.
pub const SCHEDULE: &str = "Nats-Schedule";
/// On a schedule: the subject it fires into (`due.<kind>`).
pub const SCHEDULE_TARGET: &str = "Nats-Schedule-Target";
/// On a cron schedule: an IANA time zone (`Europe/Paris`).
pub const SCHEDULE_TIME_ZONE: &str = "Nats-Schedule-Time-Zone";
/// On a fired task: when its schedule fires next (or `purge`).
pub const SCHEDULE_NEXT: &str = "Nats-Schedule-Next";
/// On a schedule: the `Nats-TTL` each task it fires carries.
pub const SCHEDULE_TTL: &str = "Nats-Schedule-TTL";
/// Set by the server on a sourced message: `<stream> <seq> …`, where it
/// came from (a fired task: `SCHEDULES <seq of its due.<kind> copy> …`).
pub const STREAM_SOURCE: &str = "Nats-Stream-Source";
/// Per-message time to live (ADR-43).
pub const TTL: &str = "Nats-TTL";
/// Rolls a subject (`sub`) or the stream (`all`) up to this message.
pub const ROLLUP: &str = "Nats-Rollup";
/// On dead letters: the payload was cut to fit the server's
/// `max_payload`; the value is the original size in bytes.
pub const TASK_TRUNCATED: &str = "Task-Truncated";
/// NATS micro convention: the error text of a failed task.
pub const SERVICE_ERROR: &str = "Nats-Service-Error";
/// NATS micro convention: the status code of a failed task.
pub const SERVICE_ERROR_CODE: &str = "Nats-Service-Error-Code";
/// JetStream de-duplication id.
pub const MSG_ID: &str = "Nats-Msg-Id";
/// On the status that ends a pull request: how many of the messages it
/// asked for were not delivered.
pub const PENDING_MESSAGES: &str = "Nats-Pending-Messages";
/// Headers whose name starts with this are JetStream's own: never copied
/// from a task into a dead letter, a replay or a result.
pub const NATS_PREFIX: &str = "nats-";

/// Whether `name` is one of JetStream's own headers ([`NATS_PREFIX`],
/// any case), checked without allocating.
pub fn is_server(name: &str) -> bool {
    name.get(..NATS_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(NATS_PREFIX))
}

/// A copy of `from`'s headers without JetStream's own (but those named
/// in `keep`) and without those named in `drop` (names in any case).
pub fn copy_own(
    from: &async_nats::HeaderMap,
    keep: &[&str],
    drop: &[&str],
) -> async_nats::HeaderMap {
    let named = |list: &[&str], n: &str| list.iter().any(|k| k.eq_ignore_ascii_case(n));
    let mut out = async_nats::HeaderMap::new();
    for (name, values) in from.iter() {
        let n: &str = name.as_ref();
        if (is_server(n) && !named(keep, n)) || named(drop, n) {
            continue;
        }
        for value in values {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// The first value of header `name` (one of the names above), read
/// without allocating or hashing. `HeaderMap::get` with a `&str` copies
/// and checks the name, and any lookup hashes it with SipHash: for the
/// handful of headers a task or a result carries, comparing the name with
/// each is cheaper (a node reads a dozen per task; hashing was a sixth of
/// its instructions). Larger maps are looked up by hash.
pub(crate) fn get<'a>(headers: &'a async_nats::HeaderMap, name: &'static str) -> Option<&'a str> {
    /// Up to this many names, a scan.
    const SCAN: usize = 16;
    if headers.len() > SCAN {
        return headers
            .get(async_nats::header::HeaderName::from_static(name))
            .map(|v| v.as_str());
    }
    // Names compare as `HeaderName`s do (bytes, case and all).
    headers
        .iter()
        .find(|(n, _)| AsRef::<str>::as_ref(*n) == name)
        .and_then(|(_, values)| values.first())
        .map(|v| v.as_str())
}

/// Header `name` (one of the names above), made without copying it.
pub(crate) fn name(name: &'static str) -> async_nats::header::HeaderName {
    async_nats::header::HeaderName::from_static(name)
}

/// `t` as `Task-Started` and `Task-Finished` carry it: RFC 3339 in UTC
/// with milliseconds, `2026-11-29T00:04:27.716Z` (what
/// `humantime::format_rfc3339_millis` writes, without its formatting
/// machinery: a node writes two per task). Times before 1970 are written
/// as 1970-01-01T00:00:00.000Z.
pub fn stamp(t: std::time::SystemTime) -> String {
    let since = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil(days);
    let mut out = [0u8; 24];
    let mut at = 0;
    let mut put = |mut n: u64, width: usize, then: u8| {
        for i in (0..width).rev() {
            out[at + i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out[at + width] = then;
        at += width + 1;
    };
    put(year, 4, b'-');
    put(month, 2, b'-');
    put(day, 2, b'T');
    put(rem / 3600, 2, b':');
    put(rem / 60 % 60, 2, b':');
    put(rem % 60, 2, b'.');
    put(u64::from(since.subsec_millis()), 3, b'Z');
    // Only ASCII digits and separators were written.
    String::from_utf8(out.to_vec()).unwrap_or_default()
}

/// The proleptic Gregorian date of `days` after 1970-01-01 (H. Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}
