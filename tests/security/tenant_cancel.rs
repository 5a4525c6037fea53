//! A tenant cancels its own tasks on its own connection (`fleet cancel
//! --tenant`): its marks are kept in its own stream `SCHEDULES_<tenant>` and
//! honoured by nodes under the shipped node role; they reach no other
//! space's tasks, and a tenant's rollup wipes no one else's marks.

use super::tenant_time::{own_result, tenants_up};
use super::*;

/// `fleet cancel --json ARGS` as `role`; its JSON lines (it must succeed).
fn cancel_as(s: &Secure, role: Role, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["cancel", "--json"];
    all.extend_from_slice(args);
    let out = s.fleet(role, &all, b"");
    assert!(out.status.success(), "fleet cancel: {}", text(&out.stderr));
    json_lines(&out.stdout)
}

/// alice's `fleet submit --delay 1h --batch BATCH --no-wait` of `payloads`
/// (or of `stdin`'s lines).
fn delay_an_hour(s: &Secure, batch: &str, payloads: &[&str], stdin: &[u8]) {
    let mut args = vec![
        "submit",
        "echo",
        "--delay",
        "1h",
        "--tenant",
        "alice",
        "--batch",
        batch,
        "--no-wait",
    ];
    args.extend_from_slice(payloads);
    let out = s.fleet(Role::Alice, &args, stdin);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// alice stops her running task and takes back her delayed one: both end as
/// `499 cancelled`, once, and neither runs to its end.
#[test]
fn a_tenant_cancels_its_running_and_delayed_tasks() {
    let (s, _node) = tenants_up();
    let dir = s.server.dir.path();
    std::fs::write(dir.join("in"), "30s\n").unwrap();
    let out = dir.join("out.jsonl");
    let mut submit = KillOnDrop(s.submit_in_background(
        Role::Alice,
        &["sleep", "--json", "--batch", "nap", "--timeout", "20s"],
        &dir.join("in"),
        &out,
    ));
    std::thread::sleep(Duration::from_secs(1));
    let lines = cancel_as(&s, Role::Alice, &["--tenant", "alice", "nap.1"]);
    assert_eq!(
        (lines[0]["id"].as_str(), lines[0]["outcome"].as_str()),
        (Some("nap.1"), Some("marked")),
        "{lines:?}"
    );
    let asked = Instant::now();
    let status = eventually(Duration::from_secs(5), "alice's submit ends", || {
        submit.0.try_wait().unwrap()
    });
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "the running task was not stopped within a second or so: {:?}",
        asked.elapsed()
    );
    assert_eq!(status.code(), Some(1), "a cancelled task is a failure");
    let ended = json_lines(&std::fs::read(&out).unwrap());
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(
        (ended[0]["code"].as_u64(), ended[0]["attempt"].as_u64()),
        (Some(499), Some(1)),
        "{ended:?}"
    );

    // A delayed task, an hour away: its schedule is brought forward and the
    // node keeps its 499 at once.
    delay_an_hour(&s, "later", &["never-echoed"], b"");
    let lines = cancel_as(&s, Role::Alice, &["--tenant", "alice", "later.1"]);
    assert_eq!(lines[0]["outcome"], "fired", "{lines:?}");
    let kept = eventually(Duration::from_secs(10), "the 499 of later.1", || {
        let got = own_result(&s, Role::Alice, "later.1");
        got.contains("Nats-Service-Error-Code").then_some(got)
    });
    assert!(kept.contains("499"), "{kept}");
    assert!(
        !kept.contains("never-echoed"),
        "the delayed task ran: {kept}"
    );
    // A delayed batch, cancelled as a whole: each of its tasks is brought
    // forward and ends as 499.
    delay_an_hour(&s, "lb", &[], b"one\ntwo\n");
    let lines = cancel_as(&s, Role::Alice, &["--tenant", "alice", "--batch", "lb"]);
    let fired: Vec<_> = lines
        .iter()
        .filter(|l| l["outcome"] == "fired")
        .filter_map(|l| l["id"].as_str())
        .collect();
    assert_eq!(fired, ["lb.1", "lb.2"], "{lines:?}");
    for id in fired {
        let kept = eventually(Duration::from_secs(10), "the 499 of a batch's task", || {
            let got = own_result(&s, Role::Alice, id);
            got.contains("Nats-Service-Error-Code").then_some(got)
        });
        assert!(kept.contains("499"), "{id}: {kept}");
    }
    // Asked again, it says how it ended and changes nothing.
    let lines = cancel_as(&s, Role::Alice, &["--tenant", "alice", "later.1"]);
    assert_eq!(
        (lines[0]["outcome"].as_str(), lines[0]["code"].as_u64()),
        (Some("already_finished"), Some(499)),
        "{lines:?}"
    );
}

/// alice cannot cancel bob's task by naming his space (refused) nor by
/// using his id in hers (her own mark), and her `Nats-Rollup: all` onto
/// her marks leaves the fleet's bucket whole; the node's watches of the
/// tenants' streams raise no permission violation.
#[test]
fn a_tenants_cancel_reaches_only_its_own_tasks() {
    let (s, _node) = tenants_up();
    // The fleet's own mark, made before alice's rollup.
    let lines = cancel_as(&s, Role::Admin, &["held"]);
    assert_eq!(lines[0]["outcome"], "marked", "{lines:?}");
    let out = s.nats(
        Role::Bob,
        &["pub", "tasks.sleep", "2s", "-H", "Task-Id:twin"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = s.fleet(Role::Alice, &["cancel", "twin", "--tenant", "bob"], b"");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("--tenant names the tenant whose user is connected"),
        "{}",
        text(&out.stderr)
    );
    let lines = cancel_as(&s, Role::Alice, &["--tenant", "alice", "twin"]);
    assert_eq!(lines[0]["outcome"], "marked", "{lines:?}");
    let out = s.nats(
        Role::Alice,
        &["req", "sched.cancel.task.x", "", "-H", "Nats-Rollup:all"],
    );
    assert!(
        out.status.success() && !text(&out.stdout).contains("error"),
        "alice's rollup of her own stream: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let bob = eventually(Duration::from_secs(10), "bob's task ended", || {
        let got = own_result(&s, Role::Bob, "twin");
        got.contains("Task-Node").then_some(got)
    });
    assert!(
        !bob.contains("Nats-Service-Error"),
        "alice cancelled bob's task: {bob}"
    );
    let out = s.nats(
        Role::Admin,
        &["pub", "tasks.sleep", "30s", "-H", "Task-Id:held"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let held = eventually(Duration::from_secs(10), "the fleet's task ended", || {
        let got = own_result(&s, Role::Admin, "held");
        got.contains("Task-Node").then_some(got)
    });
    assert!(
        held.contains("Nats-Service-Error-Code: 499"),
        "the fleet's mark did not hold after alice's rollup: {held}"
    );
    let violations = s.server.violations();
    assert!(
        violations.is_empty(),
        "permission violations:\n{}",
        violations.join("\n")
    );
}
