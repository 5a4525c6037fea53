//! What a node knows of `fleet-permits`, kept in step by a watch, and the
//! pure plan of what to write to start one task under its kind's limit.
//!
//! | limit of the kind      | plan (from the view; no I/O)                                   |
//! |------------------------|-----------------------------------------------------------------|
//! | `concurrency` N        | wait while N permits `c.<i>.<kind>` are held; else take the first free `i < N` |
//! | `per_key_concurrency` N| the same with `k.<key>.<i>.<kind>`                               |
//! | `rate`, `per_key_rate` | wait until the next start the state allows; else write the next |
//!
//! Each write is a compare-and-set on the revision the view has for the
//! name (0: never written, or gone), so two nodes planning from the same
//! view cannot both win a permit: the loser reads the name again and tries
//! another. Counting every held `c.*.<kind>`, not only those below N, makes
//! a lowered limit hold back new starts until enough running tasks end.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;

use crate::limit::{names, rate_step, rate_ttl, Limit, Rate, RateStep};

/// The last write of one name: its revision and value (`None`: a marker,
/// deleted, purged or expired).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    rev: u64,
    value: Option<Bytes>,
}

/// The permits and rate states, by name.
#[derive(Debug, Default)]
pub(crate) struct View {
    entries: HashMap<String, Entry>,
    /// Held permits per counted group (`c.<kind>`, `k.<key>.<kind>`).
    held: HashMap<String, u32>,
}

/// The counted group of a permit name: `c.<i>.<kind>` counts in
/// `c.<kind>`, `k.<key>.<i>.<kind>` in `k.<key>.<kind>`; rate states in none.
fn counted(name: &str) -> Option<String> {
    let mut tokens = name.splitn(4, '.');
    match tokens.next()? {
        "c" => {
            let _i = tokens.next()?;
            let kind = name.splitn(3, '.').nth(2)?;
            Some(format!("c.{kind}"))
        }
        "k" => {
            let key = tokens.next()?;
            let _i = tokens.next()?;
            let kind = tokens.next()?;
            Some(format!("k.{key}.{kind}"))
        }
        _ => None,
    }
}

/// One write of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Write {
    pub(crate) name: String,
    /// The revision the name must still have.
    pub(crate) expect: u64,
    /// A permit, held (and renewed) while the task runs; else a rate state.
    pub(crate) lease: bool,
    /// A rate state's value (the next start allowed, Unix ms) and lifetime.
    pub(crate) rate: Option<(u64, Duration)>,
}

/// What to do to start a task of `kind` with key `key` now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Write these in order (permits first, rate states last).
    Write(Vec<Write>),
    /// Not now: until a permit comes back (`None`), or until this Unix ms.
    Wait(Option<u64>),
}

impl View {
    /// Records a write the watch (or a read) saw; older news is ignored.
    pub(crate) fn apply(&mut self, name: &str, rev: u64, value: Option<Bytes>) {
        if self.entries.get(name).is_some_and(|e| e.rev >= rev) {
            return;
        }
        let held_now = value.is_some();
        let before = self.entries.insert(name.to_string(), Entry { rev, value });
        let held_before = before.is_some_and(|e| e.value.is_some());
        if held_now == held_before {
            return;
        }
        if let Some(group) = counted(name) {
            let count = self.held.entry(group.clone()).or_default();
            if held_now {
                *count += 1;
            } else {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.held.remove(&group);
                }
            }
        }
    }

    /// Records what a read of `name` found, whatever the view had: the
    /// server may have dropped a marker without a word (`rev` 0).
    pub(crate) fn replace(&mut self, name: &str, rev: u64, value: Option<Bytes>) {
        if let Some(old) = self.entries.remove(name) {
            if old.value.is_some() {
                if let Some(group) = counted(name) {
                    if let Some(count) = self.held.get_mut(&group) {
                        *count = count.saturating_sub(1);
                    }
                }
            }
        }
        if rev > 0 {
            self.apply(name, rev, value);
        }
    }

    /// Forgets everything (before a watch reads its snapshot again).
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.held.clear();
    }

    /// The revision of `name` (0 when unknown) and whether it is held.
    fn last(&self, name: &str) -> (u64, Option<&Bytes>) {
        self.entries
            .get(name)
            .map_or((0, None), |e| (e.rev, e.value.as_ref()))
    }

    /// Held permits of a counted group.
    pub(crate) fn held(&self, group: &str) -> u32 {
        self.held.get(group).copied().unwrap_or(0)
    }

    /// Names known, for bounding memory.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Drops what is free (markers, spent rate states): the server forgets
    /// them too, and a write to a dropped name reads it again first.
    pub(crate) fn forget_free(&mut self, now_ms: u64) {
        self.entries.retain(|name, e| match &e.value {
            None => false,
            Some(v) if name.starts_with('r') => rate_next(Some(v)).is_some_and(|n| n > now_ms),
            Some(_) => true,
        });
    }

    /// The plan to start a task of `kind` (key `key`) under `limit` at `now_ms`.
    pub(crate) fn plan(&self, kind: &str, key: Option<&str>, limit: &Limit, now_ms: u64) -> Plan {
        let mut writes = Vec::new();
        let mut permit = |n: u32, group: String, name: &dyn Fn(u32) -> String| {
            if self.held(&group) >= n {
                return false;
            }
            match (0..n).map(name).find(|p| self.last(p).1.is_none()) {
                Some(p) => {
                    let expect = self.last(&p).0;
                    writes.push(Write {
                        name: p,
                        expect,
                        lease: true,
                        rate: None,
                    });
                    true
                }
                None => false,
            }
        };
        if let Some(n) = limit.concurrency {
            if !permit(n, format!("c.{kind}"), &|i| names::permit(kind, i)) {
                return Plan::Wait(None);
            }
        }
        if let (Some(n), Some(key)) = (limit.per_key_concurrency, key) {
            if !permit(n, format!("k.{key}.{kind}"), &|i| {
                names::key_permit(kind, key, i)
            }) {
                return Plan::Wait(None);
            }
        }
        let mut rates: Vec<(String, Rate)> = Vec::new();
        if let Some(r) = limit.rate {
            rates.push((names::rate(kind), r));
        }
        if let (Some(r), Some(key)) = (limit.per_key_rate, key) {
            rates.push((names::key_rate(kind, key), r));
        }
        let mut until = None;
        for (name, rate) in rates {
            let (expect, value) = self.last(&name);
            match rate_step(&rate, rate_next(value), now_ms) {
                RateStep::Take { next_ms } => writes.push(Write {
                    name,
                    expect,
                    lease: false,
                    rate: Some((next_ms, rate_ttl(&rate))),
                }),
                RateStep::Wait { until_ms } => until = until.max(Some(until_ms)),
            }
        }
        match until {
            Some(ms) => Plan::Wait(Some(ms)),
            None => Plan::Write(writes),
        }
    }
}

