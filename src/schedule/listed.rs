//! A recurring schedule as `fleet schedule list` shows it, read from what
//! the server keeps (pure: the reads are in [`super::manage`]):
//!
//! | what | read from |
//! |---|---|
//! | name, kind, pattern, time zone, catch-up | the schedule message on `sched.cron.<name>` (its headers) |
//! | last fired, next run | the newest copy it fired (`due.<kind>` in `SCHEDULES`, `Nats-Scheduler` naming it): its time, its `Nats-Schedule-Next` |
//! | next run, before any firing | `@every D`: the second after it was stored, plus D (the server's rule); otherwise unknown |
//! | last run | the newest result under `results.sched.<name>.>` (one `last_by_subj` direct get) |

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::pattern;
use crate::contract::{self, header};
use crate::direct::Stored;
use crate::submit::{TaskEnd, TaskStatus};

/// One recurring schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Schedule {
    /// Its name (`sched.cron.<name>`).
    pub name: String,
    /// The kind of task it fires.
    pub kind: String,
    /// `Nats-Schedule`: a 6-field cron line, `@every …`, `@daily`…
    pub pattern: String,
    /// The IANA time zone of a cron line (UTC when none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// How long an occurrence may wait in the queue and still run
    /// (`Task-Catch-Up`), when set (`--catch-up`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<String>,
    /// `Task-Timeout` of each occurrence, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_timeout: Option<String>,
    /// When the schedule was stored (added or last replaced), RFC 3339.
    pub stored: String,
    /// Its sequence in `SCHEDULES`; every occurrence it fires comes after.
    #[serde(skip)]
    pub seq: u64,
    /// When it fires next, as the server said at its last firing (or, for
    /// `@every` before any firing, as the server's rule gives it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_run: Option<String>,
    /// When it last fired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_fired: Option<String>,
    /// The newest result of one of its occurrences.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run: Option<LastRun>,
}

/// The newest kept result of a schedule's occurrences.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastRun {
    /// The occurrence's task id, `sched.<name>.<seq>`.
    pub id: String,
    /// `ok` or `error`.
    pub status: String,
    /// The error code, for an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// The error, for an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the node started it (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    /// When its result was written (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// The node that ran it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl Schedule {
    /// Reads a schedule message kept on `sched.cron.<name>`; `None` for
    /// anything else (no `Nats-Schedule`, another subject, another target).
    pub(crate) fn read(stored: &Stored) -> Option<Schedule> {
        let name = stored
            .subject
            .strip_prefix(&contract::cron_subject(""))
            .filter(|n| !n.is_empty() && !n.contains('.'))?;
        let kind = stored
            .header(header::SCHEDULE_TARGET)?
            .strip_prefix(contract::DUE_PREFIX)
            .filter(|k| !k.is_empty())?;
        let text = |h: &str| stored.header(h).map(str::to_string);
        Some(Schedule {
            name: name.to_string(),
            kind: kind.to_string(),
            pattern: text(header::SCHEDULE)?,
            time_zone: text(header::SCHEDULE_TIME_ZONE),
            // Schedules added before Task-Catch-Up had only the TTL.
            catch_up: text(header::TASK_CATCH_UP).or_else(|| text(header::SCHEDULE_TTL)),
            task_timeout: text(header::TASK_TIMEOUT),
            stored: stored.time.clone(),
            seq: stored.seq,
            next_run: None,
            last_fired: None,
            last_run: None,
        })
    }

    /// The subject each of its firings is kept on in `SCHEDULES`.
    pub(crate) fn due_subject(&self) -> String {
        contract::due_subject(&self.kind)
    }

    /// Takes in what was read: the copies fired into `due.<kind>` after
    /// the schedule was stored (oldest first; other schedules' among
    /// them) and the newest result of its occurrences.
    pub(crate) fn learn(&mut self, fired: &[Stored], last_result: Option<&Stored>) {
        let me = contract::cron_subject(&self.name);
        let newest = fired
            .iter()
            .filter(|m| m.seq > self.seq && m.header(header::SCHEDULER) == Some(me.as_str()))
            .max_by_key(|m| m.seq);
        match newest {
            Some(m) => {
                self.last_fired = Some(m.time.clone());
                self.next_run = m
                    .header(header::SCHEDULE_NEXT)
                    .filter(|n| *n != "purge")
                    .map(str::to_string);
            }
            None => self.next_run = first_run(&self.pattern, &self.stored),
        }
        self.last_run = last_result.and_then(last_run);
    }
}

