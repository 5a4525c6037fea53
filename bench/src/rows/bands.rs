//! Rows of priorities (queue wait per band behind a low flood) and of
//! limits (what a concurrency limit costs per start; a rate limit held).

use super::*;
use crate::config::{
    LIMIT_CONCURRENCY, PRIO_CONCURRENCY, PRIO_NODES, PRIO_SLEEP, PRIO_SLEEP_S, RATE_NODES,
};
use crate::scenarios::BandWaits;

/// The bound: the high band's p99 wait under 10 % of the drain.
const HIGH_P99_OF_DRAIN: f64 = 0.10;

/// p50 and p99 queue wait of the high, normal and low bands, each held to
/// the low flood's drain time (ratio = the fraction of it), then the drain
/// held to the ideal (every slot busy from the first moment).
pub(super) fn priority_rows(x: &Ctx<'_>, r: &mut Vec<Row>) {
    let name = "fleet_priorities";
    let g = format!(
        "priorities: {PRIO_NODES} nodes x {PRIO_CONCURRENCY} slots, sleep {PRIO_SLEEP}, \
         weights 6:3:1 (queue wait; ratio = fraction of the low drain)"
    );
    let band = |f: fn(&BandWaits) -> f64| x.median(name, |run| run.bands.as_ref().map(f));
    let drain_ms = band(|b| b.drain_s * 1e3);
    let (low, high) = (x.c.prio_low, x.c.prio_high);
    type Pick = fn(&BandWaits) -> f64;
    let waits: [(&str, &str, Pick, Option<Target>, String); 6] = [
        (
            "prio_high_wait_p50",
            "high p50",
            |b| b.high_p50_ms,
            None,
            format!(
                "{high} high tasks submitted once a quarter of {low} low ones (window {low}) \
                 were queued; wait = Task-Started minus the start of its band's submit"
            ),
        ),
        (
            "prio_high_wait_p99",
            "high p99",
            |b| b.high_p99_ms,
            Some(Target::RatioAtMost(HIGH_P99_OF_DRAIN)),
            "the issue's bound: under 10 % of the low flood's drain".into(),
        ),
        (
            "prio_normal_wait_p50",
            "normal p50",
            |b| b.normal_p50_ms,
            None,
            format!(
                "{high} normal tasks submitted once the high batch was done, flood still queued"
            ),
        ),
        (
            "prio_normal_wait_p99",
            "normal p99",
            |b| b.normal_p99_ms,
            None,
            String::new(),
        ),
        (
            "prio_low_wait_p50",
            "low p50",
            |b| b.low_p50_ms,
            None,
            "the flood itself, from the start of its submit: its backlog's length".into(),
        ),
        (
            "prio_low_wait_p99",
            "low p99",
            |b| b.low_p99_ms,
            None,
            String::new(),
        ),
    ];
    for (id, label, pick, target, note) in waits {
        r.push(row(
            id,
            &g,
            label,
            band(pick),
            "ms",
            drain_ms,
            Some("low drain"),
            target,
            note,
        ));
    }
    let slots = (PRIO_NODES * PRIO_CONCURRENCY) as f64;
    let ideal = low as f64 * PRIO_SLEEP_S / slots;
    r.push(row(
        "prio_low_drain",
        &g,
        "low flood drain",
        band(|b| b.drain_s),
        "s",
        Some(ideal),
        Some("ideal"),
        None,
        format!(
            "{low} low tasks, submit start to last end, {} high and normal tasks run meanwhile; \
             ideal = {low} x {PRIO_SLEEP} / {slots} slots; low tasks that finished while the \
             high batch ran: {:.0} (median; 0 would be starvation)",
            2 * high,
            band(|b| b.low_during_high).unwrap_or(0.0)
        ),
    ));
}

