//! `fleet-bench`, run by `bin/bench`: every scenario, each on fresh
//! nats-servers of the test kit, in interleaved rounds; prints the table of
//! medians and writes it as JSON and Markdown. Exits 1 when a scenario
//! could not be measured (targets missed are reported, not errors).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use fleet_bench::config::{Counts, FULL, QUICK, SLEEP_CONCURRENCY, SLEEP_TASK_S};
use fleet_bench::meta::{git_describe, now_utc, server_version};
use fleet_bench::report;
use fleet_bench::rows::{rows, Runs};
use fleet_bench::scenarios::{self, echo_line, hex_64k_line, lines_file, Bins, FleetRun, Run};
use fleet_testkit::secure::Role;

mod sections;

/// fleet against a hand-written ceiling, on servers of its own.
#[derive(Debug, Parser)]
#[command(name = "bin/bench")]
struct Args {
    /// Tiny counts: proves every scenario runs (seconds).
    #[arg(long)]
    quick: bool,
    /// Where to write bench.json and bench.md.
    #[arg(long, default_value = ".bench")]
    out: PathBuf,
    /// Interleaved rounds of every comparison; the table shows medians.
    #[arg(long)]
    rounds: Option<usize>,
    /// Where fleet, ceiling, gopeer and apalis-peer are (default: beside
    /// this program).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Only the rounds of one section (its rows alone in the table).
    #[arg(long, value_enum)]
    only: Option<Only>,
}

/// A section `--only` runs alone.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Only {
    /// 3 nodes on 1, 2 and 3 hosts (network namespaces), and on loopback.
    Hosts,
    /// Queue wait per priority band behind a low flood.
    Priorities,
    /// A concurrency limit's cost per start; a rate limit held.
    Limits,
}

impl Only {
    /// The prefix of the ids of its rows, and its name.
    fn rows(self) -> (&'static str, &'static str) {
        match self {
            Only::Hosts => ("hosts_", "hosts"),
            Only::Priorities => ("prio_", "priorities"),
            Only::Limits => ("limit_", "limits"),
        }
    }
}

struct Bench {
    bins: Bins,
    counts: Counts,
    work: tempfile::TempDir,
    runs: Runs,
    errors: Vec<String>,
    /// Why the hosts rows cannot be measured here (no root, no `ip`).
    no_hosts: Option<String>,
}

impl Bench {
    /// Runs one scenario, keeps its result under `name` (a list over rounds)
    /// and prints one line; a failure is recorded, not raised.
    fn measure(&mut self, name: &str, what: &str, f: impl FnOnce(&Bins) -> anyhow::Result<Run>) {
        let started = Instant::now();
        match f(&self.bins) {
            Ok(run) => {
                let shown = if run.tasks_per_s > 0.0 {
                    let mut shown = format!(
                        "{:.0} tasks/s steady ({:.0} whole run)",
                        run.rate(),
                        run.tasks_per_s
                    );
                    if run.latency_us.p50 > 0.0 {
                        shown.push_str(&format!(", p50 {:.0} us", run.latency_us.p50));
                    }
                    shown
                } else {
                    serde_json::to_string(&run).unwrap_or_default()
                };
                eprintln!(
                    "  {what}: {shown} ({:.1} s)",
                    started.elapsed().as_secs_f64()
                );
                self.runs.entry(name.to_string()).or_default().push(run);
            }
            Err(err) => {
                eprintln!(
                    "  {what}: FAILED: {}",
                    format!("{err:#}").lines().next().unwrap_or("")
                );
                self.errors.push(format!("{name}: {err:#}"));
            }
        }
    }

    fn input(
        &self,
        name: &str,
        count: usize,
        line: impl Fn(usize) -> Vec<u8>,
    ) -> anyhow::Result<PathBuf> {
        lines_file(self.work.path(), name, count, line)
    }