/// When an `@every` schedule stored at `stored` first fires: the time it
/// was stored rounded to the nearest second, plus the interval (the
/// server's rule; seen on 2.15.2: stored at :15.62, `@every 2s` fired at
/// :18; stored at :26.38, at :28). `None` for other patterns.
fn first_run(pattern: &str, stored: &str) -> Option<String> {
    let every = pattern.strip_prefix("@every ")?;
    let every = parse_go_duration(every)?;
    let stored: SystemTime = pattern::parse_time(stored).ok()?;
    Some(pattern::rfc3339(pattern::round_nearest(stored) + every))
}

/// The durations fleet writes (`90s`, `1500ms`) and the server's other
/// plain forms (`1m`, `2h`).
fn parse_go_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    })
}

/// The last run a kept result tells of; `None` if it is not an occurrence's.
fn last_run(result: &Stored) -> Option<LastRun> {
    let (name, seq) = super::occurrence::parse(&result.subject)?;
    let id = contract::occurrence_task_id(name, seq);
    let end = TaskEnd::from_result(0, &id, "", Some(&result.headers), result.payload.clone());
    Some(LastRun {
        status: if end.status == TaskStatus::Ok {
            "ok"
        } else {
            "error"
        }
        .to_string(),
        code: end.status.code(),
        error: end.status.message(),
        started: end.started,
        finished: end.finished,
        node: end.node,
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::HeaderMap;

    fn stored(subject: &str, seq: u64, time: &str, pairs: &[(&str, &str)]) -> Stored {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.insert(*k, *v);
        }
        Stored {
            subject: subject.into(),
            seq,
            time: time.into(),
            headers,
            payload: "ping".into(),
        }
    }

    fn tick() -> Schedule {
        Schedule::read(&stored(
            "sched.cron.tick",
            10,
            "2026-11-28T08:55:15.621723227Z",
            &[
                ("Nats-Schedule", "@every 2s"),
                ("Nats-Schedule-Target", "due.echo"),
                ("Task-Schedule", "tick"),
                ("Nats-TTL", "never"),
                ("Nats-Schedule-TTL", "30s"),
            ],
        ))
        .expect("a schedule")
    }

    #[test]
    fn a_listed_schedule_reads_its_headers() {
        let s = tick();
        assert_eq!((s.name.as_str(), s.kind.as_str()), ("tick", "echo"));
        assert_eq!(s.pattern, "@every 2s");
        assert_eq!(s.catch_up.as_deref(), Some("30s"));
        assert_eq!((s.time_zone.clone(), s.seq), (None, 10));
        assert_eq!(s.due_subject(), "due.echo");
        let cron = stored(
            "sched.cron.nightly",
            3,
            "2026-11-28T08:00:00Z",
            &[
                ("Nats-Schedule", "0 0 2 * * *"),
                ("Nats-Schedule-Target", "due.report.daily"),
                ("Nats-Schedule-Time-Zone", "Europe/Paris"),
            ],
        );
        let cron = Schedule::read(&cron).unwrap();
        assert_eq!(cron.kind, "report.daily");
        assert_eq!(cron.time_zone.as_deref(), Some("Europe/Paris"));
    }

    #[test]
    fn what_is_not_a_schedule_is_skipped() {
        let target = [("Nats-Schedule-Target", "due.echo")];
        assert!(Schedule::read(&stored("sched.cron.x", 1, "", &target)).is_none());
        let full = [
            ("Nats-Schedule", "@daily"),
            ("Nats-Schedule-Target", "due.echo"),
        ];
        assert!(Schedule::read(&stored("sched.task.b.1", 1, "", &full)).is_none());
        assert!(Schedule::read(&stored("sched.cron.a.b", 1, "", &full)).is_none());
        // A tenant's unique key (even one forged to look like a schedule).
        let key = crate::contract::tenant_unique_subject("echo.x");
        assert!(Schedule::read(&stored(&key, 1, "", &full)).is_none());
        assert!(Schedule::read(&stored("sched.unique.x", 1, "", &full)).is_none());
        let odd = [("Nats-Schedule", "@daily"), ("Nats-Schedule-Target", "x")];
        assert!(Schedule::read(&stored("sched.cron.x", 1, "", &odd)).is_none());
    }

    #[test]
    fn the_next_run_is_what_the_newest_firing_said() {
        let mut s = tick();
        let fired = [
            // Before the schedule was stored (an older version of it).
            stored(
                "due.echo",
                9,
                "2026-11-28T08:55:14Z",
                &[
                    ("Nats-Scheduler", "sched.cron.tick"),
                    ("Nats-Schedule-Next", "old"),
                ],
            ),
            stored(
                "due.echo",
                11,
                "2026-11-28T08:55:18.001Z",
                &[
                    ("Nats-Scheduler", "sched.cron.tick"),
                    ("Nats-Schedule-Next", "2026-11-28T08:55:20Z"),
                ],
            ),
            stored(
                "due.echo",
                12,
                "2026-11-28T08:55:20.000Z",
                &[
                    ("Nats-Scheduler", "sched.cron.tick"),
                    ("Nats-Schedule-Next", "2026-11-28T08:55:22Z"),
                ],
            ),
            // Another schedule of the same kind, and a delayed task.
            stored(
                "due.echo",
                13,
                "2026-11-28T08:55:21Z",
                &[
                    ("Nats-Scheduler", "sched.cron.other"),
                    ("Nats-Schedule-Next", "x"),
                ],
            ),
            stored(
                "due.echo",
                14,
                "2026-11-28T08:55:21Z",
                &[
                    ("Nats-Scheduler", "sched.task.b.1"),
                    ("Nats-Schedule-Next", "purge"),
                ],
            ),
        ];
        let result = stored(
            "results.sched.tick.12",
            40,
            "2026-11-28T08:55:20.2Z",
            &[
                ("Task-Node", "node2"),
                ("Task-Started", "2026-11-28T08:55:20.003Z"),
                ("Task-Finished", "2026-11-28T08:55:20.004Z"),
            ],
        );
        s.learn(&fired, Some(&result));
        assert_eq!(s.next_run.as_deref(), Some("2026-11-28T08:55:22Z"));
        assert_eq!(s.last_fired.as_deref(), Some("2026-11-28T08:55:20.000Z"));
        let last = s.last_run.clone().unwrap();
        assert_eq!(
            (last.id.as_str(), last.status.as_str()),
            ("sched.tick.12", "ok")
        );
        assert_eq!(last.node.as_deref(), Some("node2"));
        assert_eq!(last.started.as_deref(), Some("2026-11-28T08:55:20.003Z"));
    }

    #[test]
    fn before_any_firing_every_runs_a_period_after_the_second_it_was_stored() {
        let mut s = tick();
        s.learn(&[], None);
        assert_eq!(s.next_run.as_deref(), Some("2026-11-28T08:55:18Z"));
        assert_eq!((s.last_fired.clone(), s.last_run.clone()), (None, None));
        s.pattern = "0 0 2 * * *".into();
        s.learn(&[], None);
        assert_eq!(
            s.next_run, None,
            "a cron line's next run is the server's to say"
        );
        for (stored, first) in [
            ("2026-11-28T09:05:26.38Z", "2026-11-28T09:05:28Z"),
            ("2026-11-28T09:05:26.5Z", "2026-11-28T09:05:29Z"),
            ("2026-11-28T09:05:26Z", "2026-11-28T09:05:28Z"),
        ] {
            assert_eq!(
                first_run("@every 2s", stored).as_deref(),
                Some(first),
                "{stored}"
            );
        }
    }

    #[test]
    fn a_failed_last_run_says_why() {
        let result = stored(
            "results.sched.tick.7",
            1,
            "",
            &[
                ("Nats-Service-Error-Code", "404"),
                ("Nats-Service-Error", "no handler for kind \"nope\""),
            ],
        );
        let last = last_run(&result).unwrap();
        assert_eq!((last.status.as_str(), last.code), ("error", Some(404)));
        assert!(last_run(&stored("results.b.1", 1, "", &[])).is_none());
    }

    #[test]
    fn go_durations_read_back() {
        assert_eq!(parse_go_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_go_duration("1500ms"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_go_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_go_duration("1h30m"), None);
        assert_eq!(parse_go_duration("s"), None);
    }
}
