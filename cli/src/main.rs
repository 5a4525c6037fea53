//! The `fleet` binary: parse, set up logging, run a command of the library,
//! map the outcome to an exit code (0 ok, 1 a task failed or timed out, 2
//! usage, connection, credential or setup errors).

mod args;
mod cancel;
mod commands;
mod control;
mod dashboard;
mod limit;
mod output;
mod progress;
mod schedule;
mod submit;

use std::error::Error as _;

use clap::Parser;
use fleet::ErrorKind;
use tracing_subscriber::EnvFilter;

use args::{Cli, Command, LogFormat};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    // One thread by default: the work is I/O on one connection, and a
    // second worker thread costs more in wake-ups than it brings.
    let runtime = match cli.threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: starting the runtime: {err}");
            std::process::exit(2);
        }
    };
    std::process::exit(runtime.block_on(run(cli)));
}

async fn run(cli: Cli) -> i32 {
    let default_level = match cli.command {
        Command::Node(_) => "info,async_nats=warn",
        _ => "warn,async_nats=error",
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => logs.json().init(),
        // Colour only for a person at a terminal (not a file, not journald).
        LogFormat::Text => logs.with_ansi(colour()).init(),
    }
    match commands::run(cli, shutdown_signal()).await {
        Ok(code) => code,
        Err(err) => {
            // The error, then each cause, on one line.
            let mut line = format!("error: {err}");
            let mut source = err.source();
            while let Some(cause) = source {
                let cause_text = cause.to_string();
                if !line.ends_with(&cause_text) {
                    line.push_str(&format!(": {cause_text}"));
                }
                source = cause.source();
            }
            eprintln!("{line}");
            match err.kind() {
                ErrorKind::Io => 1,
                _ => 2,
            }
        }
    }
}

/// Whether log lines may carry colour: standard error is a terminal and
/// `NO_COLOR` (no-color.org) is unset or empty.
fn colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
