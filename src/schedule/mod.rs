//! Time: delayed tasks and recurring schedules, held and fired by the
//! server (message schedules, ADR-51), not by any fleet process.
//!
//! A schedule is a message in `SCHEDULES`; when its time comes the server
//! stores a copy of it, without the schedule's own headers, on its target
//! `due.<kind>`, and `TASKS` sources that as `tasks.<kind>`: from there on
//! it is a task like any other.
//!
//! | what | subject in `SCHEDULES` | fires | its task id | made by |
//! |---|---|---|---|---|
//! | delayed task | `sched.task.<batch>.<n>` | once, `@at` the whole second at or after its time; then the server removes it | `<batch>.<n>` (`Task-Id`) | `fleet submit --delay/--at` ([`crate::submit_at`]) |
//! | batch record | `sched.batch.<batch>` | never (a plain message) | - | the same, once every task is stored |
//! | recurring schedule | `sched.cron.<name>` | every time its pattern says, until removed | `sched.<name>.<seq>` (see [`occurrence`]) | `fleet schedule add` ([`add`]) |
//!
//! What happens to a schedule, and what follows:
//!
//! | event | what the server does | what a user sees |
//! |---|---|---|
//! | its time comes, nodes up | fires once; `TASKS` has the task ~1 ms later | a node starts it within milliseconds |
//! | its time comes, no node up | fires once; the task waits in `TASKS` | it runs when the first node comes up (unless `--catch-up` ran out) |
//! | `--catch-up D` and D passes before a node starts the task | the task waits in `TASKS` (its `Nats-TTL` is D plus an hour) | the node that takes it answers `408 expired` without running it; one started in time runs to its end |
//! | the server is down at its time | on restart, every missed occurrence of a schedule fires **once**, together | one catch-up run, not a burst; with `--catch-up D`, `408 expired` if the first run it stands for is older than D |
//! | added again under the same name | the new message replaces the old (rollup) | the new pattern from now on |
//! | removed (`fleet schedule remove`) | the subject is purged | no further firing; one already fired still runs |
//!
//! The pure parts (`pattern`, `occurrence`) need no server and sit below
//! `envelope` (the node reads an occurrence's id with [`occurrence`]);
//! [`listed`] reads a schedule and its last run (a result, read as the
//! submitter reads one), and [`manage`] does the I/O.

pub mod listed;
pub mod manage;
pub mod occurrence;
pub mod pattern;
mod space;

pub use listed::{LastRun, Schedule};
pub use manage::{add, add_in, list, list_in, remove, remove_in, Added, Recurring};
pub use pattern::Repeat;
