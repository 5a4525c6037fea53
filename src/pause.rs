//! Pausing and resuming groups: a pause is the server's consumer pause on
//! the group's durable consumer (`$JS.API.CONSUMER.PAUSE.TASKS.<group>`),
//! so it holds for every node of the group, survives their restarts, and
//! ends by itself at its time. While a group is paused its nodes start no
//! task (running ones finish) and the queue keeps filling.
//!
//! A kind is paused by pausing the group that takes that kind and nothing
//! else; a kind that shares its group is refused with what to do instead
//! ([`resolve`], pure). Needs the admin role (consumer list and pause).

use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer::Info;
use async_nats::jetstream::stream::ConsumerErrorKind;
use async_nats::jetstream::{Context, ErrorCode};
use futures::TryStreamExt;

use crate::contract;
use crate::error::{Error, ErrorKind, ResultExt};
use crate::priority::Priority;

/// How long a pause without an end lasts: a hundred years, which the
/// server keeps as a date like any other (`fleet resume` ends it).
pub const INDEFINITE: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// What to pause or resume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A group, by name.
    Group(String),
    /// The group that takes exactly this kind (`image.resize`, `image.>`).
    Kind(String),
}

/// A group and the kinds it takes (empty: every kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupKinds {
    /// The group's name.
    pub name: String,
    /// Its kinds, as `fleet setup --kinds` gave them.
    pub kinds: Vec<String>,
}

/// A group's pause, after a pause or a resume.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PauseState {
    /// The group.
    pub group: String,
    /// Whether its nodes are held.
    pub paused: bool,
    /// Until when (RFC 3339), when paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// The kinds a group's consumer filters stand for: `tasks.image.>` is
/// `image.>`; a tenant's copy of a filter adds nothing; `tasks.>` (or no
/// filter) is every kind (none listed).
pub fn kinds_of(filters: &[String]) -> Vec<String> {
    let mut kinds: Vec<String> = filters
        .iter()
        .filter_map(|f| crate::priority::split_band(f).map(|(_, kind)| kind))
        .map(str::to_string)
        .collect();
    kinds.dedup();
    if kinds.iter().any(|k| k == ">") {
        return Vec::new();
    }
    kinds
}

