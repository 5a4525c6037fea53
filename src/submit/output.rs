//! How `fleet submit` shows results: raw, JSON lines or one line per task,
//! an optional progress bar, and the summary at the end.

use std::fmt;
use std::io::{self, Write};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

/// How each result is printed on standard output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// The result bytes, one result per line; errors go to standard error.
    #[default]
    Raw,
    /// One JSON object per line: id, kind, status, node, attempt, result, error.
    Json,
    /// `task <id> on <node> (attempt N): <result>`, for people.
    Line,
}

/// One task's end, as the submitter saw it.
#[derive(Debug, Clone)]
pub struct TaskResult {
    /// The task id.
    pub id: String,
    /// The task kind.
    pub kind: String,
    /// Ok, or failed with code and message.
    pub error: Option<(u16, String)>,
    /// The node that ran it, when a node answered.
    pub node: Option<String>,
    /// Which attempt answered.
    pub attempt: Option<u32>,
    /// The result bytes.
    pub payload: Bytes,
}

#[derive(Serialize)]
struct JsonLine<'a> {
    id: &'a str,
    kind: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<u32>,
    result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
}

/// Writes results in one [`Format`].
pub struct Printer<W: Write> {
    format: Format,
    out: W,
}

impl<W: Write> Printer<W> {
    /// A printer writing to `out`.
    pub fn new(format: Format, out: W) -> Self {
        Printer { format, out }
    }

    /// Prints one result.
    ///
    /// # Errors
    /// When standard output is gone (a closed pipe).
    pub fn print(&mut self, r: &TaskResult) -> io::Result<()> {
        match self.format {
            Format::Raw => match &r.error {
                None => {
                    self.out.write_all(&r.payload)?;
                    if !r.payload.ends_with(b"\n") {
                        self.out.write_all(b"\n")?;
                    }
                }
                Some((code, message)) => eprintln!("task {} failed ({code}): {message}", r.id),
            },
            Format::Json => {
                let (result, encoding) = text_or_base64(&r.payload);
                let line = JsonLine {
                    id: &r.id,
                    kind: &r.kind,
                    status: if r.error.is_none() { "ok" } else { "error" },
                    node: r.node.as_deref(),
                    attempt: r.attempt,
                    result,
                    encoding,
                    error: r.error.as_ref().map(|(_, m)| m.as_str()),
                    code: r.error.as_ref().map(|(c, _)| *c),
                };
                serde_json::to_writer(&mut self.out, &line)?;
                self.out.write_all(b"\n")?;
            }
            Format::Line => {
                let node = r.node.as_deref().unwrap_or("no node");
                let attempt = r
                    .attempt
                    .map(|a| format!(" (attempt {a})"))
                    .unwrap_or_default();
                match &r.error {
                    None => {
                        let (text, _) = text_or_base64(&r.payload);
                        writeln!(
                            self.out,
                            "task {} on {node}{attempt}: {}",
                            r.id,
                            text.trim_end()
                        )?;
                    }
                    Some((code, message)) => {
                        writeln!(
                            self.out,
                            "task {} on {node}{attempt}: error {code}: {message}",
                            r.id
                        )?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Flushes what was printed.
    ///
    /// # Errors
    /// When standard output is gone.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn text_or_base64(payload: &[u8]) -> (String, Option<&'static str>) {
    match std::str::from_utf8(payload) {
        Ok(text) => (text.to_string(), None),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(payload),
            Some("base64"),
        ),
    }
}

/// The progress bar on standard error: drawn only on a terminal.
pub fn progress_bar(total: Option<u64>, enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    let template = if total.is_some() {
        "{bar:40} {pos}/{len} tasks {per_sec} eta {eta} {msg}"
    } else {
        "{spinner} {pos} tasks {per_sec} {msg}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// Counts and timings of one `fleet submit` run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Tasks read from the input.
    pub tasks: u64,
    /// Tasks whose result was ok.
    pub ok: u64,
    /// Tasks whose result was an error (or that could not be submitted).
    pub failed: u64,
    /// Tasks with no result within the timeout.
    pub timed_out: u64,
    /// Results already collected by an earlier run of the same batch.
    pub resumed: u64,
    /// Results that arrived a second time and were dropped.
    pub duplicates: u64,
    /// Wall time of the run, in seconds.
    pub seconds: f64,
    /// Submit-to-result latency percentiles, in microseconds.
    pub latency_us: Latency,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl Summary {
    /// Whether every task succeeded.
    pub fn all_ok(&self) -> bool {
        self.failed == 0 && self.timed_out == 0 && self.ok == self.tasks
    }

    /// Tasks per second over the whole run.
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.tasks as f64 / self.seconds
        } else {
            0.0
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} tasks: {} ok, {} failed, {} timed out in {} ({:.0} tasks/s)",
            self.tasks,
            self.ok,
            self.failed,
            self.timed_out,
            humantime::format_duration(Duration::from_millis((self.seconds * 1000.0) as u64)),
            self.rate()
        )?;
        if self.resumed > 0 {
            write!(f, ", {} collected from an earlier run", self.resumed)?;
        }
        if self.duplicates > 0 {
            write!(f, ", {} duplicate results dropped", self.duplicates)?;
        }
        Ok(())
    }
}
