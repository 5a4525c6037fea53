//! What each command runs: a library call, and how its answer is shown.

use std::future::Future;

use fleet::connect::{Auth, Tls};
use fleet::handlers::exec;
use fleet::{
    connect, default_node_name, ConnectConfig, Error, ErrorKind, GroupSettings, Node, NodeConfig,
    Registry, RetryPolicy, StreamSettings,
};
use fleet::{contract, dead, setup, status};
use tokio::io::AsyncWriteExt;

use crate::args::{Cli, Command, DeadCommand, GroupArgs, NatsArgs, NodeArgs, StreamArgs};

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
    let connect_config = connect_config(&cli.nats, name, node.is_some());
    let client = connect(&connect_config).await?;
    let js = async_nats::jetstream::new(client.clone());
    match cli.command {
        Command::Setup(args) => {
            let applied = setup::apply(
                &js,
                &stream_settings(&args.streams),
                &[group_settings(&args.group)],
            )
            .await?;
            let text = if args.json {
                serde_json::json!({"created": applied.created, "updated": applied.updated, "unchanged": applied.unchanged}).to_string()
            } else {
                let mut lines = Vec::new();
                for (what, names) in [
                    ("created", &applied.created),
                    ("updated", &applied.updated),
                    ("unchanged", &applied.unchanged),
                ] {
                    for name in names {
                        lines.push(format!("{what:<9} {name}"));
                    }
                }
                lines.join("\n")
            };
            print(format!("{text}\n")).await?;
            Ok(0)
        }
        Command::Node(_) => {
            let (config, registry) = node.expect("built above");
            Node::new(client, config, registry).run(shutdown).await?;
            Ok(0)
        }
        Command::Submit(args) => {
            crate::submit::run(client, args, connect_config.msg_id_salt()).await
        }
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
            let done = dead::replay(&js, kind.as_deref(), &ids).await?;
            let mut out = String::new();
            for d in &done.replayed {
                out.push_str(&format!(
                    "replayed {} ({}) to {}\n",
                    d.id,
                    d.seq,
                    contract::task_subject(&d.kind)
                ));
            }
            print(out).await?;
            for (d, why) in &done.skipped {
                eprintln!("skipped dead letter {} ({:?}): {why}", d.seq, d.id);
            }
            eprintln!(
                "{} tasks replayed, {} skipped",
                done.replayed.len(),
                done.skipped.len()
            );
            Ok(if done.skipped.is_empty() { 0 } else { 1 })
        }
        Command::Dead(DeadCommand::Delete { kind, ids }) => {
            let gone = dead::delete(&js, kind.as_deref(), &ids).await?;
            eprintln!("{} dead letters deleted", gone.len());
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

/// The connection options of the command line's flags and environment.
fn connect_config(nats: &NatsArgs, name: String, node: bool) -> ConnectConfig {
    ConnectConfig {
        servers: nats.url.clone(),
        name,
        wait_for_server: node,
        auth: Auth {
            user: nats.user.clone(),
            password: nats.password.clone(),
            token: nats.token.clone(),
            nkey_file: nats.nkey.clone(),
            creds_file: nats.creds.clone(),
        },
        tls: Tls {
            ca: nats.tlsca.clone(),
            cert: nats.tlscert.clone(),
            key: nats.tlskey.clone(),
            first: nats.tlsfirst,
        },
        inbox_prefix: nats.inbox_prefix.clone(),
    }
}

fn stream_settings(args: &StreamArgs) -> StreamSettings {
    StreamSettings {
        replicas: args.replicas,
        tasks_max_msgs: args.tasks_max_msgs,
        tasks_max_bytes: args.tasks_max_bytes,
        results_max_age: args.results_max_age.into(),
        results_max_bytes: args.results_max_bytes,
        dead_max_age: args.dead_max_age.into(),
        dead_max_bytes: args.dead_max_bytes,
    }
}

fn group_settings(args: &GroupArgs) -> GroupSettings {
    GroupSettings {
        name: args.group.clone(),
        kinds: args.kinds.clone(),
        ack_wait: args.ack_wait.into(),
        max_ack_pending: args.max_ack_pending,
    }
}

fn node_setup(args: &NodeArgs, name: String) -> Result<(NodeConfig, Registry), Error> {
    let mut registry = match (args.no_builtins, args.dev_builtins) {
        (true, _) => Registry::new(),
        (false, false) => Registry::with_builtins(),
        (false, true) => Registry::with_dev_builtins(),
    };
    exec::register_all(
        &mut registry,
        &args.exec,
        args.handlers.as_deref(),
        &args.exec_env,
    )
    .map_err(|e| Error::new(ErrorKind::Usage, format!("{e:#}")))?;
    if args.task_timeout > args.max_task_timeout {
        return Err(Error::new(
            ErrorKind::Usage,
            format!(
                "--task-timeout {} is longer than --max-task-timeout {}",
                args.task_timeout, args.max_task_timeout
            ),
        ));
    }
    let config = NodeConfig {
        name,
        group: group_settings(&args.group),
        create: args.create,
        streams: stream_settings(&args.streams),
        max_task_timeout: args.max_task_timeout.into(),
        concurrency: args.concurrency,
        retry: RetryPolicy {
            max_attempts: args.max_deliver,
            base_delay: args.retry_delay.into(),
            ..RetryPolicy::default()
        },
        task_timeout: args.task_timeout.into(),
        grace: args.grace.into(),
        allowed_replies: args.allow_reply.clone(),
    };
    Ok((config, registry))
}