/// The next start a rate state allows (its value: Unix ms as text).
fn rate_next(value: Option<&Bytes>) -> Option<u64> {
    std::str::from_utf8(value?).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(v: &mut View, name: &str, rev: u64) {
        v.apply(name, rev, Some(Bytes::from_static(b"node-1")));
    }

    fn limit(json: &str) -> Limit {
        Limit::from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn permits_count_in_their_group_whatever_dots_the_kind_has() {
        assert_eq!(
            counted("c.2.image.resize").as_deref(),
            Some("c.image.resize")
        );
        assert_eq!(
            counted("k.acme.0.image.resize").as_deref(),
            Some("k.acme.image.resize")
        );
        assert_eq!(counted("r.sleep"), None);
        assert_eq!(counted("rk.acme.sleep"), None);
        let mut v = View::default();
        held(&mut v, "c.0.sleep", 3);
        held(&mut v, "c.1.sleep", 4);
        held(&mut v, "c.1.sleep", 4); // the watch repeats our own write
        assert_eq!(v.held("c.sleep"), 2);
        v.apply("c.0.sleep", 9, None);
        v.apply("c.0.sleep", 5, Some(Bytes::new())); // late news
        assert_eq!(v.held("c.sleep"), 1);
    }

    #[test]
    fn a_task_takes_the_first_free_permit_at_its_revision() {
        let mut v = View::default();
        let l = limit(r#"{"concurrency":2}"#);
        held(&mut v, "c.0.sleep", 3);
        v.apply("c.1.sleep", 7, None);
        let want = |name: &str, expect| Write {
            name: name.into(),
            expect,
            lease: true,
            rate: None,
        };
        assert_eq!(
            v.plan("sleep", None, &l, 0),
            Plan::Write(vec![want("c.1.sleep", 7)])
        );
        held(&mut v, "c.1.sleep", 8);
        assert_eq!(v.plan("sleep", None, &l, 0), Plan::Wait(None));
        // Lowered to 1 while two run: nothing starts until both are back under it.
        v.apply("c.1.sleep", 9, None);
        held(&mut v, "c.5.sleep", 10);
        assert_eq!(
            v.plan("sleep", None, &limit(r#"{"concurrency":2}"#), 0),
            Plan::Wait(None)
        );
        // Unknown names are written expecting revision 0.
        assert_eq!(
            v.plan("other", None, &l, 0),
            Plan::Write(vec![want("c.0.other", 0)])
        );
    }

    #[test]
    fn keys_are_limited_apart_and_only_when_a_task_has_one() {
        let mut v = View::default();
        let l = limit(r#"{"per_key_concurrency":1}"#);
        held(&mut v, "k.a.0.crawl", 2);
        assert_eq!(v.plan("crawl", Some("a"), &l, 0), Plan::Wait(None));
        let Plan::Write(w) = v.plan("crawl", Some("b"), &l, 0) else {
            panic!()
        };
        assert_eq!(w[0].name, "k.b.0.crawl");
        assert_eq!(v.plan("crawl", None, &l, 0), Plan::Write(vec![]));
    }

    #[test]
    fn rates_wait_for_their_next_start_and_come_after_permits() {
        let mut v = View::default();
        let l = limit(r#"{"concurrency":5,"rate":"10/s","per_key_rate":"1/s"}"#);
        let Plan::Write(w) = v.plan("api", Some("a"), &l, 1_000) else {
            panic!()
        };
        let names: Vec<_> = w.iter().map(|w| (w.name.as_str(), w.lease)).collect();
        assert_eq!(
            names,
            [("c.0.api", true), ("r.api", false), ("rk.a.api", false)]
        );
        assert_eq!(w[1].rate, Some((1_100, Duration::from_secs(2))));
        v.apply("r.api", 4, Some(Bytes::from_static(b"1100")));
        v.apply("rk.a.api", 5, Some(Bytes::from_static(b"2000")));
        assert_eq!(v.plan("api", Some("a"), &l, 1_050), Plan::Wait(Some(2_000)));
        assert!(matches!(
            v.plan("api", Some("b"), &l, 1_100),
            Plan::Write(_)
        ));
        v.forget_free(1_500);
        assert_eq!(v.len(), 1, "only the state still ahead stays");
    }
}