    fn run_all(&mut self) -> anyhow::Result<()> {
        let c = self.counts.clone();
        eprintln!("nats CLI bench (the server's own figures)");
        self.measure("nats_bench", "nats bench js pub async + js consume", |_| {
            scenarios::nats_bench(c.nats_bench)
        });
        let inputs = Inputs {
            echo: self.input("echo", c.tput, echo_line)?,
            lat: self.input("echo", c.lat, echo_line)?,
            multi: self.input("echo", c.multi, echo_line)?,
            cluster: self.input("echo", c.cluster, echo_line)?,
            sha: self.input("hex64k", c.sha, hex_64k_line)?,
            hosts: self.input("echo", c.hosts, echo_line)?,
        };
        // Interleaved: every round runs all contestants of a comparison
        // back to back, so a slow minute of the machine hits them alike.
        for i in 1..=c.rounds {
            eprintln!(
                "round {i} of {}: echo w256 (loop, Go, apalis, fleet; fleet under least privilege), w1, more nodes, cluster, sha256, hosts",
                c.rounds
            );
            self.throughput_round(&inputs);
            self.latency_round(&inputs);
            self.scaling_round(&inputs);
            self.sha_round(&inputs);
            self.hosts_round(&inputs.hosts, i);
        }
        self.sleep_runs()?;
        self.cost_runs()?;
        self.durability_runs()?;
        self.priority_runs();
        self.limit_runs()
    }

    /// Window 256, one worker, 100-byte echo: per mode, the loop, the Go
    /// loop, apalis-nats (plain only: it keeps no results) and fleet.
    fn throughput_round(&mut self, inputs: &Inputs) {
        let n = self.counts.tput;
        for (mode, ephemeral, name) in [("plain", true, "ephemeral"), ("kept", false, "kept")] {
            self.measure(
                &format!("ceiling_{mode}_w256"),
                &format!("loop {mode} w256"),
                |b| scenarios::ceiling(b, mode, n, 256, 100, "echo", None),
            );
            self.measure(
                &format!("go_{mode}_w256"),
                &format!("Go loop {mode} w256"),
                |b| scenarios::gopeer(b, mode, n, 256, 100),
            );
            if mode == "plain" {
                self.measure("apalis_echo", "apalis-nats, 1 worker", |b| {
                    scenarios::apalis(b, n)
                });
            }
            self.measure(
                &format!("fleet_{name}_w256_n1"),
                &format!("fleet {name} w256 1 node"),
                |b| {
                    scenarios::fleet(
                        b,
                        &FleetRun {
                            ephemeral,
                            ..FleetRun::new("echo", &inputs.echo, 256)
                        },
                    )
                },
            );
        }
        self.secure_round(inputs);
    }

    /// Right after fleet kept with auth off (`nats.conf`), the same run
    /// under least privilege (the shipped `deploy/secure/nats.conf`):
    /// submitted by admin in the FLEET account, then by the tenant alice.
    fn secure_round(&mut self, inputs: &Inputs) {
        for (role, who) in [(Role::Admin, "admin"), (Role::Alice, "alice")] {
            self.measure(
                &format!("fleet_kept_w256_n1_secure_{who}"),
                &format!("fleet kept w256 1 node, least privilege, {who} submits"),
                |b| {
                    scenarios::fleet(
                        b,
                        &FleetRun {
                            submitter: Some(role),
                            ..FleetRun::new("echo", &inputs.echo, 256)
                        },
                    )
                },
            );
        }
    }

    /// Window 1: latency, the loop then fleet, per mode.
    fn latency_round(&mut self, inputs: &Inputs) {
        let n = self.counts.lat;
        for (mode, ephemeral, name) in [("plain", true, "ephemeral"), ("kept", false, "kept")] {
            self.measure(
                &format!("ceiling_{mode}_w1"),
                &format!("loop {mode} w1"),
                |b| scenarios::ceiling(b, mode, n, 1, 100, "echo", None),
            );
            self.measure(
                &format!("fleet_{name}_w1"),
                &format!("fleet {name} w1"),
                |b| {
                    scenarios::fleet(
                        b,
                        &FleetRun {
                            ephemeral,
                            ..FleetRun::new("echo", &inputs.lat, 1)
                        },
                    )
                },
            );
        }
    }

