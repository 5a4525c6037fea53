//! What processes cost: CPU seconds and peak resident memory.
//!
//! CPU of a process that ends comes from `getrusage(RUSAGE_CHILDREN)`
//! before and after it is reaped (exact to the microsecond, as long as
//! children are reaped one at a time, which this single-threaded driver
//! does); CPU of a process still running (the server) from `/proc/<pid>/stat`;
//! peak memory from `VmHWM` (`ru_maxrss` would keep the forking parent's peak).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use nix::sys::resource::{getrusage, UsageWho};

/// Linux's clock tick for `/proc/<pid>/stat` (USER_HZ).
const CLK_TCK: f64 = 100.0;

/// CPU seconds (user + system) of the children reaped so far.
fn children_cpu() -> f64 {
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage of children");
    let tv = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    tv(usage.user_time()) + tv(usage.system_time())
}

/// utime + stime of a running process, in seconds (to the clock tick).
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / CLK_TCK
}

/// Peak resident set of a running process, in MiB (0 once it is gone).
pub fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A process that ran to its end.
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    /// Its exit code (-1 when killed by a signal).
    pub code: i32,
    /// Wall seconds.
    pub wall: f64,
    /// CPU seconds.
    pub cpu: f64,
    /// Peak resident set, MiB.
    pub rss_mib: f64,
}

/// Runs `cmd` to its end (standard error to `log`), sampling its peak RSS
/// every 10 ms; kills it after `timeout`.
pub fn run_measured(mut cmd: Command, log: &Path, timeout: Duration) -> anyhow::Result<Finished> {
    cmd.stderr(std::fs::File::create(log).context("creating a log")?);
    let before = children_cpu();
    let started = Instant::now();
    let mut child = cmd.spawn().context("starting a measured process")?;
    let mut rss: f64 = 0.0;
    let status = loop {
        rss = rss.max(peak_rss_mib(child.id()));
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{:?} did not finish within {timeout:?}; see {}",
                cmd.get_program(),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(Finished {
        code: status.code().unwrap_or(-1),
        wall: started.elapsed().as_secs_f64(),
        cpu: children_cpu() - before,
        rss_mib: rss,
    })
}

/// Kills a running process; returns its CPU seconds and peak RSS (MiB).
pub fn kill_measured(child: &mut Child) -> anyhow::Result<(f64, f64)> {
    if let Some(status) = child.try_wait()? {
        bail!("process {} exited early ({status})", child.id());
    }
    let rss = peak_rss_mib(child.id());
    let before = children_cpu();
    child.kill()?;
    child.wait()?;
    Ok((children_cpu() - before, rss))
}

/// Starts `cmd` with standard error to `log` and no standard input/output.
pub fn spawn_logged(mut cmd: Command, log: &Path) -> anyhow::Result<Child> {
    cmd.stdout(Stdio::null());
    spawn_logged_to(cmd, log)
}

/// Starts `cmd` with standard error to `log`, no standard input, and
/// standard output wherever `cmd` already sends it (a summary file).
pub fn spawn_logged_to(mut cmd: Command, log: &Path) -> anyhow::Result<Child> {
    cmd.stdin(Stdio::null())
        .stderr(std::fs::File::create(log).context("creating a log")?);
    cmd.spawn().context("starting a process")
}

/// Waits for a running process that ends by itself (apalis's worker, once
/// it has its jobs), sampling its peak RSS; kills it after `timeout`.
pub fn wait_measured(child: &mut Child, timeout: Duration) -> anyhow::Result<Finished> {
    let before = children_cpu();
    let started = Instant::now();
    let mut rss: f64 = 0.0;
    let status = loop {
        rss = rss.max(peak_rss_mib(child.id()));
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!("process {} did not end within {timeout:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(Finished {
        code: status.code().unwrap_or(-1),
        wall: started.elapsed().as_secs_f64(),
        cpu: children_cpu() - before,
        rss_mib: rss,
    })
}

/// Waits until `log` contains `needle`; fails when `child` exits first or
/// `timeout` passes.
pub fn wait_for_log(
    child: &mut Child,
    log: &Path,
    needle: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("exited ({status}) before {needle:?}:\n{}", tail(&text));
        }
        if started.elapsed() > timeout {
            bail!("no {needle:?} within {timeout:?}:\n{}", tail(&text));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last 2,000 bytes of a log.
pub fn tail(text: &str) -> &str {
    let mut start = text.len().saturating_sub(2000);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}
