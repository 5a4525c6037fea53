//! Adding, listing and removing recurring schedules: what `fleet schedule`
//! runs. A schedule is one message on `sched.cron.<name>` in `SCHEDULES`;
//! the server fires it into `due.<kind>` (ADR-51), `TASKS` takes each
//! firing in as a task of that kind. No fleet process takes part in the
//! firing: a schedule fires with every node down, and never twice.

use std::time::Duration;

use async_nats::{Client, HeaderMap, RequestErrorKind};
use bytes::Bytes;

use super::listed::Schedule;
use super::pattern::{self, Repeat};
use crate::connect;
use crate::contract::{self, header};
use crate::direct::{self, Stored};
use crate::error::{Error, ErrorKind, ResultExt};
use crate::submit::wire::{self, Reply};

/// A recurring schedule to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recurring {
    /// Its name: one word of letters, digits, `-` and `_`.
    pub name: String,
    /// The kind of task it fires.
    pub kind: String,
    /// How it repeats.
    pub repeat: Repeat,
    /// The IANA time zone of a cron line (default UTC).
    pub time_zone: Option<String>,
    /// How long an occurrence may wait in the queue for a node before it
    /// leaves it (`Nats-Schedule-TTL`); none: it waits as any task does.
    pub catch_up: Option<Duration>,
    /// `Task-Timeout` of each occurrence.
    pub task_timeout: Option<String>,
    /// The payload of each occurrence.
    pub payload: Bytes,
}

/// What [`add`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// The pattern as the server keeps it (a 5-field line has its seconds).
    pub pattern: String,
    /// A schedule of that name was there and is replaced.
    pub replaced: bool,
}

impl Recurring {
    /// The schedule message's headers (checked: name, kind, pattern, zone).
    ///
    /// # Errors
    /// [`ErrorKind::Usage`] for what the server would refuse or misread.
    pub fn headers(&self) -> Result<HeaderMap, Error> {
        self.headers_in(None)
    }

    /// The schedule message's headers for `tenant` (its target in its own
    /// space: the server does not map a target through the import).
    ///
    /// # Errors
    /// As [`Recurring::headers`].
    pub fn headers_in(&self, tenant: Option<&str>) -> Result<HeaderMap, Error> {
        pattern::check_name(&self.name)?;
        crate::check::check_task_id(&self.kind).map_err(|e| {
            Error::new(
                ErrorKind::Usage,
                format!("bad kind {:?}: {}", self.kind, e.message()),
            )
        })?;
        let mut h = HeaderMap::new();
        h.insert(header::SCHEDULE, self.repeat.header()?.as_str());
        let target = contract::in_tenant(tenant, &contract::due_subject(&self.kind));
        h.insert(header::SCHEDULE_TARGET, target.as_str());
        // SCHEDULES drops what is older than its max age; only `never`
        // outlives it.
        h.insert(header::TTL, "never");
        h.insert(header::TASK_SCHEDULE, self.name.as_str());
        if let Some(zone) = &self.time_zone {
            pattern::check_time_zone(zone)?;
            if !self.repeat.takes_time_zone() {
                return Err(Error::new(
                    ErrorKind::Usage,
                    "--tz goes with --cron (an interval has no time of day)",
                ));
            }
            h.insert(header::SCHEDULE_TIME_ZONE, zone.as_str());
        }
        if let Some(catch_up) = self.catch_up {
            // The node decides (each fired task carries the window and is
            // answered `408 expired` past it, never dropped while it runs);
            // the TTL only clears out, an hour later, what no node took.
            h.insert(header::TASK_CATCH_UP, pattern::ttl_value(catch_up).as_str());
            let backstop = catch_up + crate::control::DEADLINE_GRACE;
            h.insert(header::SCHEDULE_TTL, pattern::ttl_value(backstop).as_str());
        }
        if let Some(timeout) = &self.task_timeout {
            crate::check::parse_timeout(timeout)
                .map_err(|e| Error::new(ErrorKind::Usage, e.message().to_string()))?;
            h.insert(header::TASK_TIMEOUT, timeout.as_str());
        }
        Ok(h)
    }
}