    /// 2 and 4 nodes on one server (sharing its 2 cores with the server and
    /// the submitter), and one node on a 3-server cluster with R3 streams.
    fn scaling_round(&mut self, inputs: &Inputs) {
        for nodes in [2, 4] {
            for (ephemeral, name) in [(true, "ephemeral"), (false, "kept")] {
                self.measure(
                    &format!("fleet_{name}_w256_n{nodes}"),
                    &format!("fleet {name} w256 {nodes} nodes"),
                    |b| {
                        scenarios::fleet(
                            b,
                            &FleetRun {
                                ephemeral,
                                nodes,
                                ..FleetRun::new("echo", &inputs.multi, 256)
                            },
                        )
                    },
                );
            }
        }
        self.measure(
            "fleet_kept_w256_cluster3",
            "fleet kept w256 1 node, 3-server cluster, R3",
            |b| scenarios::cluster(b, &FleetRun::new("echo", &inputs.cluster, 256)),
        );
    }

    fn sha_round(&mut self, inputs: &Inputs) {
        let n = self.counts.sha;
        self.measure("ceiling_sha256", "loop kept sha256 64 KiB", |b| {
            scenarios::ceiling(b, "kept", n, 256, 64 * 1024, "sha256", None)
        });
        self.measure("fleet_sha256", "fleet sha256 64 KiB w256 1 node", |b| {
            scenarios::fleet(b, &FleetRun::new("sha256", &inputs.sha, 256))
        });
    }

    fn sleep_runs(&mut self) -> anyhow::Result<()> {
        eprintln!("sleep 10ms, concurrency {SLEEP_CONCURRENCY} per node");
        for nodes in [1, 2, 4] {
            let ideal = (nodes * SLEEP_CONCURRENCY) as f64 / SLEEP_TASK_S;
            let tasks = (ideal * self.counts.sleep_s) as usize;
            let path = self.input("sleep10ms", tasks, |_| b"10ms".to_vec())?;
            self.measure(
                &format!("fleet_sleep_n{nodes}"),
                &format!("fleet sleep 10ms {nodes} node(s)"),
                |b| {
                    scenarios::fleet(
                        b,
                        &FleetRun {
                            nodes,
                            concurrency: SLEEP_CONCURRENCY,
                            ephemeral: true,
                            ..FleetRun::new("sleep", &path, 2 * nodes * SLEEP_CONCURRENCY)
                        },
                    )
                },
            );
        }
        Ok(())
    }

    fn cost_runs(&mut self) -> anyhow::Result<()> {
        let c = self.counts.clone();
        eprintln!("cost: node RSS idle and with 256 in flight, submitter for many tasks");
        self.measure("node_idle", &format!("node idle {} s", c.idle_s), |b| {
            scenarios::idle_rss(b, Duration::from_secs_f64(c.idle_s))
        });
        let sleep = c.inflight_sleep;
        let inflight = self.input(&format!("sleep{sleep}"), c.inflight_tasks, |_| {
            sleep.as_bytes().to_vec()
        })?;
        self.measure("node_inflight", "node, 256 sleep tasks in flight", |b| {
            scenarios::fleet(
                b,
                &FleetRun {
                    concurrency: 256,
                    ephemeral: true,
                    ..FleetRun::new("sleep", &inflight, 256)
                },
            )
        });
        let big = self.input("echo", c.big, echo_line)?;
        self.measure(
            "submit_big",
            &format!("fleet submit {} echo tasks (ephemeral, w256)", c.big),
            |b| {
                scenarios::fleet(
                    b,
                    &FleetRun {
                        ephemeral: true,
                        timeout: Duration::from_secs(900),
                        ..FleetRun::new("echo", &big, 256)
                    },
                )
            },
        );
        Ok(())
    }