/// Whether kind pattern `pattern` (`image.>`, `*.resize`, `echo`) takes
/// the tasks of `kind`.
pub fn covers(pattern: &str, kind: &str) -> bool {
    let mut p = pattern.split('.');
    let mut k = kind.split('.');
    loop {
        match (p.next(), k.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The groups `target` names, out of `groups`.
///
/// # Errors
/// [`ErrorKind::Usage`] when a kind shares its group with other kinds
/// (saying how to give it a group of its own) or no group takes it.
pub fn resolve(groups: &[GroupKinds], target: &Target) -> Result<Vec<String>, Error> {
    let kind = match target {
        Target::Group(name) => return Ok(vec![name.clone()]),
        Target::Kind(kind) => kind,
    };
    let exact: Vec<String> = groups
        .iter()
        .filter(|g| !g.kinds.is_empty() && g.kinds.iter().all(|k| k == kind))
        .map(|g| g.name.clone())
        .collect();
    if !exact.is_empty() {
        return Ok(exact);
    }
    let usage = |msg: String| Err(Error::new(ErrorKind::Usage, msg));
    let sharing = groups
        .iter()
        .find(|g| g.kinds.is_empty() || g.kinds.iter().any(|k| covers(k, kind)));
    match sharing {
        Some(g) => {
            let others = if g.kinds.is_empty() {
                "every other kind".to_string()
            } else {
                g.kinds.join(", ")
            };
            usage(format!(
                "kind {kind} shares group {} with {others}: pausing it would pause them too. \
                 Pause the whole group (fleet pause --group {}), or give {kind} a group of its own: \
                 take it out of {}'s kinds (fleet setup --group {} --kinds '<the others>'), \
                 then fleet setup --group NAME --kinds '{kind}' and start its nodes with fleet node --group NAME",
                g.name, g.name, g.name, g.name
            ))
        }
        None => {
            let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
            usage(format!(
                "no group takes kind {kind} (groups: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ))
        }
    }
}

/// Parses `--until`: an RFC 3339 time, or a duration from `now` (`10m`).
///
/// # Errors
/// What is wrong with `text`.
pub fn parse_until(text: &str, now: SystemTime) -> Result<SystemTime, String> {
    use time::format_description::well_known::Rfc3339;
    let text = text.trim();
    if let Ok(at) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(SystemTime::from(at));
    }
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(now + d),
        _ => Err(format!(
            "{text:?} is neither a time (2026-12-01T09:00:00Z) nor a duration (10m)"
        )),
    }
}

/// How a pause's end reads: its time, or "resumed" for an indefinite one.
pub fn until_text(until: SystemTime, now: SystemTime) -> String {
    if until.duration_since(now).unwrap_or_default() > INDEFINITE / 2 {
        "resumed".to_string()
    } else {
        humantime::format_rfc3339_seconds(until).to_string()
    }
}

/// Pauses the groups `target` names until `until` (indefinitely when
/// `None`).
///
/// # Errors
/// As [`resolve`]; [`ErrorKind::NotSetUp`] for a group that does not
/// exist; [`ErrorKind::Setup`] when the server refuses.
pub async fn pause(
    js: &Context,
    target: &Target,
    until: Option<SystemTime>,
) -> Result<Vec<PauseState>, Error> {
    let until = until.unwrap_or_else(|| SystemTime::now() + INDEFINITE);
    let mut done = Vec::new();
    for group in targets(js, target).await? {
        let stream = js
            .get_stream_no_info(contract::TASKS_STREAM)
            .await
            .or_fail(ErrorKind::Setup, || "reading stream TASKS".into())?;
        // Every band's consumer: a paused group starts no task of any band.
        // Normal last: its answer is the group's.
        for band in [Priority::High, Priority::Low] {
            let consumer = band.consumer(&group);
            stream
                .pause_consumer(&consumer, until.into())
                .await
                .map_err(|e| consumer_error(&consumer, "pausing", e))?;
        }
        let answer = stream
            .pause_consumer(&group, until.into())
            .await
            .map_err(|e| consumer_error(&group, "pausing", e))?;
        done.push(PauseState {
            paused: answer.paused,
            until: answer
                .paused
                .then(|| humantime::format_rfc3339_seconds(answer.pause_until.into()).to_string()),
            group,
        });
    }
    Ok(done)
}

/// Resumes the groups `target` names.
///
/// # Errors
/// As [`pause`].
pub async fn resume(js: &Context, target: &Target) -> Result<Vec<PauseState>, Error> {
    let mut done = Vec::new();
    for group in targets(js, target).await? {
        let stream = js
            .get_stream_no_info(contract::TASKS_STREAM)
            .await
            .or_fail(ErrorKind::Setup, || "reading stream TASKS".into())?;
        for band in [Priority::High, Priority::Low] {
            let consumer = band.consumer(&group);
            stream
                .resume_consumer(&consumer)
                .await
                .map_err(|e| consumer_error(&consumer, "resuming", e))?;
        }
        let answer = stream
            .resume_consumer(&group)
            .await
            .map_err(|e| consumer_error(&group, "resuming", e))?;
        done.push(PauseState {
            group,
            paused: answer.paused,
            until: None,
        });
    }
    Ok(done)
}

/// Whether a group's consumer is paused, and until when.
pub fn state_of(info: &Info) -> PauseState {
    PauseState {
        group: info.name.clone(),
        paused: info.paused,
        until: info
            .config
            .pause_until
            .filter(|_| info.paused)
            .map(|t| humantime::format_rfc3339_seconds(t.into()).to_string()),
    }
}

async fn targets(js: &Context, target: &Target) -> Result<Vec<String>, Error> {
    if let Target::Group(name) = target {
        return Ok(vec![name.clone()]);
    }
    let stream = js
        .get_stream_no_info(contract::TASKS_STREAM)
        .await
        .or_fail(ErrorKind::NotSetUp, || {
            "no TASKS stream: run `fleet setup`".into()
        })?;
    let infos: Vec<Info> = stream
        .consumers()
        .try_collect()
        .await
        .or_fail(ErrorKind::Connection, || "listing the groups".into())?;
    let groups: Vec<GroupKinds> = infos
        .iter()
        // A group is its normal band's consumer; `<group>-high` and
        // `<group>-low` follow it.
        .filter(|i| crate::priority::check_group_name(&i.name).is_ok())
        .map(|i| GroupKinds {
            name: i.name.clone(),
            kinds: kinds_of(&filters(i)),
        })
        .collect();
    resolve(&groups, target)
}

/// A consumer's filter subjects, whichever field holds them.
pub(crate) fn filters(info: &Info) -> Vec<String> {
    let mut filters = info.config.filter_subjects.clone();
    if !info.config.filter_subject.is_empty() {
        filters.push(info.config.filter_subject.clone());
    }
    filters
}

fn consumer_error(
    group: &str,
    doing: &str,
    err: async_nats::jetstream::stream::ConsumerError,
) -> Error {
    let not_found = matches!(err.kind(), ConsumerErrorKind::JetStream(e) if e.error_code() == ErrorCode::CONSUMER_NOT_FOUND);
    if not_found {
        Error::with_source(
            ErrorKind::NotSetUp,
            format!(
                "no group {group:?} on {}: see fleet status",
                contract::TASKS_STREAM
            ),
            err,
        )
    } else {
        Error::with_source(ErrorKind::Setup, format!("{doing} group {group:?}"), err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str, kinds: &[&str]) -> GroupKinds {
        GroupKinds {
            name: name.into(),
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
        }
    }

    fn kind(k: &str) -> Target {
        Target::Kind(k.into())
    }

    #[test]
    fn filters_read_as_kinds() {
        let filters: Vec<String> = [
            "tasks.image.>",
            "tenant.*.tasks.image.>",
            "tasks.thumb",
            "tenant.*.tasks.thumb",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(kinds_of(&filters), ["image.>", "thumb"]);
        assert_eq!(kinds_of(&["tasks-low.thumb".to_string()]), ["thumb"]);
        assert!(kinds_of(&[]).is_empty());
        let every = ["tasks.>".to_string(), "tenant.*.tasks.>".to_string()];
        assert!(kinds_of(&every).is_empty(), "a band whole is every kind");
    }

    #[test]
    fn patterns_cover_kinds_as_subjects_do() {
        assert!(covers("echo", "echo"));
        assert!(!covers("echo", "echo.x"));
        assert!(covers("image.>", "image.resize"));
        assert!(covers("image.>", "image.a.b"));
        assert!(!covers("image.>", "image"));
        assert!(covers("*.resize", "image.resize"));
        assert!(!covers("*.resize", "image.crop"));
        assert!(!covers("image", "images"));
    }

    #[test]
    fn a_kind_with_a_group_of_its_own_pauses_that_group() {
        let groups = [
            group("workers", &["echo", "sha256"]),
            group("images", &["image.>"]),
            group("thumbs", &["thumb"]),
        ];
        assert_eq!(resolve(&groups, &kind("thumb")).unwrap(), ["thumbs"]);
        assert_eq!(resolve(&groups, &kind("image.>")).unwrap(), ["images"]);
        assert_eq!(
            resolve(&groups, &Target::Group("workers".into())).unwrap(),
            ["workers"]
        );
    }

    #[test]
    fn a_kind_sharing_its_group_is_refused_with_what_to_do() {
        let groups = [
            group("workers", &["echo", "sha256"]),
            group("images", &["image.>"]),
        ];
        let err = resolve(&groups, &kind("echo")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Usage);
        let text = err.to_string();
        assert!(
            text.contains("shares group workers with echo, sha256"),
            "{text}"
        );
        assert!(text.contains("fleet pause --group workers"), "{text}");
        assert!(
            text.contains("fleet setup --group NAME --kinds 'echo'"),
            "{text}"
        );
        let err = resolve(&groups, &kind("image.resize")).unwrap_err();
        assert!(err.to_string().contains("shares group images"), "{err}");
        let all = [group("workers", &[])];
        let err = resolve(&all, &kind("echo")).unwrap_err();
        assert!(err.to_string().contains("with every other kind"), "{err}");
    }

    #[test]
    fn a_kind_no_group_takes_is_refused() {
        let groups = [group("images", &["image.>"])];
        let err = resolve(&groups, &kind("echo")).unwrap_err();
        assert!(
            err.to_string()
                .contains("no group takes kind echo (groups: images)"),
            "{err}"
        );
        assert!(resolve(&[], &kind("echo")).is_err());
    }

    #[test]
    fn until_takes_a_time_or_a_duration() {
        let now = humantime::parse_rfc3339("2026-12-01T09:00:00Z").unwrap();
        assert_eq!(
            parse_until("10m", now).unwrap(),
            now + Duration::from_secs(600)
        );
        assert_eq!(parse_until("2026-12-01T10:00:00+01:00", now).unwrap(), now);
        assert!(parse_until("0s", now).is_err());
        assert!(parse_until("later", now).is_err());
        assert_eq!(until_text(now + INDEFINITE, now), "resumed");
        assert_eq!(
            until_text(now + Duration::from_secs(60), now),
            "2026-12-01T09:01:00Z"
        );
    }
}
