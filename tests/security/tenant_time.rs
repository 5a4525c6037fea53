//! Tenants' delayed tasks and schedules: each fires inside the tenant's own
//! space (its stream `SCHEDULES_<tenant>` has no other subject), and a
//! hostile tenant's schedule aimed at the fleet's or another tenant's space
//! is refused by the server and never runs there.

use super::*;

/// The shipped setup with room for both tenants' schedules, one node.
pub(super) fn tenants_up() -> (Secure, NodeProc) {
    let s = Secure::start();
    s.setup(&["--tenant", "alice", "--tenant", "bob"]);
    let node = s.node("node1", &["--dev-builtins"]);
    (s, node)
}

/// What `role` reads of its own kept result `results.<id>` (a direct get
/// through its import): headers and payload.
fn own_result(s: &Secure, role: Role, id: &str) -> String {
    let subject = format!("$JS.API.DIRECT.GET.RESULTS.results.{id}");
    let out = s.nats(role, &["req", &subject, ""]);
    // The nats CLI prints the headers on stderr, the payload on stdout.
    format!("{}{}", text(&out.stderr), text(&out.stdout))
}

/// A time `secs` from now, to the second, as `@at` takes it.
fn at_in(secs: u64) -> String {
    let t = std::time::SystemTime::now() + Duration::from_secs(secs);
    let unix = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{unix}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    text(&out.stdout).trim().to_string()
}