/// The error a refused schedule ends with, in the words of what to change.
fn refusal(code: u64, description: &str, schedule: &Recurring, pattern: &str) -> Error {
    let message = match code {
        10189 => format!(
            "the server refused the pattern {pattern:?} ({description}, {code}): cron lines have 6 fields with seconds first (5-field lines get a 0 in front), or use @hourly, @daily, @weekly, @monthly, @yearly, or --every (1s at least)"
        ),
        10190 => format!(
            "the server refused the target {} ({description}, {code}): is SCHEDULES set up by this version's `fleet setup`?",
            contract::due_subject(&schedule.kind)
        ),
        10223 => format!(
            "the server does not know the time zone {:?} ({description}, {code}): give an IANA name such as Europe/Paris; the server resolves it with its host's time zone data",
            schedule.time_zone.as_deref().unwrap_or_default()
        ),
        10191 | 10165 => format!(
            "the server refused --catch-up ({description}, {code}): whole seconds, at least 1s"
        ),
        _ => format!("the server refused schedule {:?}: {description} ({code})", schedule.name),
    };
    let kind = if code == 10190 {
        ErrorKind::Setup
    } else {
        ErrorKind::Usage
    };
    Error::new(kind, message)
}

/// Adds schedule `schedule`, or replaces the one of that name (the server
/// keeps one message per schedule subject).
///
/// # Errors
/// [`ErrorKind::Usage`] for a bad name, kind, pattern or time zone (the
/// server's own verdicts 10189, 10223 included) or a tenant's connection;
/// [`ErrorKind::NotSetUp`] without `SCHEDULES`; [`ErrorKind::Connection`].
pub async fn add(client: &Client, schedule: &Recurring) -> Result<Added, Error> {
    add_in(client, None, schedule).await
}

/// [`add`] on a connection of `tenant` (`None`: the fleet account's): the
/// schedule is kept in `SCHEDULES_<tenant>` and fires into the tenant's
/// space.
///
/// # Errors
/// As [`add`]; [`ErrorKind::NotSetUp`] when the tenant has no schedule
/// stream (`fleet setup --tenant`).
pub async fn add_in(
    client: &Client,
    tenant: Option<&str>,
    schedule: &Recurring,
) -> Result<Added, Error> {
    let headers = schedule.headers_in(tenant)?;
    let pattern = headers
        .get(header::SCHEDULE)
        .map(|v| v.as_str().to_string())
        .unwrap_or_default();
    require_space(client, tenant).await?;
    let subject = contract::cron_subject(&schedule.name);
    let replaced = direct::last(
        client,
        contract::SCHEDULES_STREAM,
        &contract::in_tenant(tenant, &subject),
    )
    .await?
    .is_some();
    let reply = client
        .request_with_headers(subject.clone(), headers, schedule.payload.clone())
        .await;
    let (no_stream, payload) = match reply {
        Ok(msg) => (false, msg.payload),
        Err(err) if err.kind() == RequestErrorKind::NoResponders => (true, Bytes::new()),
        Err(err) => {
            return Err(Error::with_source(
                ErrorKind::Connection,
                format!("storing schedule {subject}"),
                err,
            ))
        }
    };
    match wire::parse(0, no_stream, &payload) {
        Some(Reply::Stored { .. }) => Ok(Added { pattern, replaced }),
        Some(Reply::Failed {
            code, description, ..
        }) => Err(refusal(code, &description, schedule, &pattern)),
        Some(Reply::NoStream) => Err(nothing_takes(&subject, tenant)),
        _ => Err(Error::new(
            ErrorKind::Connection,
            format!("storing schedule {subject}: an answer that is no PubAck"),
        )),
    }
}

/// Nothing takes `subject`: what to run.
fn nothing_takes(subject: &str, tenant: Option<&str>) -> Error {
    let message = match tenant {
        None => format!(
            "no stream takes {subject}: run `fleet setup` ({} holds schedules)",
            contract::SCHEDULES_STREAM
        ),
        Some(t) => format!(
            "no stream takes {subject}: the fleet's admin runs `fleet setup --tenant {t}` (and the server's config imports sched.> for this account)"
        ),
    };
    Error::new(ErrorKind::NotSetUp, message)
}

/// A tenant's name is checked; a connection without one must be the fleet
/// account's (see [`connect::require_jetstream`]).
async fn require_space(client: &Client, tenant: Option<&str>) -> Result<(), Error> {
    match tenant {
        Some(t) => {
            crate::setup::tenant::check_tenant_name(t).map_err(|e| Error::new(ErrorKind::Usage, e))
        }
        None => connect::require_jetstream(client, "schedules").await,
    }
}

/// How many firings after the last run `list` reads, per schedule, to find
/// its newest one.
const FIRINGS_READ: usize = 4096;

/// Every recurring schedule, by name, with its next run and last run.
///
/// # Errors
/// [`ErrorKind::Usage`] for a tenant's connection; [`ErrorKind::NotSetUp`]
/// without `SCHEDULES`; [`ErrorKind::Connection`].
pub async fn list(client: &Client) -> Result<Vec<Schedule>, Error> {
    list_in(client, None).await
}

