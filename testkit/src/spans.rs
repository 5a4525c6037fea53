//! When tasks ran, read from the `Task-Started` / `Task-Finished` times
//! their results carry (`started`, `finished` in `fleet submit --json`).

use std::time::{Duration, SystemTime};

/// Most tasks running at one instant, from their (started, finished) spans.
/// At the same instant an end comes before a start.
pub fn most_at_once(spans: &[(SystemTime, SystemTime)]) -> usize {
    let mut events: Vec<(SystemTime, i32)> =
        spans.iter().flat_map(|&(s, f)| [(s, 1), (f, -1)]).collect();
    events.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in events {
        now += step;
        most = most.max(now);
    }
    most as usize
}

/// Most starts within any window of `window` after a start.
pub fn most_starts_within(starts: &[SystemTime], window: Duration) -> usize {
    starts
        .iter()
        .map(|t| {
            starts
                .iter()
                .filter(|s| **s >= *t && **s < *t + window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn overlaps_and_windows_are_counted() {
        let spans = [(at(0), at(10)), (at(5), at(15)), (at(10), at(20))];
        // The first ends as the third starts: two at once, not three.
        assert_eq!(most_at_once(&spans), 2);
        let starts = [at(0), at(400), at(999), at(1000)];
        assert_eq!(most_starts_within(&starts, Duration::from_secs(1)), 3);
    }
}
