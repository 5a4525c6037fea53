//! What each command runs: a library call, and how its answer is shown.

use std::future::Future;

use fleet::handlers::exec;
use fleet::{
    connect, default_node_name, ConnectConfig, Error, ErrorKind, GroupSettings, Node, NodeConfig,
    Registry, RetryPolicy, StreamSettings,
};
use fleet::{contract, dead, status};
use tokio::io::AsyncWriteExt;

use crate::args::{Cli, Command, DeadCommand, NodeArgs};

/// The process exit code a command ended with.
pub(crate) type ExitCode = i32;

/// Runs the parsed command until it ends or `shutdown` fires (nodes).
pub(crate) async fn run(cli: Cli, shutdown: impl Future<Output = ()>) -> Result<ExitCode, Error> {
    let name = match &cli.command {
        Command::Node(args) => args.name.clone().unwrap_or_else(default_node_name),
        _ => format!("fleet-{}", std::process::id()),
    };
    // Check a node's flags before connecting: a typo is a usage error, not a wait.
    let node = match &cli.command {
        Command::Node(args) => Some(node_setup(args, name.clone())?),
        _ => None,
    };
    let connect_config = ConnectConfig {
        servers: cli.nats.url.clone(),
        name,
        wait_for_server: node.is_some(),
        auth: fleet::connect::Auth {
            creds_file: cli.nats.creds.clone(),
            ..Default::default()
        },
        ..Default::default()
    };
    let client = connect(&connect_config).await?;
    let js = async_nats::jetstream::new(client.clone());
    match cli.command {
        Command::Node(_) => {
            let (config, registry) = node.expect("built above");
            Node::new(client, config, registry).run(shutdown).await?;
            Ok(0)
        }
        Command::Submit(args) => crate::submit::run(client, args).await,
        Command::Status { json } => {
            let status = status::status(&js).await?;
            let text = if json {
                serde_json::to_string_pretty(&status).expect("the status serializes")
            } else {
                status.to_string()
            };
            print(format!("{text}\n")).await?;
            Ok(0)
        }
        Command::Dead(DeadCommand::List { kind, json }) => {
            let dead = dead::list(&js, kind.as_deref()).await?;
            let mut out = String::new();
            for d in &dead {
                if json {
                    out.push_str(&serde_json::to_string(d).expect("a dead letter serializes"));
                    out.push('\n');
                } else {
                    out.push_str(&format!(
                        "{:>6}  {:<12} {:<24} attempts {}  {} {}\n",
                        d.seq, d.kind, d.id, d.attempts, d.code, d.error
                    ));
                }
            }
            print(out).await?;
            if !json {
                eprintln!("{} dead letters", dead.len());
            }
            Ok(0)
        }
        Command::Dead(DeadCommand::Replay { kind, ids }) => {
            let replayed = dead::replay(&js, kind.as_deref(), &ids).await?;
            let mut out = String::new();
            for d in &replayed {
                out.push_str(&format!(
                    "replayed {} ({}) to {}\n",
                    d.id,
                    d.seq,
                    contract::task_subject(&d.kind)
                ));
            }
            print(out).await?;
            eprintln!("{} tasks replayed", replayed.len());
            Ok(0)
        }
    }
}

/// Writes `text` to standard output.
async fn print(text: String) -> Result<(), Error> {
    let mut out = tokio::io::stdout();
    out.write_all(text.as_bytes())
        .await
        .map_err(|e| Error::with_source(ErrorKind::Io, "writing to standard output", e))?;
    out.flush()
        .await
        .map_err(|e| Error::with_source(ErrorKind::Io, "writing to standard output", e))
}

fn node_setup(args: &NodeArgs, name: String) -> Result<(NodeConfig, Registry), Error> {
    let mut registry = if args.no_builtins {
        Registry::new()
    } else {
        Registry::with_builtins()
    };
    exec::register_all(&mut registry, &args.exec, args.handlers.as_deref())
        .map_err(|e| Error::new(ErrorKind::Usage, format!("{e:#}")))?;
    let config = NodeConfig {
        name,
        group: GroupSettings {
            name: args.group.clone(),
            kinds: args.kinds.clone(),
            ack_wait: args.ack_wait.into(),
            max_ack_pending: args.max_ack_pending,
        },
        concurrency: args.concurrency,
        retry: RetryPolicy {
            max_attempts: args.max_deliver,
            base_delay: args.retry_delay.into(),
            ..RetryPolicy::default()
        },
        task_timeout: args.task_timeout.into(),
        grace: args.grace.into(),
        allowed_replies: args.allow_reply.clone(),
        streams: StreamSettings {
            replicas: args.replicas,
            results_max_age: args.results_max_age.into(),
        },
    };
    Ok((config, registry))
}
