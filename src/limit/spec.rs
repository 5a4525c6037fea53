//! Limits as plain values, and the pure arithmetic around them: parsing
//! `20/s`, the JSON a limit is stored as, the names of permits in the
//! `fleet-permits` bucket, lease times and the spacing of rate-limited
//! starts. Nothing here does I/O; `super` and the node's gate do.
//!
//! | stored in `fleet-limits` under the kind | JSON (every field optional)                       |
//! |------------------------------------------|--------------------------------------------------|
//! | `sleep`                                  | `{"concurrency":3,"rate":"20/s"}`                |
//! | `crawl`                                  | `{"per_key_concurrency":2,"per_key_rate":"5/m"}` |

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Most starts a rate may allow per period, and most permits a
/// concurrency limit may have (each is a key of `fleet-permits`).
pub const MAX_LIMIT: u32 = 100_000;

/// At most `count` starts per `per` (one second, minute or hour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Starts allowed per period (at least 1).
    pub count: u32,
    /// The period.
    pub per: Duration,
}

impl Rate {
    /// The spacing between two starts: starts are spread evenly, so no
    /// window of one period ever holds more than `count` of them (+1 at
    /// its edge).
    pub fn interval(&self) -> Duration {
        self.per / self.count.max(1)
    }
}

impl FromStr for Rate {
    type Err = String;

    /// `20/s`, `100/m`, `5/h` (also `/sec`, `/min`, `/hour`).
    fn from_str(s: &str) -> Result<Self, String> {
        let (count, unit) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("rate {s:?}: write it as N/s, N/m or N/h"))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("rate {s:?}: {count:?} is not a whole number"))?;
        if count == 0 || count > MAX_LIMIT {
            return Err(format!("rate {s:?}: the count must be 1 to {MAX_LIMIT}"));
        }
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => return Err(format!("rate {s:?}: unit {other:?} is not s, m or h")),
        };
        Ok(Rate { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

impl Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The limits of one kind, across every node. `None`: no such limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// At most this many running at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// At most this many started per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    /// At most this many running at once with the same `Task-Key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_key_concurrency: Option<u32>,
    /// At most this many started per period with the same `Task-Key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_key_rate: Option<Rate>,
}

impl Limit {
    /// Whether it limits anything.
    pub fn is_empty(&self) -> bool {
        *self == Limit::default()
    }

    /// Whether it limits tasks by their key.
    pub fn per_key(&self) -> bool {
        self.per_key_concurrency.is_some() || self.per_key_rate.is_some()
    }

    /// Checks the numbers.
    ///
    /// # Errors
    /// Why the limit is refused.
    pub fn check(&self) -> Result<(), String> {
        for (name, n) in [
            ("concurrency", self.concurrency),
            ("per-key concurrency", self.per_key_concurrency),
        ] {
            if let Some(n) = n {
                if n == 0 || n > MAX_LIMIT {
                    return Err(format!("{name} must be 1 to {MAX_LIMIT}, not {n}"));
                }
            }
        }
        if self.is_empty() {
            return Err("no limit given: name at least one".into());
        }
        Ok(())
    }

    /// Reads a stored limit (what `fleet limit set` or `nats kv put` wrote).
    ///
    /// # Errors
    /// Why the value is not a limit.
    pub fn from_json(value: &[u8]) -> Result<Limit, String> {
        let limit: Limit = serde_json::from_slice(value).map_err(|e| e.to_string())?;
        limit.check()?;
        Ok(limit)
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(n) = self.concurrency {
            parts.push(format!("concurrency {n}"));
        }
        if let Some(r) = self.rate {
            parts.push(format!("rate {r}"));
        }
        if let Some(n) = self.per_key_concurrency {
            parts.push(format!("per-key concurrency {n}"));
        }
        if let Some(r) = self.per_key_rate {
            parts.push(format!("per-key rate {r}"));
        }
        f.write_str(&parts.join(", "))
    }
}

/// Checks that `kind` can name a key of `fleet-limits`: dot-separated
/// tokens of letters, digits, `_`, `-`, `=`, `/` (no wildcards).
///
/// # Errors
/// Why it cannot.
pub fn check_kind(kind: &str) -> Result<(), String> {
    let ok = !kind.is_empty()
        && kind.split('.').all(|t| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '=' | '/'))
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "kind {kind:?} cannot be limited: use letters, digits, _ - = / and dots"
        ))
    }
}

