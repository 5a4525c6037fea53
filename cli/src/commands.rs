//! What each command runs: a library call, and how its answer is shown.

use std::future::Future;

use fleet::connect::{Auth, Tls};
use fleet::handlers::exec;
use fleet::{
    connect, default_node_name, edge::EdgeSettings, ConnectConfig, Error, ErrorKind, GroupSettings,
    Node, NodeConfig, Registry, RetryPolicy, StreamSettings,
};
use fleet::{contract, dead, setup, status};

use crate::args::{Cli, Command, DeadCommand, GroupArgs, NatsArgs, NodeArgs, StreamArgs};
use crate::output::{print, ExitCode};

/// Runs the parsed command until it ends or `shutdown` fires (nodes).
pub(crate) async fn run(
    cli: Cli,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<ExitCode, Error> {
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
            let settings = StreamSettings {
                tenants: args.tenants.clone(),
                ..stream_settings(&args.streams)
            };
            let applied = setup::apply(&js, &settings, &[group_settings(&args.group)]).await?;
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
        Command::Node(args) => {
            let (config, registry) = node.expect("built above");
            run_node(
                Node::new(client, config, registry),
                args.metrics_addr,
                shutdown,
            )
            .await
        }
        Command::Submit(args) => {
            crate::submit::run(client, args, connect_config.msg_id_salt()).await
        }
        Command::Status { json, watch } => {
            if watch {
                return watch_status(&js, json, shutdown).await;
            }
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
        Command::Dashboard(args) => {
            let options = crate::dashboard::Options {
                listen: args.listen,
                token: args.web_token,
                token_file: args.web_token_file,
                tenant_tokens: args.tenant_tokens,
            };
            crate::dashboard::serve(client, options, shutdown).await?;
            Ok(0)
        }
        Command::Cancel(args) => crate::cancel::run(&js, args).await,
        Command::Results(args) => crate::schedule::results(client, args).await,
        Command::Schedule(command) => crate::schedule::run(client, command).await,
        Command::Pause(args) => crate::control::pause(&js, args).await,
        Command::Resume(args) => crate::control::resume(&js, args).await,
        Command::Limit(command) => crate::limit::run(&js, command).await,
        Command::Dead(DeadCommand::Delete { kind, ids }) => {
            let gone = dead::delete(&js, kind.as_deref(), &ids).await?;
            eprintln!("{} dead letters deleted", gone.len());
            Ok(0)
        }
    }
}

/// Runs a node: serves its metrics and probes when asked, tells systemd
/// (`Type=notify`) when it is ready and when it stops.
async fn run_node(
    node: Node,
    metrics_addr: Option<std::net::SocketAddr>,
    shutdown: impl Future<Output = ()>,
) -> Result<ExitCode, Error> {
    let observer = node.observer();
    if let Some(addr) = metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            Error::with_source(
                ErrorKind::Usage,
                format!("--metrics-addr {addr}: cannot listen"),
                e,
            )
        })?;
        tracing::info!(%addr, "metrics at /metrics, probes at /healthz and /readyz");
        let router = observer.router();
        tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, router).await {
                tracing::warn!(%err, "the metrics server stopped");
            }
        });
    }
    let notify = tokio::spawn(async move {
        observer.wait_ready().await;
        notify_systemd(&[sd_notify::NotifyState::Ready]);
    });
    let stats = node.run(shutdown).await;
    notify.abort();
    notify_systemd(&[sd_notify::NotifyState::Stopping]);
    stats?;
    Ok(0)
}

/// Tells systemd how the node is doing; nothing outside a `Type=notify` unit.
fn notify_systemd(state: &[sd_notify::NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        if let Err(err) = sd_notify::notify(state) {
            tracing::warn!(%err, "could not notify systemd");
        }
    }
}

/// `fleet status --watch`: the status every second until `shutdown`. On a
/// terminal it redraws in place, like `watch`; otherwise (a pipe, a file)
/// each reading follows the last, as one JSON line with `--json`.
async fn watch_status(
    js: &async_nats::jetstream::Context,
    json: bool,
    shutdown: impl Future<Output = ()>,
) -> Result<ExitCode, Error> {
    use std::io::IsTerminal;
    let terminal = std::io::stdout().is_terminal();
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(0),
            _ = every.tick() => {}
        }
        let status = status::status(js).await?;
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        let text = match (json, terminal) {
            (true, _) => format!(
                "{}\n",
                serde_json::to_string(&status).expect("the status serializes")
            ),
            // Home, clear, then the reading: the screen shows only the latest.
            (false, true) => {
                format!("\x1b[H\x1b[2Jfleet status at {now} (Ctrl-C to stop)\n\n{status}\n")
            }
            (false, false) => format!("fleet status at {now}\n{status}\n\n"),
        };
        print(text).await?;
    }
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
        ping_interval: Some(nats.ping_interval.into()),
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
        ..Default::default()
    }
}

fn group_settings(args: &GroupArgs) -> GroupSettings {
    GroupSettings {
        name: args.group.clone(),
        kinds: args.kinds.clone(),
        ack_wait: args.ack_wait.into(),
        max_ack_pending: args.max_ack_pending,
        priority_group: args.priority_group.clone(),
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
        priority_weights: args.priority_weights,
        retry: RetryPolicy {
            max_attempts: args.max_deliver,
            base_delay: args.retry_delay.into(),
            ..RetryPolicy::default()
        },
        task_timeout: args.task_timeout.into(),
        grace: args.grace.into(),
        allowed_replies: args.allow_reply.clone(),
        edge: EdgeSettings {
            domain: args.domain.clone(),
            overflow: args.overflow,
        },
    };
    Ok((config, registry))
}
