//! Scenario 2: the server leading `TASKS` isolated from the other two (a
//! minority partition of one) mid-batch, with the submitter and a node
//! connected to it.

use super::*;

/// The submitter's server is made the `TASKS` leader, a node is connected
/// there too, and once results flow its host's link is cut: the two others
/// elect a leader, every client connected to the isolated server notices
/// (pings unanswered) and moves to a server of its list, the batch goes on;
/// then the link is restored and the old leader rejoins as a follower.
#[test]
fn server_leading_tasks_isolated_mid_batch() {
    let started = Instant::now();
    let lines = "200ms\n".repeat(1500);
    let mut site = Site::without_nodes("srvcut", &lines, "2s");
    let mut submit = KillOnDrop(site.submit("sleep", &["--window", "256"]));
    let submitter = format!("fleet-{}", submit.0.id());
    let at = eventually(Duration::from_secs(10), "the submitter connected", || {
        site.server_of(&submitter)
    });
    let leader = site.cluster.servers[at].name.clone();
    site.make_leader("TASKS", &leader);
    // At least one node connected to the same server: a node that landed
    // elsewhere is started again (each start picks a server at random).
    let node_args = ["--concurrency", "8"];
    for i in 1..=3 {
        site.start_node(&format!("n{i}"), &node_args);
    }
    for tries in 0.. {
        for node in &mut site.nodes {
            node.wait_ready(Duration::from_secs(30));
        }
        if let Some(n) = site
            .nodes
            .iter()
            .position(|n| site.server_of(&n.name) == Some(at))
        {
            eprintln!(
                "node {} is on {leader} (after {tries} restarts)",
                site.nodes[n].name
            );
            break;
        }
        assert!(tries < 20, "no node ever connected to {leader}");
        let node = site.nodes.remove(0);
        let name = node.name.clone();
        drop(node);
        site.start_node(&name, &node_args);
    }
    site.wait_results(&mut submit.0, 100);
    assert_eq!(
        site.leader("TASKS", at),
        leader,
        "TASKS moved before the cut"
    );
    let host = site.cluster.servers[at].host.name.clone();
    site.net.cut(&host);
    let cut_at = Instant::now();
    let at_cut = site.results_so_far().len();
    let other = (at + 1) % 3;
    let elected = eventually(Duration::from_secs(30), "a new TASKS leader", || {
        let now = site.leader("TASKS", other);
        (now != leader).then_some(now)
    });
    let elected_after = cut_at.elapsed();
    // The batch goes on without the isolated server: clients moved.
    eventually(Duration::from_secs(30), "results while cut off", || {
        (site.results_so_far().len() > at_cut + 100).then_some(())
    });
    let moved_after = cut_at.elapsed();
    let now = site.server_of(&submitter);
    assert!(
        now.is_some_and(|s| s != at),
        "the submitter is on no server of the majority ({now:?})"
    );
    site.net.heal(&host);
    let at_heal = site.results_so_far().len();
    eprintln!(
        "{leader} isolated with {at_cut} results in; {elected} elected {elected_after:?} after the cut; 100 more results {moved_after:?} after; healed with {at_heal}"
    );
    assert!(
        (at_heal as u64) < site.tasks,
        "the batch ended during the cut: make it longer"
    );
    site.wait_ok(&mut submit.0, Duration::from_secs(90));
    // The old leader is back as a follower of the one the majority chose.
    site.cluster.wait_formed(Duration::from_secs(30));
    let report = site.check(other);
    println!("run took {:?}", started.elapsed());
    assert_nothing_lost(&report, site.tasks);
}