    /// `sync_interval: always`, interleaved rounds of its own.
    fn durability_runs(&mut self) -> anyhow::Result<()> {
        let c = self.counts.clone();
        eprintln!("durability: sync_interval: always, {} round(s)", c.rounds);
        let conf =
            fleet_testkit::server::sync_always_conf(&self.work.path().join("sync-always.conf"));
        let input = self.input("echo", c.sync, echo_line)?;
        for _ in 0..c.rounds {
            self.measure("ceiling_kept_sync", "loop kept w256, sync always", |b| {
                scenarios::ceiling(b, "kept", c.sync, 256, 100, "echo", Some(&conf))
            });
            for (name, what, concurrency) in [
                ("fleet_kept_sync", "fleet kept w256, sync always", None),
                (
                    "fleet_kept_sync_c256",
                    "fleet kept w256 concurrency 256, sync always",
                    Some(256),
                ),
            ] {
                self.measure(name, what, |b| {
                    let mut run = FleetRun {
                        conf: Some(&conf),
                        ..FleetRun::new("echo", &input, 256)
                    };
                    run.concurrency = concurrency.unwrap_or(run.concurrency);
                    scenarios::fleet(b, &run)
                });
            }
        }
        Ok(())
    }
}

/// The payload files of the rounds.
struct Inputs {
    /// 100-byte echo payloads, window-256 one-node runs.
    echo: PathBuf,
    /// The same, window-1 runs.
    lat: PathBuf,
    /// The same, 2- and 4-node runs.
    multi: PathBuf,
    /// The same, the cluster run.
    cluster: PathBuf,
    /// 64 KiB hex payloads.
    sha: PathBuf,
    /// 100-byte echo payloads, the hosts runs.
    hosts: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut counts = if args.quick { QUICK } else { FULL };
    if let Some(rounds) = args.rounds {
        counts.rounds = rounds.max(1);
    }
    let started = Instant::now();
    let bin_dir = match args.bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()?
            .parent()
            .context("the bench's directory")?
            .to_path_buf(),
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut meta = serde_json::json!({
        "date": now_utc(),
        "mode": format!(
            "{}{}",
            if args.quick { "quick" } else { "full" },
            args.only.map_or(String::new(), |o| format!(", {} only", o.rows().1))
        ),
        "nats_server": server_version(),
        "cores": cores,
        "rounds": counts.rounds,
        "statistic": "median of interleaved rounds; throughput = steady_tasks_per_s",
        "counts": counts,
        "git": git_describe(),
    });
    eprintln!(
        "fleet bench ({}): nats-server {}, {cores} cores",
        meta["mode"].as_str().unwrap_or(""),
        meta["nats_server"].as_str().unwrap_or("")
    );
    let mut bench = Bench {
        bins: Bins::in_dir(&bin_dir)?,
        counts: counts.clone(),
        work: tempfile::Builder::new().prefix("fleet-bench-").tempdir()?,
        runs: Runs::new(),
        errors: Vec::new(),
        no_hosts: scenarios::hosts_unavailable(),
    };
    let measuring = Instant::now();
    match args.only {
        Some(Only::Hosts) => bench.run_hosts()?,
        Some(Only::Priorities) => bench.priority_runs(),
        Some(Only::Limits) => bench.limit_runs()?,
        None => bench.run_all()?,
    }
    meta["runtime_s"] = serde_json::json!(started.elapsed().as_secs_f64());
    meta["measuring_s"] = serde_json::json!(measuring.elapsed().as_secs_f64());
    let mut table = rows(&bench.runs, &counts, cores);
    if let Some(only) = args.only {
        table.retain(|r| r.id.starts_with(only.rows().0));
    }
    let path = report::write(
        &args.out,
        &meta,
        &table,
        &serde_json::to_value(&bench.runs)?,
        &bench.errors,
    )?;
    println!();
    println!(
        "fleet bench {}, {}: nats-server {}, {cores} cores, git {}, median of {} round(s), {:.0} s",
        meta["date"].as_str().unwrap_or(""),
        meta["mode"].as_str().unwrap_or(""),
        meta["nats_server"].as_str().unwrap_or(""),
        meta["git"].as_str().unwrap_or(""),
        counts.rounds,
        started.elapsed().as_secs_f64()
    );
    println!("{}", report::RATIO_NOTE);
    println!("{}", report::text_table(&table));
    println!(
        "\nwritten: {} and {}",
        path.display(),
        path.with_extension("md").display()
    );
    if !bench.errors.is_empty() {
        println!("\nerrors:");
        for e in &bench.errors {
            println!("  {}", e.lines().next().unwrap_or(""));
        }
        std::process::exit(1);
    }
    Ok(())
}
