//! The `fleet` binary: parse, set up logging, run, map the outcome to an exit
//! code (0 ok, 1 a task failed or timed out, 2 usage or connection errors).

use clap::Parser;
use fleet::cli::{self, Cli, Command};
use fleet::ErrorKind;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Node(_) => "info,async_nats=warn",
        _ => "warn,async_nats=error",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = match cli::run(cli, shutdown_signal()).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            match err.kind() {
                ErrorKind::Usage | ErrorKind::Connection | ErrorKind::Setup => 2,
                ErrorKind::Other => 1,
            }
        }
    };
    std::process::exit(code);
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
