//! Priority bands: `high`, `normal` (the default) and `low`.
//!
//! The server routes by subject, not by header, so a task's band is the
//! prefix of the subject it is published to:
//!
//! | band     | subject             | tenant's, in the fleet account     | due (delayed)        | group `g`'s consumer |
//! |----------|---------------------|------------------------------------|----------------------|----------------------|
//! | `high`   | `tasks-high.<kind>` | `tenant.<t>.tasks-high.<kind>`     | `due-high.<kind>`    | `g-high`             |
//! | `normal` | `tasks.<kind>`      | `tenant.<t>.tasks.<kind>`          | `due.<kind>`         | `g`                  |
//! | `low`    | `tasks-low.<kind>`  | `tenant.<t>.tasks-low.<kind>`      | `due-low.<kind>`     | `g-low`              |
//!
//! The subject decides. A task on `tasks.echo` with `Task-Priority: high`
//! or `low` is moved to its band by the node that takes it (see the node's
//! `moves`); a value that is not a band is refused (400), like any
//! malformed header.

use std::fmt;
use std::str::FromStr;

use crate::contract;

/// A task's priority band.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Priority {
    /// Started first.
    High,
    /// The default.
    #[default]
    Normal,
    /// Started when the others leave room, never starved.
    Low,
}

/// The bands from the highest down, the order of the arrays indexed by
/// [`Priority::index`].
pub const BANDS: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

impl Priority {
    /// 0 for high, 1 for normal, 2 for low.
    pub fn index(self) -> usize {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        }
    }

    /// `high`, `normal` or `low`.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// The prefix of this band's task subjects (`tasks-high.`).
    pub fn task_prefix(self) -> &'static str {
        match self {
            Priority::High => contract::TASK_HIGH_PREFIX,
            Priority::Normal => contract::TASK_PREFIX,
            Priority::Low => contract::TASK_LOW_PREFIX,
        }
    }

    /// The prefix this band's schedules fire into (`due-high.`).
    pub fn due_prefix(self) -> &'static str {
        match self {
            Priority::High => contract::DUE_HIGH_PREFIX,
            Priority::Normal => contract::DUE_PREFIX,
            Priority::Low => contract::DUE_LOW_PREFIX,
        }
    }

    /// The subject a task of `kind` in this band is published to.
    pub fn task_subject(self, kind: &str) -> String {
        format!("{}{kind}", self.task_prefix())
    }

    /// The subject a delayed task of `kind` in this band fires into.
    pub fn due_subject(self, kind: &str) -> String {
        format!("{}{kind}", self.due_prefix())
    }

    /// The consumer of group `group` for this band: the group's own name
    /// for normal, `<group>-high` and `<group>-low` for the others.
    pub fn consumer(self, group: &str) -> String {
        match self {
            Priority::Normal => group.to_string(),
            other => format!("{group}-{}", other.as_str()),
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "high" => Ok(Priority::High),
            "normal" => Ok(Priority::Normal),
            "low" => Ok(Priority::Low),
            other => Err(format!(
                "priority {other:?} is not one of high, normal, low"
            )),
        }
    }
}

/// The band and the rest (`<kind>`, or what follows the prefix) of a task
/// subject as the tenant sees it (`tasks-high.echo` → high, `echo`);
/// `None` outside every band.
pub fn split_band(subject: &str) -> Option<(Priority, &str)> {
    BANDS.iter().find_map(|band| {
        subject
            .strip_prefix(band.task_prefix())
            .map(|rest| (*band, rest))
    })
}

/// Whether a group name leaves room for its bands' consumers: a group
/// named `x-high` would be group `x`'s high band.
pub fn check_group_name(group: &str) -> Result<(), String> {
    if group.ends_with("-high") || group.ends_with("-low") {
        return Err(format!(
            "group {group:?}: a name ending in -high or -low is taken by a group's priority bands"
        ));
    }
    Ok(())
}

/// How the free slots of a node are shared by the bands that have work:
/// `6,3,1` by default (high, normal, low).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weights(pub [u32; 3]);

impl Default for Weights {
    fn default() -> Self {
        Weights([6, 3, 1])
    }
}

impl FromStr for Weights {
    type Err = String;

    /// `6,3,1`: three whole numbers of at least 1, high first.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        let [h, n, l] = parts[..] else {
            return Err(format!(
                "priority weights {s:?}: three numbers, high,normal,low (e.g. 6,3,1)"
            ));
        };
        let one = |p: &str| -> Result<u32, String> {
            match p.parse::<u32>() {
                Ok(w) if (1..=1000).contains(&w) => Ok(w),
                _ => Err(format!(
                    "priority weight {p:?}: a whole number from 1 to 1000 (0 would starve a band)"
                )),
            }
        };
        Ok(Weights([one(h)?, one(n)?, one(l)?]))
    }
}

impl fmt::Display for Weights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [h, n, l] = self.0;
        write!(f, "{h},{n},{l}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_are_subject_prefixes() {
        assert_eq!(
            Priority::High.task_subject("image.resize"),
            "tasks-high.image.resize"
        );
        assert_eq!(Priority::Normal.task_subject("echo"), "tasks.echo");
        assert_eq!(Priority::Low.task_subject("echo"), "tasks-low.echo");
        assert_eq!(Priority::High.due_subject("echo"), "due-high.echo");
        assert_eq!(Priority::Normal.due_subject("echo"), "due.echo");
        assert_eq!(split_band("tasks-high.a.b"), Some((Priority::High, "a.b")));
        assert_eq!(split_band("tasks.a"), Some((Priority::Normal, "a")));
        assert_eq!(split_band("tasks-low.a"), Some((Priority::Low, "a")));
        assert_eq!(split_band("tasksx.a"), None);
        assert_eq!(split_band("due.a"), None);
    }

    #[test]
    fn each_band_has_a_consumer_of_its_own() {
        assert_eq!(Priority::Normal.consumer("workers"), "workers");
        assert_eq!(Priority::High.consumer("workers"), "workers-high");
        assert_eq!(Priority::Low.consumer("workers"), "workers-low");
        assert!(check_group_name("workers").is_ok());
        assert!(check_group_name("workers-high").is_err());
        assert!(check_group_name("a-low").is_err());
    }

    #[test]
    fn priorities_parse_only_as_bands() {
        assert_eq!("high".parse(), Ok(Priority::High));
        assert_eq!(" low".parse(), Ok(Priority::Low));
        assert_eq!("normal".parse(), Ok(Priority::Normal));
        assert!("HIGH".parse::<Priority>().is_err());
        assert!("urgent".parse::<Priority>().is_err());
        assert_eq!(Priority::default(), Priority::Normal);
        assert_eq!(BANDS.map(Priority::index), [0, 1, 2]);
    }

    #[test]
    fn weights_are_three_positive_numbers() {
        assert_eq!("6,3,1".parse(), Ok(Weights([6, 3, 1])));
        assert_eq!(" 1, 1 ,1".parse(), Ok(Weights([1, 1, 1])));
        assert!("6,3".parse::<Weights>().is_err());
        assert!("6,3,0".parse::<Weights>().is_err());
        assert!("6,3,x".parse::<Weights>().is_err());
        assert!("6,3,1,1".parse::<Weights>().is_err());
        assert_eq!(Weights::default().to_string(), "6,3,1");
    }
}
