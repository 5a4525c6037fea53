//! How `fleet submit` shows each task's end: raw bytes, JSON lines, or one
//! line per task for people.

use std::io;

use base64::Engine as _;
use fleet::{Error, ErrorKind, TaskEnd, TaskStatus};
use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// How each result is printed on standard output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum Format {
    /// The result bytes, one result per line; errors go to standard error.
    #[default]
    Raw,
    /// One JSON object per line: id, kind, status, node, attempt, result, error, code.
    Json,
    /// `task <id> on <node> (attempt N): <result>`, for people.
    Line,
}

/// The process exit code a command ended with.
pub(crate) type ExitCode = i32;

/// The error of a failed write to standard output.
pub(crate) fn out_err(e: io::Error) -> Error {
    Error::with_source(ErrorKind::Io, "writing to standard output", e)
}

/// Writes `text` to standard output.
pub(crate) async fn print(text: String) -> Result<(), Error> {
    let mut out = tokio::io::stdout();
    out.write_all(text.as_bytes()).await.map_err(out_err)?;
    out.flush().await.map_err(out_err)
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
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    started: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished: Option<&'a str>,
}

/// Writes task ends in one [`Format`].
pub(crate) struct Printer<W> {
    format: Format,
    out: W,
}

impl<W: AsyncWrite + Unpin> Printer<W> {
    pub(crate) fn new(format: Format, out: W) -> Self {
        Printer { format, out }
    }

    /// Prints one task's end.
    pub(crate) async fn print(&mut self, end: &TaskEnd) -> io::Result<()> {
        let line = self.render(end);
        if !line.is_empty() {
            self.out.write_all(&line).await?;
        }
        Ok(())
    }

    /// The bytes one task's end is shown as (errors of the raw format go to
    /// standard error here).
    fn render(&self, end: &TaskEnd) -> Vec<u8> {
        let mut out = Vec::new();
        match self.format {
            Format::Raw => match end.status {
                TaskStatus::Ok => {
                    out.extend_from_slice(&end.payload);
                    if !end.payload.ends_with(b"\n") {
                        out.push(b'\n');
                    }
                }
                _ => eprintln!(
                    "task {} {} ({}): {}",
                    end.id,
                    match end.status.label() {
                        "error" => "failed",
                        other => other,
                    },
                    end.status.code().unwrap_or_default(),
                    end.status.message().unwrap_or_default()
                ),
            },
            Format::Json => {
                let (result, encoding) = text_or_base64(&end.payload);
                let line = JsonLine {
                    id: &end.id,
                    kind: &end.kind,
                    status: end.status.label(),
                    node: end.node.as_deref(),
                    attempt: end.attempt,
                    result,
                    encoding,
                    error: end.status.message(),
                    code: end.status.code(),
                    started: end.started.as_deref(),
                    finished: end.finished.as_deref(),
                };
                serde_json::to_writer(&mut out, &line).expect("a JSON line serializes");
                out.push(b'\n');
            }
            Format::Line => {
                let node = end.node.as_deref().unwrap_or("no node");
                let attempt = end
                    .attempt
                    .map(|a| format!(" (attempt {a})"))
                    .unwrap_or_default();
                let text = match end.status {
                    TaskStatus::Ok => text_or_base64(&end.payload).0.trim_end().to_string(),
                    _ => format!(
                        "error {}: {}",
                        end.status.code().unwrap_or_default(),
                        end.status.message().unwrap_or_default()
                    ),
                };
                out.extend_from_slice(
                    format!("task {} on {node}{attempt}: {text}\n", end.id).as_bytes(),
                );
            }
        }
        out
    }

    /// Flushes what was printed.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        self.out.flush().await
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
