//! Rows of fleet with its processes on hosts of their own (network
//! namespaces), the nodes on 1, 2 and 3 hosts, beside the same layout on
//! loopback.

use super::*;
use crate::config::HOSTS_NODES;

/// One server, [`HOSTS_NODES`] nodes, one submitter, kept echo at window
/// 256: on loopback, then on hosts with the nodes on 1 host (held to
/// loopback: the price of the network path), on 2 and on 3 hosts (held to
/// 1 host: how the spread of the nodes moves it). The runs of each round
/// follow one another, so the ratios hold.
pub(super) fn hosts_rows(x: &Ctx<'_>, r: &mut Vec<Row>) {
    let g = format!(
        "hosts: 1 server, {HOSTS_NODES} nodes on 1, 2, 3 hosts, 1 submitter (steady tasks/s; \
         all hosts share these {} cores)",
        x.cores
    );
    let loopback = "fleet_hosts_loopback";
    r.push(row(
        "hosts_loopback_3node",
        &g,
        &format!("kept, {HOSTS_NODES} nodes, loopback"),
        x.rate(loopback),
        "tasks/s",
        None,
        None,
        None,
        format!(
            "{} tasks; server, nodes and submitter on this machine's loopback: the reference \
             of the 1-host row",
            x.c.hosts
        ) + &x.duplicates(loopback),
    ));
    for hosts in 1..=3 {
        let name = format!("fleet_hosts_{hosts}");
        let split: Vec<String> = (0..hosts)
            .map(|h| {
                let on = (1..=HOSTS_NODES)
                    .filter(|&i| crate::scenarios::node_host(i, hosts) == h)
                    .count();
                on.to_string()
            })
            .collect();
        let (reference, of, what) = if hosts == 1 {
            (
                loopback,
                "fleet, loopback",
                "the price of the network path (veth pairs and a bridge) over loopback",
            )
        } else {
            (
                "fleet_hosts_1",
                "fleet, nodes on 1 host",
                "how spreading the nodes moves it",
            )
        };
        r.push(row(
            &format!("hosts_{hosts}host_{HOSTS_NODES}node"),
            &g,
            &format!(
                "kept, {HOSTS_NODES} nodes on {hosts} host{}",
                if hosts > 1 { "s" } else { "" }
            ),
            x.rate(&name),
            "tasks/s",
            x.rate(reference),
            Some(of),
            None,
            format!(
                "{} tasks; nodes {} per host; server and submitter on hosts of their own; \
                 network namespaces on one bridge; ratio: {what}, not added capacity",
                x.c.hosts,
                split.join(" + ")
            ) + &x.per_round(&name, reference)
                + &x.duplicates(&name),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo(steady: f64) -> Run {
        Run {
            tasks: 1000.0,
            seconds: 1.0,
            tasks_per_s: 1000.0,
            steady_tasks_per_s: steady,
            ..Default::default()
        }
    }

    #[test]
    fn one_host_is_held_to_loopback_and_more_hosts_to_one_host() {
        let mut runs = Runs::new();
        for (name, rate) in [
            ("fleet_hosts_loopback", 1000.0),
            ("fleet_hosts_1", 800.0),
            ("fleet_hosts_2", 880.0),
            ("fleet_hosts_3", 720.0),
        ] {
            runs.insert(name.into(), vec![echo(rate)]);
        }
        let rows = rows(&runs, &crate::config::QUICK, 2);
        let find = |id: &str| rows.iter().find(|r| r.id == id).unwrap();
        let loopback = find("hosts_loopback_3node");
        assert_eq!((loopback.value, loopback.ratio), (Some(1000.0), None));
        assert!(
            loopback.group.contains("share these 2 cores"),
            "{loopback:?}"
        );
        for (id, ceiling, ratio, split) in [
            ("hosts_1host_3node", 1000.0, 0.8, "nodes 3 per host"),
            ("hosts_2host_3node", 800.0, 1.1, "nodes 2 + 1 per host"),
            ("hosts_3host_3node", 800.0, 0.9, "nodes 1 + 1 + 1 per host"),
        ] {
            let r = find(id);
            assert_eq!(r.ceiling, Some(ceiling), "{id}");
            assert!((r.ratio.unwrap() - ratio).abs() < 1e-9, "{id}: {r:?}");
            assert!(r.note.contains(split), "{id}: {}", r.note);
            assert!(r.note.contains("not added capacity"), "{id}: {}", r.note);
        }
    }
}
