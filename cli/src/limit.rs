//! `fleet limit set|list|remove`: concurrency and rate limits per kind and
//! per key, written to the `fleet-limits` bucket (admin); running nodes
//! follow within a second.
//!
//! Exit codes: 0 done; 1 when the limit to remove does not exist; 2 for
//! usage, connection and setup errors.

use clap::{Args, Subcommand};
use fleet::limit::{self, Limit, Rate};
use fleet::{Error, ErrorKind};

use crate::output::{print, ExitCode};

/// `fleet limit`.
#[derive(Debug, Subcommand)]
pub(crate) enum LimitCommand {
    /// Set the limits of a kind, across every node (replaces its old ones).
    Set(SetArgs),
    /// List every kind's limits.
    List {
        /// Print JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove the limits of a kind.
    Remove {
        /// The kind.
        kind: String,
    },
}

/// `fleet limit set`.
#[derive(Debug, Args)]
pub(crate) struct SetArgs {
    /// The kind (`sleep`, `image.resize`).
    pub(crate) kind: String,
    /// At most this many running at once, across all nodes.
    #[arg(long, value_name = "N")]
    pub(crate) concurrency: Option<u32>,
    /// At most this many started per period across all nodes: R/s, R/m, R/h.
    #[arg(long, value_name = "R/PERIOD", value_parser = parse_rate)]
    pub(crate) rate: Option<Rate>,
    /// At most this many running at once per Task-Key.
    #[arg(long, value_name = "N")]
    pub(crate) per_key_concurrency: Option<u32>,
    /// At most this many started per period per Task-Key: R/s, R/m, R/h.
    #[arg(long, value_name = "R/PERIOD", value_parser = parse_rate)]
    pub(crate) per_key_rate: Option<Rate>,
}

fn parse_rate(text: &str) -> Result<Rate, String> {
    text.parse()
}

/// Runs one `fleet limit` command.
pub(crate) async fn run(
    js: &async_nats::jetstream::Context,
    command: LimitCommand,
) -> Result<ExitCode, Error> {
    match command {
        LimitCommand::Set(args) => {
            let wanted = Limit {
                concurrency: args.concurrency,
                rate: args.rate,
                per_key_concurrency: args.per_key_concurrency,
                per_key_rate: args.per_key_rate,
            };
            if wanted.is_empty() {
                return Err(Error::new(
                    ErrorKind::Usage,
                    "name a limit: --concurrency, --rate, --per-key-concurrency or --per-key-rate",
                ));
            }
            limit::set(js, &args.kind, &wanted).await?;
            print(format!("limit of {}: {wanted}\n", args.kind)).await?;
            Ok(0)
        }
        LimitCommand::List { json } => {
            let mut out = String::new();
            for listed in limit::list(js).await? {
                if json {
                    out.push_str(&serde_json::to_string(&listed).expect("a limit serializes"));
                } else {
                    match (&listed.limit, &listed.invalid) {
                        (Some(l), _) => out.push_str(&format!("{}: {l}", listed.kind)),
                        (None, why) => out.push_str(&format!(
                            "{}: not a limit, ignored by nodes ({})",
                            listed.kind,
                            why.as_deref().unwrap_or("")
                        )),
                    }
                }
                out.push('\n');
            }
            print(out).await?;
            Ok(0)
        }
        LimitCommand::Remove { kind } => {
            if limit::remove(js, &kind).await? {
                print(format!("limit of {kind} removed\n")).await?;
                Ok(0)
            } else {
                eprintln!("{kind} has no limit");
                Ok(1)
            }
        }
    }
}