/// Keys of `fleet-permits`. The fixed first tokens keep names apart
/// whatever dots a kind has: `c.<i>.<kind>` is permit `i` of a kind's
/// concurrency, `k.<key>.<i>.<kind>` of one key's; `r.<kind>` and
/// `rk.<key>.<kind>` hold the next start a rate allows. A tenant's key is
/// `<tenant>/<key>`.
pub mod names {
    /// Permit `i` of `kind`'s concurrency.
    pub fn permit(kind: &str, i: u32) -> String {
        format!("c.{i}.{kind}")
    }

    /// Permit `i` of key `key`'s concurrency within `kind`.
    pub fn key_permit(kind: &str, key: &str, i: u32) -> String {
        format!("k.{key}.{i}.{kind}")
    }

    /// The rate state of `kind`.
    pub fn rate(kind: &str) -> String {
        format!("r.{kind}")
    }

    /// The rate state of key `key` within `kind`.
    pub fn key_rate(kind: &str, key: &str) -> String {
        format!("rk.{key}.{kind}")
    }

    /// The key a task is limited by: its `Task-Key`, under its tenant's name
    /// for a tenant's task (`/` cannot start a tenant's name).
    pub fn task_key(tenant: Option<&str>, key: &str) -> String {
        match tenant {
            Some(t) => format!("{t}/{key}"),
            None => key.to_string(),
        }
    }
}

/// How long a permit lives unless renewed: the group's `ack_wait` in whole
/// seconds (at least 1, the least `Nats-TTL` the server takes). A node that
/// dies loses its permits at most this long after its last renewal, about
/// when its tasks are handed to another node.
pub fn lease_ttl(ack_wait: Duration) -> Duration {
    Duration::from_secs(ack_wait.as_secs_f64().ceil().max(1.0) as u64)
}

/// How often a running task renews its permits: three times a lease.
pub fn renew_every(lease: Duration) -> Duration {
    (lease / 3).max(Duration::from_millis(300))
}

/// What a rate allows at `now_ms` (Unix milliseconds), given the next start
/// it allows (`next_ms`, from its state; `None`: never used or expired).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateStep {
    /// Start now, and store this as the next start allowed.
    Take {
        /// The new state.
        next_ms: u64,
    },
    /// Not before this instant (Unix milliseconds).
    Wait {
        /// When to try again.
        until_ms: u64,
    },
}

/// Evenly spaced starts: one every [`Rate::interval`], never ahead of time.
/// A start a little late (under a quarter of an interval: the node woke a
/// few milliseconds after the time) keeps the schedule, so small delays do
/// not add up to a lower rate; a later one starts a new schedule from now,
/// so no burst is saved up. In any window of one period at most R + 1
/// start, and R + 2 only if the times starts are recorded at vary by more
/// than three quarters of an interval.
pub fn rate_step(rate: &Rate, next_ms: Option<u64>, now_ms: u64) -> RateStep {
    let interval = rate.interval().as_millis().max(1) as u64;
    match next_ms {
        Some(next) if next > now_ms => RateStep::Wait { until_ms: next },
        Some(next) if (now_ms - next) * 4 < interval => RateStep::Take {
            next_ms: next + interval,
        },
        _ => RateStep::Take {
            next_ms: now_ms + interval,
        },
    }
}

