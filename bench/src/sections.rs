//! Sections of the `fleet-bench` driver (a module of main.rs, not of the
//! library) that also run alone: hosts (its rounds interleave with the
//! others in a full run), priorities and limits (after the others), with
//! `--only hosts|priorities|limits`.

use crate::Bench;
use fleet_bench::config::HOSTS_NODES;
use fleet_bench::scenarios::{self, echo_line, FleetRun};

impl Bench {
    /// The hosts runs alone (`--only hosts`).
    pub(crate) fn run_hosts(&mut self) -> anyhow::Result<()> {
        let input = self.input("echo", self.counts.hosts, echo_line)?;
        for i in 1..=self.counts.rounds {
            eprintln!("round {i} of {}: hosts", self.counts.rounds);
            self.hosts_round(&input, i);
        }
        Ok(())
    }

    /// One server, [`HOSTS_NODES`] nodes, one submitter, kept echo at window
    /// 256: on loopback (the reference), and each process on a host of its
    /// own (network namespaces), the nodes on 1, 2 and 3 hosts, in an order
    /// that turns with the round. Without root or `ip`, the host runs are
    /// reported as not measured (said once, in round 1).
    pub(crate) fn hosts_round(&mut self, input: &std::path::Path, round: usize) {
        let run = FleetRun {
            nodes: HOSTS_NODES,
            ..FleetRun::new("echo", input, 256)
        };
        if let Some(why) = &self.no_hosts {
            if round == 1 {
                eprintln!("  fleet on 1, 2 and 3 node hosts: NOT MEASURED: {why}");
                self.errors
                    .push(format!("fleet_hosts_1..3: not measured: {why}"));
            }
        }
        for hosts in scenarios::hosts_order(round) {
            if hosts == 0 {
                self.measure(
                    "fleet_hosts_loopback",
                    &format!("fleet kept w256 {HOSTS_NODES} nodes, loopback"),
                    |b| scenarios::fleet(b, &run),
                );
            } else if self.no_hosts.is_none() {
                self.measure(
                    &format!("fleet_hosts_{hosts}"),
                    &format!("fleet kept w256 {HOSTS_NODES} nodes on {hosts} host(s)"),
                    |b| scenarios::hosts(b, &run, hosts),
                );
            }
        }
    }

    /// The starvation scenario ([`scenarios::priorities`]), one run per round.
    pub(crate) fn priority_runs(&mut self) {
        let (low, high) = (self.counts.prio_low, self.counts.prio_high);
        eprintln!(
            "priorities: {low} low sleep tasks on 3 nodes, then {high} high, then {high} normal; {} round(s)",
            self.counts.rounds
        );
        for _ in 0..self.counts.rounds {
            self.measure(
                "fleet_priorities",
                "queue wait by band behind a low flood",
                |b| scenarios::priorities(b, low, high),
            );
        }
    }

    /// Echo with a concurrency limit that never binds against the same with
    /// none, back to back each round; then one rate-limited run per round.
    pub(crate) fn limit_runs(&mut self) -> anyhow::Result<()> {
        let c = self.counts.clone();
        eprintln!(
            "limits: concurrency (cost per start), rate; {} round(s)",
            c.rounds
        );
        let input = self.input("echo", c.limit_tasks, echo_line)?;
        let limit = format!("{}", fleet_bench::config::LIMIT_CONCURRENCY);
        let args = ["echo", "--concurrency", &limit];
        for _ in 0..c.rounds {
            self.measure("fleet_limit_none", "echo w256 1 node, no limit", |b| {
                scenarios::fleet(b, &FleetRun::new("echo", &input, 256))
            });
            self.measure(
                "fleet_limit_concurrency",
                &format!("echo w256 1 node, limit --concurrency {limit}"),
                |b| {
                    scenarios::fleet(
                        b,
                        &FleetRun {
                            limit: &args,
                            ..FleetRun::new("echo", &input, 256)
                        },
                    )
                },
            );
            self.measure(
                "fleet_limit_rate",
                &format!("sleep 10ms, limit --rate {}/s", c.rate_per_s),
                |b| scenarios::rate_limit(b, c.rate_per_s, c.rate_tasks),
            );
        }
        Ok(())
    }
}