/// alice's `fleet submit --delay` runs at its time, inside her space: she
/// collects it, bob cannot read it, nothing lands outside her space; the
/// `nats` CLI does the same with headers alone.
#[test]
fn a_tenants_delayed_task_runs_at_its_time_in_its_own_space() {
    let (s, _node) = tenants_up();
    let started = Instant::now();
    let out = s.fleet(
        Role::Alice,
        &[
            "submit", "echo", "--delay", "2s", "--tenant", "alice", "--batch", "later", "--json",
            "hello",
        ],
        b"",
    );
    let took = started.elapsed();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["result"], "hello", "{lines:?}");
    assert_eq!(lines[0]["status"], "ok", "{lines:?}");
    assert!(
        took >= Duration::from_secs(2),
        "ran before its time: {took:?}"
    );

    // The nats CLI: the schedule names alice's own target.
    let at = at_in(1);
    let out = s.nats(
        Role::Alice,
        &[
            "req",
            "sched.task.cli1",
            "from-nats",
            "-H",
            &format!("Nats-Schedule:@at {at}"),
            "-H",
            "Nats-Schedule-Target:tenant.alice.due.echo",
            "-H",
            "Task-Id:cli1",
            "-H",
            "Nats-TTL:never",
        ],
    );
    assert!(
        text(&out.stdout).contains("SCHEDULES_alice"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    eventually(
        Duration::from_secs(10),
        "the nats CLI's delayed task ran",
        || {
            own_result(&s, Role::Alice, "cli1")
                .contains("from-nats")
                .then_some(())
        },
    );

    // Kept in alice's space only; bob sees none of it.
    let kept = kept_subjects(&s);
    assert!(
        kept.contains("tenant.alice.results.later.1") && kept.contains("tenant.alice.results.cli1"),
        "{kept:?}"
    );
    assert!(
        kept.iter().all(|k| k.starts_with("tenant.alice.")),
        "{kept:?}"
    );
    let bob = s.fleet(Role::Bob, &["results", "later", "--tenant", "bob"], b"");
    assert_eq!(bob.status.code(), Some(1), "{}", text(&bob.stderr));
    assert!(!text(&bob.stdout).contains("hello"));
    assert!(!own_result(&s, Role::Bob, "later.1").contains("hello"));
    // Naming alice does not open her space to bob: his imports are his.
    let bob = s.fleet(Role::Bob, &["results", "later", "--tenant", "alice"], b"");
    assert!(
        !text(&bob.stdout).contains("hello"),
        "{}",
        text(&bob.stdout)
    );
}

/// alice aims schedules at the fleet's `due.echo`, at bob's space and at
/// bob's schedule: the server refuses each (the target is not a subject of
/// her stream), nothing runs as the fleet's or bob's, bob's schedule keeps
/// firing, and alice cannot read bob's schedules. A task of hers that
/// forges a scheduler of bob's is dropped without a result.
#[test]
fn a_tenants_schedule_never_fires_outside_its_space() {
    let (s, _node) = tenants_up();
    // bob's own schedule, waiting (an hour away).
    let out = s.fleet(
        Role::Bob,
        &[
            "submit",
            "echo",
            "--at",
            &at_in(3600),
            "--tenant",
            "bob",
            "--batch",
            "bobs",
            "--no-wait",
            "bob-secret",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    for target in [
        "due.echo",
        "tenant.bob.due.echo",
        "tenant.bob.sched.task.bobs.1",
        "sched.task.x",
    ] {
        let out = s.nats(
            Role::Alice,
            &[
                "req",
                "sched.task.evil",
                "evil",
                "-H",
                "Nats-Schedule:@at 2020-01-01T00:00:00Z",
                "-H",
                &format!("Nats-Schedule-Target:{target}"),
                "-H",
                "Task-Id:bobs.1",
                "-H",
                "Nats-TTL:never",
            ],
        );
        let said = text(&out.stdout);
        assert!(
            said.contains("10190") && said.contains("target is invalid"),
            "alice's schedule aimed at {target} was not refused: {said}{}",
            text(&out.stderr)
        );
    }
    // A task of alice's that claims a scheduler of bob's: dropped, no result.
    let out = s.nats(
        Role::Alice,
        &[
            "req",
            "tasks.echo",
            "forged",
            "-H",
            "Nats-Scheduler:tenant.bob.sched.task.bobs.1",
            "-H",
            "Task-Id:forged1",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A genuine task of alice's after it: once it ran, the forged one was
    // taken too (one node, in order).
    let genuine = submit_as(&s, Role::Alice, "after", "echo", &["ok".to_string()]);
    assert_eq!(genuine[0]["result"], "ok");
    let kept = kept_subjects(&s);
    assert!(
        !kept.iter().any(|k| k.starts_with("results.")
            || k.starts_with("tenant.bob.")
            || k.contains("forged1")),
        "something ran outside alice's space: {kept:?}"
    );
    // bob's schedule is still there, and alice cannot read it.
    let bobs = s.nats(
        Role::Bob,
        &[
            "req",
            "$JS.API.DIRECT.GET.SCHEDULES",
            r#"{"last_by_subj":"tenant.bob.sched.task.bobs.1"}"#,
        ],
    );
    assert!(
        text(&bobs.stdout).contains("bob-secret"),
        "{}",
        text(&bobs.stdout)
    );
    let peek = s.nats(
        Role::Alice,
        &[
            "req",
            "$JS.API.DIRECT.GET.SCHEDULES",
            r#"{"last_by_subj":"tenant.bob.sched.task.bobs.1"}"#,
        ],
    );
    assert!(
        !text(&peek.stdout).contains("bob-secret"),
        "alice read bob's schedule: {}",
        text(&peek.stdout)
    );
}

/// Results alice keeps of her schedule `name`'s runs.
fn runs_of(s: &Secure, name: &str) -> usize {
    let prefix = format!("tenant.alice.results.sched.{name}.");
    kept_subjects(s)
        .iter()
        .filter(|k| k.starts_with(&prefix))
        .count()
}

/// alice's recurring schedule fires into her space and she lists it with
/// its last run; bob neither sees nor removes it; once alice removes it,
/// it fires no more.
#[test]
fn a_tenants_recurring_schedule_fires_lists_and_goes() {
    let (s, _node) = tenants_up();
    let alice = |args: &[&str]| s.fleet(Role::Alice, args, b"");
    let out = alice(&[
        "schedule", "add", "tick", "--every", "1s", "echo", "ping", "--tenant", "alice",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("added schedule tick"),
        "{}",
        text(&out.stdout)
    );
    let listed = eventually(Duration::from_secs(15), "alice's schedule ran", || {
        let out = alice(&["schedule", "list", "--json", "--tenant", "alice"]);
        let lines = json_lines(&out.stdout);
        let ran = lines.first()?.get("last_run")?.get("status")? == "ok";
        ran.then_some(lines)
    });
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["name"], "tick");
    assert_eq!(listed[0]["kind"], "echo");

    // bob has no schedule, and cannot remove alice's (his names are his).
    let out = s.fleet(
        Role::Bob,
        &["schedule", "list", "--json", "--tenant", "bob"],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(json_lines(&out.stdout).is_empty(), "{}", text(&out.stdout));
    for claimed in ["bob", "alice"] {
        let out = s.fleet(
            Role::Bob,
            &["schedule", "remove", "tick", "--tenant", claimed],
            b"",
        );
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    }
    let before = runs_of(&s, "tick");
    eventually(
        Duration::from_secs(10),
        "alice's schedule still fires",
        || (runs_of(&s, "tick") > before).then_some(()),
    );
    let kept = kept_subjects(&s);
    assert!(
        kept.iter()
            .all(|k| k.starts_with("tenant.alice.results.sched.tick.")),
        "{kept:?}"
    );

    let out = alice(&["schedule", "remove", "tick", "--tenant", "alice"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A run fired just before may still be on its way.
    std::thread::sleep(Duration::from_millis(500));
    let removed_at = runs_of(&s, "tick");
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        runs_of(&s, "tick") <= removed_at + 1,
        "the schedule fired after it was removed"
    );
    let out = alice(&["schedule", "remove", "tick", "--tenant", "alice"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let out = alice(&["schedule", "list", "--json", "--tenant", "alice"]);
    assert!(json_lines(&out.stdout).is_empty(), "{}", text(&out.stdout));
}

/// alice cannot cancel bob's task: `fleet cancel` as alice is refused, and
/// so is writing a cancel mark by hand (tenants write no marks yet), and
/// bob's task runs to its end.
#[test]
fn a_tenant_cannot_cancel_another_tenants_task() {
    let (s, _node) = tenants_up();
    let out = s.nats(
        Role::Bob,
        &["req", "tasks.sleep", "1s", "-H", "Task-Id:short1"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = s.fleet(Role::Alice, &["cancel", "short1", "--tenant", "bob"], b"");
    assert!(!out.status.success(), "{}", text(&out.stdout));
    for key in ["tenant.bob.task.short1", "task.short1"] {
        let out = s.nats(
            Role::Alice,
            &["req", &format!("$KV.fleet-cancel.{key}"), "x"],
        );
        assert!(
            denied(&out),
            "alice wrote the mark {key}: {}",
            text(&out.stdout)
        );
    }
    let bob = eventually(Duration::from_secs(10), "bob's task ended", || {
        let got = own_result(&s, Role::Bob, "short1");
        got.contains("Task-Node").then_some(got)
    });
    assert!(
        !bob.contains("Nats-Service-Error"),
        "alice cancelled bob's task: {bob}"
    );
}