/// Echo on one node with a concurrency limit that never binds (its cost
/// per start) against the same with none, in the same round; and the
/// starts under `--rate R/s`.
pub(super) fn limit_rows(x: &Ctx<'_>, r: &mut Vec<Row>) {
    let g = "limits: fleet limit set, enforced by permits in NATS";
    let (limited, none) = ("fleet_limit_concurrency", "fleet_limit_none");
    let cost_us = x
        .rate(limited)
        .zip(x.rate(none))
        .map_or(0.0, |(l, n)| 1e6 / l - 1e6 / n);
    r.push(row(
        "limit_concurrency_echo",
        g,
        &format!("echo, 1 node, --concurrency {LIMIT_CONCURRENCY}"),
        x.rate(limited),
        "tasks/s",
        x.rate(none),
        Some("fleet, no limit"),
        None,
        format!(
            "{} kept tasks, window 256, as many permits as the node's slots (the limit costs, \
             never binds): {cost_us:.0} us more per task",
            x.c.limit_tasks
        ) + &x.per_round(limited, none)
            + &x.duplicates(limited),
    ));
    let rate = "fleet_limit_rate";
    let per_s = f64::from(x.c.rate_per_s);
    r.push(row(
        "limit_rate_starts",
        g,
        &format!(
            "sleep 10ms, {RATE_NODES} nodes, --rate {}/s",
            x.c.rate_per_s
        ),
        x.median(rate, |run| run.starts_per_s),
        "starts/s",
        Some(per_s),
        Some("--rate"),
        None,
        format!(
            "{} tasks; (tasks - 1) / (last start - first start), read from Task-Started",
            x.c.rate_tasks
        ),
    ));
    r.push(row(
        "limit_rate_most_1s",
        g,
        "most starts in any 1 s",
        x.median(rate, |run| run.most_starts_1s),
        "starts",
        Some(per_s),
        Some("--rate"),
        Some(Target::ValueAtMost(per_s + 1.0)),
        "the issue's bound: the rate, +1 for a period's boundary".into(),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_waits_are_fractions_of_the_drain_and_high_p99_is_held_to_ten_percent() {
        let waits = |high_p99_ms: f64| Run {
            tasks: 1100.0,
            seconds: 5.0,
            tasks_per_s: 220.0,
            steady_tasks_per_s: 220.0,
            bands: Some(BandWaits {
                high_p50_ms: 100.0,
                high_p99_ms,
                normal_p50_ms: 150.0,
                normal_p99_ms: 300.0,
                low_p50_ms: 2500.0,
                low_p99_ms: 4950.0,
                drain_s: 5.0,
                low_during_high: 12.0,
            }),
            ..Default::default()
        };
        let mut runs = Runs::new();
        runs.insert(
            "fleet_priorities".into(),
            vec![waits(200.0), waits(600.0), waits(250.0)],
        );
        let rows = rows(&runs, &crate::config::QUICK, 2);
        let find = |id: &str| rows.iter().find(|r| r.id == id).unwrap();
        let p99 = find("prio_high_wait_p99");
        assert_eq!((p99.value, p99.ceiling), (Some(250.0), Some(5000.0)));
        assert!((p99.ratio.unwrap() - 0.05).abs() < 1e-9);
        assert_eq!(p99.pass, Some(true));
        let mut slow = Runs::new();
        slow.insert("fleet_priorities".into(), vec![waits(600.0)]);
        let rows = super::super::rows(&slow, &crate::config::QUICK, 2);
        let p99 = rows.iter().find(|r| r.id == "prio_high_wait_p99").unwrap();
        assert_eq!(p99.pass, Some(false));
        let drain = find("prio_low_drain");
        assert_eq!(drain.value, Some(5.0));
        assert!(
            drain.note.contains("while the high batch ran: 12"),
            "{}",
            drain.note
        );
    }

    #[test]
    fn a_limit_costs_per_task_against_no_limit_and_a_rate_is_held_to_its_bound() {
        let echo = |rate: f64| Run {
            tasks: 1000.0,
            seconds: 1000.0 / rate,
            tasks_per_s: rate,
            steady_tasks_per_s: rate,
            ..Default::default()
        };
        let mut runs = Runs::new();
        runs.insert("fleet_limit_none".into(), vec![echo(10_000.0)]);
        runs.insert("fleet_limit_concurrency".into(), vec![echo(2_000.0)]);
        runs.insert(
            "fleet_limit_rate".into(),
            vec![Run {
                starts_per_s: Some(49.0),
                most_starts_1s: Some(52.0),
                ..echo(45.0)
            }],
        );
        let rows = rows(&runs, &crate::config::QUICK, 2);
        let find = |id: &str| rows.iter().find(|r| r.id == id).unwrap();
        let conc = find("limit_concurrency_echo");
        assert!((conc.ratio.unwrap() - 0.2).abs() < 1e-9);
        assert!(conc.note.contains("400 us more per task"), "{}", conc.note);
        assert_eq!(find("limit_rate_starts").value, Some(49.0));
        // QUICK's rate is 50/s: 52 in one second is over 50 + 1.
        assert_eq!(find("limit_rate_most_1s").pass, Some(false));
    }
}
