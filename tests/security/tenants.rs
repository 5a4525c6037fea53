//! Tenants share the nodes and never see, forge or steer into each
//! other's tasks and results.

use super::*;

/// Two tenants run batches with the same name at the same time through the
/// same node: each sees its own results, none of the other's, and RESULTS
/// keeps each under its own tenant.
#[test]
fn two_tenants_share_nodes_and_see_only_their_own() {
    let (s, _node) = fleet_up(&["--concurrency", "16"]);
    let alice_words: Vec<String> = (0..300).map(|i| format!("alice-{i}")).collect();
    let bob_words: Vec<String> = (0..300).map(|i| format!("bob-{i}")).collect();
    let (alice, bob) = std::thread::scope(|scope| {
        let a = scope.spawn(|| submit_as(&s, Role::Alice, "nightly", "echo", &alice_words));
        let b = scope.spawn(|| submit_as(&s, Role::Bob, "nightly", "echo", &bob_words));
        (a.join().unwrap(), b.join().unwrap())
    });
    for (lines, words, other) in [(&alice, &alice_words, "bob-"), (&bob, &bob_words, "alice-")] {
        assert_eq!(lines.len(), words.len());
        for line in lines {
            let n: usize = line["id"]
                .as_str()
                .unwrap()
                .rsplit('.')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(line["result"], words[n - 1].as_str(), "{line}");
            assert!(
                !line["result"].as_str().unwrap().starts_with(other),
                "{line}"
            );
        }
    }
    let kept = kept_subjects(&s);
    assert!(
        kept.contains("tenant.alice.results.nightly.1")
            && kept.contains("tenant.bob.results.nightly.1"),
        "{kept:?}"
    );
    assert!(
        !kept.iter().any(|k| k.starts_with("results.")),
        "a tenant's result outside its tenant: {kept:?}"
    );

    // Bob reads what he can: his own kept result, not alice's.
    let own = s.nats(
        Role::Bob,
        &["req", "$JS.API.DIRECT.GET.RESULTS.results.nightly.1", ""],
    );
    assert!(text(&own.stdout).contains("bob-0"), "{}", text(&own.stdout));
    assert!(
        !text(&own.stdout).contains("alice"),
        "{}",
        text(&own.stdout)
    );
    let other = s.nats(
        Role::Bob,
        &[
            "req",
            "$JS.API.DIRECT.GET.RESULTS.tenant.alice.results.nightly.1",
            "",
        ],
    );
    assert!(
        denied(&other) && !text(&other.stdout).contains("alice-0"),
        "{}",
        text(&other.stdout)
    );
}

/// Watching another tenant's tasks or results, or publishing a forged
/// result ahead of the node, is denied; the victim's results stay genuine.
#[test]
fn forged_and_stolen_results_are_denied() {
    let (s, _node) = fleet_up(&[]);
    for (role, args) in [
        (
            Role::Bob,
            vec!["sub", "tasks.>", "--count", "1", "--timeout", "1s"],
        ),
        (
            Role::Bob,
            vec!["sub", "_INBOX_node.>", "--count", "1", "--timeout", "1s"],
        ),
        (Role::Bob, vec!["pub", "results.victim.1", "forged"]),
        (
            Role::Bob,
            vec!["pub", "tenant.alice.results.victim.1", "forged"],
        ),
        (Role::Alice, vec!["pub", "results.victim.1", "forged"]),
        (
            Role::Reader,
            vec!["sub", "results.>", "--count", "1", "--timeout", "1s"],
        ),
        (
            Role::Node,
            vec!["sub", "_INBOX.>", "--count", "1", "--timeout", "1s"],
        ),
    ] {
        let out = s.nats(role, &args);
        assert!(
            denied(&out),
            "{role:?} {args:?} was allowed:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    // Bob listening to results.> sees nothing of alice's batch.
    let bob_sub = std::process::Command::new(tool("nats"))
        .args(["--server", &s.server.url()])
        .args(Role::Bob.flags())
        .args(["sub", "results.>"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let lines: Vec<String> = (0..20).map(|i| format!("genuine-{i}")).collect();
    let alice = submit_as(&s, Role::Alice, "victim", "echo", &lines);
    assert!(alice
        .iter()
        .all(|l| l["result"].as_str().unwrap().starts_with("genuine-")));
    std::thread::sleep(Duration::from_millis(300));
    signal(&bob_sub, "TERM");
    let seen = bob_sub.wait_with_output().unwrap();
    assert!(
        !text(&seen.stdout).contains("genuine"),
        "bob saw alice's results:\n{}",
        text(&seen.stdout)
    );
}

/// A task from bob naming alice's task id or reply subject makes the node
/// write only into bob's own space: alice's results are untouched.
#[test]
fn a_task_cannot_point_the_node_into_another_tenant() {
    let (s, _node) = fleet_up(&[]);
    for header in ["Task-Id:target.1", "Reply-To:results.target.2"] {
        let out = s.nats(Role::Bob, &["req", "tasks.echo", "from-bob", "-H", header]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    std::thread::sleep(Duration::from_millis(500));
    let kept = kept_subjects(&s);
    assert!(
        kept.contains("tenant.bob.results.target.1")
            && kept.contains("tenant.bob.results.target.2"),
        "{kept:?}"
    );
    assert!(!kept.iter().any(|k| k.contains("alice")), "{kept:?}");
    let lines: Vec<String> = vec!["a".into(), "b".into()];
    let alice = submit_as(&s, Role::Alice, "target", "echo", &lines);
    assert_eq!(
        alice
            .iter()
            .map(|l| l["result"].as_str().unwrap())
            .collect::<HashSet<_>>(),
        HashSet::from(["a", "b"])
    );
    assert!(alice.iter().all(|l| l["status"] == "ok"));
}
