//! The standard `process_*` metrics (CPU, memory, open files, start time)
//! that Prometheus client libraries export, read from `/proc/self` at each
//! scrape. prometheus-client ships no process collector.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ: 100 on Linux).
const TICKS: f64 = 100.0;

#[derive(Debug, Default)]
pub(super) struct ProcessCollector;

/// Figures from `/proc/self`, `None` where unreadable (not Linux).
#[derive(Debug, Default, PartialEq)]
struct Figures {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<f64>,
    virtual_bytes: Option<f64>,
    start_time_seconds: Option<f64>,
    open_fds: Option<f64>,
}

/// Reads `/proc/<pid>/stat` fields after the command (which may hold spaces
/// and parentheses, hence the last `)`).
fn parse_stat(stat: &str, boot_time: Option<f64>, page_size: f64) -> Figures {
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return Figures::default();
    };
    // Fields from the third (state) on: utime is field 14, so index 11 here.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    Figures {
        cpu_seconds: num(11).zip(num(12)).map(|(u, s)| (u + s) / TICKS),
        virtual_bytes: num(20),
        resident_bytes: num(21).map(|pages| pages * page_size),
        start_time_seconds: boot_time
            .zip(num(19))
            .map(|(boot, start)| boot + start / TICKS),
        open_fds: None,
    }
}

fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn read() -> Figures {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let mut figures = parse_stat(&stat, boot_time(), 4096.0);
    figures.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as f64);
    figures
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let f = read();
        if let Some(v) = f.cpu_seconds {
            let counter = ConstCounter::new(v);
            let metric = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                counter.metric_type(),
            )?;
            counter.encode(metric)?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                f.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                f.virtual_bytes,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                f.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                f.open_fds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let gauge = ConstGauge::new(v);
                let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
                gauge.encode(metric)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command() {
        // pid (comm) state ppid ... utime=14 stime=15 ... starttime=22 vsize=23 rss=24
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1000 123456 789 18446744073709551615";
        let f = parse_stat(stat, Some(1_700_000_000.0), 4096.0);
        assert_eq!(f.cpu_seconds, Some(3.0));
        assert_eq!(f.virtual_bytes, Some(123_456.0));
        assert_eq!(f.resident_bytes, Some(789.0 * 4096.0));
        assert_eq!(f.start_time_seconds, Some(1_700_000_010.0));
        assert_eq!(parse_stat("garbage", None, 4096.0), Figures::default());
    }

    #[test]
    fn this_process_is_readable() {
        let f = read();
        assert!(f.cpu_seconds.is_some() && f.resident_bytes.unwrap() > 0.0);
        assert!(f.open_fds.unwrap() >= 3.0);
    }
}