/// How long a rate's state must live: until the next start it allows,
/// rounded up to whole seconds (past it, an absent state means "start").
pub fn rate_ttl(rate: &Rate) -> Duration {
    lease_ttl(rate.interval() + Duration::from_millis(999))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_and_print_per_second_minute_and_hour() {
        let r: Rate = "20/s".parse().unwrap();
        assert_eq!(
            r,
            Rate {
                count: 20,
                per: Duration::from_secs(1)
            }
        );
        assert_eq!(r.interval(), Duration::from_millis(50));
        assert_eq!(
            "100/m".parse::<Rate>().unwrap().per,
            Duration::from_secs(60)
        );
        assert_eq!(" 5 / h ".parse::<Rate>().unwrap().to_string(), "5/h");
        assert_eq!("3/min".parse::<Rate>().unwrap().to_string(), "3/m");
        for bad in [
            "", "20", "0/s", "-1/s", "x/s", "20/d", "1/", "/s", "100001/s", "1.5/s",
        ] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn limits_round_trip_through_their_json() {
        let limit = Limit::from_json(br#"{"concurrency":3,"per_key_rate":"5/m"}"#).unwrap();
        assert_eq!(limit.concurrency, Some(3));
        assert_eq!(limit.per_key_rate, Some("5/m".parse().unwrap()));
        assert!(limit.per_key());
        let json = serde_json::to_string(&limit).unwrap();
        assert_eq!(json, r#"{"concurrency":3,"per_key_rate":"5/m"}"#);
        assert_eq!(limit.to_string(), "concurrency 3, per-key rate 5/m");
        for bad in [
            &br#"{}"#[..],
            br#"{"concurrency":0}"#,
            br#"{"rate":"fast"}"#,
            br#"{"concurency":3}"#,
            b"not json",
        ] {
            assert!(Limit::from_json(bad).is_err());
        }
    }

    #[test]
    fn kinds_name_keys_and_permits_stay_apart() {
        assert!(check_kind("image.resize").is_ok());
        for bad in ["", "a..b", "a.*", "a.>", "a b", ".a"] {
            assert!(check_kind(bad).is_err(), "{bad:?}");
        }
        assert_eq!(names::permit("image.resize", 2), "c.2.image.resize");
        assert_eq!(names::key_permit("crawl", "acme", 0), "k.acme.0.crawl");
        assert_eq!(names::rate("crawl"), "r.crawl");
        assert_eq!(
            names::key_rate("crawl", "alice/acme"),
            "rk.alice/acme.crawl"
        );
        assert_eq!(names::task_key(Some("alice"), "acme"), "alice/acme");
        assert_eq!(names::task_key(None, "acme"), "acme");
    }

    #[test]
    fn leases_are_whole_seconds_renewed_three_times() {
        assert_eq!(
            lease_ttl(Duration::from_millis(1500)),
            Duration::from_secs(2)
        );
        assert_eq!(lease_ttl(Duration::from_millis(10)), Duration::from_secs(1));
        assert_eq!(lease_ttl(Duration::from_secs(30)), Duration::from_secs(30));
        assert_eq!(
            renew_every(Duration::from_secs(30)),
            Duration::from_secs(10)
        );
        assert_eq!(
            renew_every(Duration::from_secs(1)),
            Duration::from_nanos(333_333_333)
        );
    }

    #[test]
    fn rate_starts_are_spaced_evenly_and_never_early() {
        let r: Rate = "10/s".parse().unwrap();
        assert_eq!(rate_step(&r, None, 1000), RateStep::Take { next_ms: 1100 });
        assert_eq!(
            rate_step(&r, Some(1100), 1050),
            RateStep::Wait { until_ms: 1100 }
        );
        assert_eq!(
            rate_step(&r, Some(1100), 1100),
            RateStep::Take { next_ms: 1200 }
        );
        // Idle for a while: no burst is saved up.
        assert_eq!(
            rate_step(&r, Some(1100), 9000),
            RateStep::Take { next_ms: 9100 }
        );
        // A little late (woken 20 ms after its time): the schedule holds;
        // later than a quarter interval: a new schedule from now.
        assert_eq!(
            rate_step(&r, Some(1100), 1120),
            RateStep::Take { next_ms: 1200 }
        );
        assert_eq!(
            rate_step(&r, Some(1100), 1125),
            RateStep::Take { next_ms: 1225 }
        );
        // Starts as fast as allowed for 3 s, woken `late(n)` ms after the
        // time the n-th wait names.
        let run = |late: &dyn Fn(u64) -> u64| {
            let (mut next, mut starts, mut now, mut n) = (None, Vec::new(), 0, 0);
            while now < 3000 {
                match rate_step(&r, next, now) {
                    RateStep::Take { next_ms } => {
                        starts.push(now);
                        next = Some(next_ms);
                    }
                    RateStep::Wait { until_ms } => {
                        n += 1;
                        now = until_ms + late(n);
                    }
                }
            }
            starts
        };
        // On time: 10 in any second.
        let starts = run(&|_| 0);
        let most = |starts: &[u64]| {
            starts
                .iter()
                .map(|&t| starts.iter().filter(|&&s| s >= t && s < t + 1000).count())
                .max()
                .unwrap()
        };
        assert_eq!(most(&starts), 10);
        // Woken late by 0-19 ms each time: still 30 starts in 3 s, never
        // more than 11 in any second.
        let starts = run(&|n| (n * 37 + 61) % 20);
        assert!(most(&starts) <= 11, "{starts:?}");
        assert!(starts.len() >= 29, "{} starts in 3 s at 10/s", starts.len());
        assert_eq!(rate_ttl(&r), Duration::from_secs(2));
        assert_eq!(rate_ttl(&"1/h".parse().unwrap()), Duration::from_secs(3601));
    }
}