/// [`list`] on a connection of `tenant`: its own schedules, read from
/// `SCHEDULES_<tenant>` (the direct get its import gives). The last run of
/// each is the result of its newest firing (a tenant reads results one
/// subject at a time).
///
/// # Errors
/// As [`list`].
pub async fn list_in(client: &Client, tenant: Option<&str>) -> Result<Vec<Schedule>, Error> {
    require_space(client, tenant).await?;
    let stream = contract::SCHEDULES_STREAM;
    let read = |kept: Vec<Stored>| -> Vec<Stored> {
        match tenant {
            Some(t) => kept
                .into_iter()
                .map(|m| super::space::local(t, m))
                .collect(),
            None => kept,
        }
    };
    // One message per schedule subject (the server rolls them up).
    let all = contract::in_tenant(tenant, &contract::cron_subject(">"));
    let kept = read(direct::from_seq(client, stream, &all, 1, usize::MAX).await?);
    let mut schedules: Vec<Schedule> = kept.iter().filter_map(Schedule::read).collect();
    schedules.sort_by(|a, b| a.name.cmp(&b.name));
    for s in &mut schedules {
        if tenant.is_some() {
            let due = contract::in_tenant(tenant, &s.due_subject());
            let mut fired = direct::from_seq(client, stream, &due, s.seq + 1, FIRINGS_READ).await?;
            if fired.len() >= FIRINGS_READ {
                fired.extend(direct::last(client, stream, &due).await?);
            }
            let fired = read(fired);
            let last_result = newest_result(client, &s.name, &fired).await;
            s.learn(&fired, last_result.as_ref());
            continue;
        }
        let runs = super::occurrence::results_filter(&s.name);
        let last_result = direct::last(client, contract::RESULTS_STREAM, &runs).await?;
        // Firings are looked for after the newest of: the schedule itself,
        // the occurrence whose result is the last one kept.
        let ran = last_result
            .as_ref()
            .and_then(|r| super::occurrence::parse(&r.subject))
            .map_or(0, |(_, seq)| seq);
        let from = (s.seq + 1).max(ran);
        let due = s.due_subject();
        let mut fired = direct::from_seq(client, stream, &due, from, FIRINGS_READ).await?;
        if fired.len() >= FIRINGS_READ {
            // Too many to read: the newest firing of the kind may be its.
            fired.extend(direct::last(client, stream, &due).await?);
        }
        s.learn(&fired, last_result.as_ref());
    }
    Ok(schedules)
}

/// The kept result of the newest of schedule `name`'s firings in `fired`
/// (of the last 8) that has one, read as a tenant reads a result.
async fn newest_result(client: &Client, name: &str, fired: &[Stored]) -> Option<Stored> {
    let me = contract::cron_subject(name);
    let mine = fired
        .iter()
        .rev()
        .filter(|m| m.header(header::SCHEDULER) == Some(me.as_str()))
        .take(8);
    for m in mine {
        let id = contract::occurrence_task_id(name, m.seq);
        let subject = contract::default_reply(&id);
        if let Some(msg) = crate::submit::kept_last(client, &subject).await {
            return Some(Stored {
                subject,
                seq: 0,
                time: String::new(),
                headers: msg.headers.unwrap_or_default(),
                payload: msg.payload,
            });
        }
    }
    None
}

/// Removes schedule `name`; `false` when there is none of that name. An
/// occurrence it already fired stays queued and runs.
///
/// # Errors
/// [`ErrorKind::Usage`] for a bad name or a tenant's connection;
/// [`ErrorKind::NotSetUp`] without `SCHEDULES`; [`ErrorKind::Connection`].
pub async fn remove(client: &Client, name: &str) -> Result<bool, Error> {
    remove_in(client, None, name).await
}

/// [`remove`] on a connection of `tenant`. A tenant may not purge, so its
/// schedule is rolled up by an empty message that expires in a second
/// (`schedule::space`).
///
/// # Errors
/// As [`remove`].
pub async fn remove_in(client: &Client, tenant: Option<&str>, name: &str) -> Result<bool, Error> {
    pattern::check_name(name)?;
    require_space(client, tenant).await?;
    if tenant.is_some() {
        let subject = contract::cron_subject(name);
        let there = direct::last(
            client,
            contract::SCHEDULES_STREAM,
            &contract::in_tenant(tenant, &subject),
        )
        .await?
        .is_some_and(|m| m.header(header::SCHEDULE).is_some());
        if !there {
            return Ok(false);
        }
        let reply = client
            .request_with_headers(
                subject.clone(),
                super::space::removal_headers(),
                Bytes::new(),
            )
            .await;
        return match reply {
            Ok(msg) => match wire::parse(0, false, &msg.payload) {
                Some(Reply::Stored { .. }) => Ok(true),
                other => Err(Error::new(
                    ErrorKind::Setup,
                    format!("removing schedule {name}: {other:?}"),
                )),
            },
            Err(err) if err.kind() == RequestErrorKind::NoResponders => {
                Err(nothing_takes(&subject, tenant))
            }
            Err(err) => Err(Error::with_source(
                ErrorKind::Connection,
                format!("removing schedule {name}"),
                err,
            )),
        };
    }
    let js = async_nats::jetstream::new(client.clone());
    let stream = js
        .get_stream_no_info(contract::SCHEDULES_STREAM)
        .await
        .or_fail(ErrorKind::NotSetUp, || {
            format!(
                "no stream {}: run `fleet setup`",
                contract::SCHEDULES_STREAM
            )
        })?;
    let purged = stream
        .purge()
        .filter(contract::cron_subject(name))
        .await
        .or_fail(ErrorKind::Connection, || {
            format!("removing schedule {name}")
        })?;
    Ok(purged.purged > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every(secs: u64) -> Recurring {
        Recurring {
            name: "tick".into(),
            kind: "echo".into(),
            repeat: Repeat::Every(Duration::from_secs(secs)),
            time_zone: None,
            catch_up: None,
            task_timeout: None,
            payload: Bytes::from_static(b"ping"),
        }
    }

    fn get<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
        h.get(name).map(|v| v.as_str())
    }

    #[test]
    fn a_schedule_carries_its_name_and_no_task_id() {
        let h = every(2).headers().unwrap();
        assert_eq!(get(&h, "Nats-Schedule"), Some("@every 2s"));
        assert_eq!(get(&h, "Nats-Schedule-Target"), Some("due.echo"));
        assert_eq!(get(&h, "Nats-TTL"), Some("never"));
        assert_eq!(get(&h, "Task-Schedule"), Some("tick"));
        assert_eq!(get(&h, "Task-Id"), None, "each occurrence gets its own id");
        assert_eq!(
            get(&h, "Nats-Msg-Id"),
            None,
            "a changed schedule must not be dropped as a duplicate"
        );
    }

    #[test]
    fn cron_lines_take_a_zone_and_catch_up_becomes_each_tasks_window() {
        let s = Recurring {
            repeat: Repeat::Cron("0 2 * * *".into()),
            time_zone: Some("Europe/Paris".into()),
            catch_up: Some(Duration::from_secs(600)),
            task_timeout: Some("30s".into()),
            ..every(1)
        };
        let h = s.headers().unwrap();
        assert_eq!(get(&h, "Nats-Schedule"), Some("0 0 2 * * *"));
        assert_eq!(get(&h, "Nats-Schedule-Time-Zone"), Some("Europe/Paris"));
        assert_eq!(get(&h, "Task-Catch-Up"), Some("600s"));
        // An hour more, so the server never drops a task a node still runs.
        assert_eq!(get(&h, "Nats-Schedule-TTL"), Some("4200s"));
        assert_eq!(get(&h, "Task-Timeout"), Some("30s"));
    }

    #[test]
    fn what_the_server_would_refuse_is_refused_first() {
        let zoned_interval = Recurring {
            time_zone: Some("UTC".into()),
            ..every(5)
        };
        for bad in [
            Recurring {
                name: "a.b".into(),
                ..every(5)
            },
            Recurring {
                kind: "a b".into(),
                ..every(5)
            },
            Recurring {
                repeat: Repeat::Cron("* * *".into()),
                ..every(5)
            },
            Recurring {
                task_timeout: Some("forever".into()),
                ..every(5)
            },
            every(0),
            zoned_interval,
        ] {
            assert_eq!(
                bad.headers().unwrap_err().kind(),
                ErrorKind::Usage,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_servers_refusals_say_what_to_change() {
        let s = every(5);
        let e = refusal(10189, "pattern is invalid", &s, "* * * * *");
        assert_eq!(e.kind(), ErrorKind::Usage);
        assert!(e.to_string().contains("6 fields"), "{e}");
        let zoned = Recurring {
            time_zone: Some("Mars/Olympus".into()),
            ..s.clone()
        };
        let e = refusal(10223, "time zone is invalid", &zoned, "@daily");
        assert!(e.to_string().contains("Mars/Olympus"), "{e}");
        assert_eq!(
            refusal(10190, "target is invalid", &s, "").kind(),
            ErrorKind::Setup
        );
        assert!(refusal(1, "odd", &s, "").to_string().contains("odd (1)"));
    }
}
