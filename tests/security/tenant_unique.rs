//! Tenants' unique keys: each tenant's live in its own schedule stream
//! (`sched.unique.<kind>.<key>` in `SCHEDULES_<tenant>`), so one key has
//! one holder per tenant, and a tenant rolling its stream up wipes only
//! its own keys.

use std::path::Path;
use std::process::{Command, Stdio};

use super::tenant_time::tenants_up;
use super::*;

/// `fleet submit` as `role` with `args`, started when file `go` appears;
/// its standard output goes to `<name>.out` beside it.
fn racer(s: &Secure, go: &Path, role: Role, name: &str, args: &[&str]) -> (KillOnDrop, String) {
    let out = go.with_file_name(format!("{name}.out"));
    let child = Command::new("sh")
        .arg("-c")
        .arg(r#"go="$1"; shift; while [ ! -e "$go" ]; do sleep 0.005; done; exec "$@""#)
        .arg("racer")
        .arg(go)
        .arg(fleet_bin())
        .args(["--nats-url", &s.server.url()])
        .args(role.flags())
        .arg("submit")
        .args(args)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (KillOnDrop(child), out.display().to_string())
}

/// The exit code of `child`, waited for up to 30 s.
fn exit_code(child: &mut KillOnDrop) -> i32 {
    let status = eventually(Duration::from_secs(30), "fleet submit ended", || {
        child.0.try_wait().unwrap()
    });
    status.code().unwrap_or(-1)
}

/// The id holding unique key `name` of `tenant`, read as `role` reads it
/// (the direct get its import maps to its own stream); `None` for a key
/// never taken or freed (a purge marker).
fn holder(s: &Secure, role: Role, tenant: &str, name: &str) -> Option<String> {
    let body = format!(r#"{{"last_by_subj":"tenant.{tenant}.sched.unique.{name}"}}"#);
    let out = s.nats(role, &["req", "$JS.API.DIRECT.GET.SCHEDULES", &body]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let headers = text(&out.stderr);
    let empty = ["404", "KV-Operation", "Nats-Marker-Reason"];
    if empty.iter().any(|e| headers.contains(e)) {
        return None;
    }
    Some(text(&out.stdout).trim().to_string())
}

/// Two of alice's submitters race for one unique key at the same instant,
/// and bob for the same key of the same kind: exactly one of alice's is
/// accepted, the other is refused (409) and told the holder's id; bob's is
/// accepted (his keys are his own). The node frees alice's key when its
/// task ends and her next submit is accepted. The key is never listed as
/// a schedule; the shipped config shows no permission violation.
#[test]
fn a_tenants_unique_key_has_one_holder_in_its_own_space() {
    let (s, _node) = tenants_up();
    let go = s.server.dir.path().join("go");
    let task = |t| vec!["sleep", "2s", "--json", "--tenant", t, "--unique", "K"];
    let mut racers = vec![
        (
            Role::Alice,
            racer(&s, &go, Role::Alice, "a1", &task("alice")),
        ),
        (
            Role::Alice,
            racer(&s, &go, Role::Alice, "a2", &task("alice")),
        ),
        (Role::Bob, racer(&s, &go, Role::Bob, "b", &task("bob"))),
    ];
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&go, "").unwrap();
    let mut ended = Vec::new();
    for (role, (child, out)) in &mut racers {
        let code = exit_code(child);
        let line = json_lines(&std::fs::read(&*out).unwrap()).remove(0);
        ended.push((*role, code, line));
    }
    let alice: Vec<_> = ended.iter().filter(|(r, ..)| *r == Role::Alice).collect();
    let winner: Vec<_> = alice.iter().filter(|(_, code, _)| *code == 0).collect();
    let loser: Vec<_> = alice.iter().filter(|(_, code, _)| *code == 1).collect();
    assert_eq!((winner.len(), loser.len()), (1, 1), "{ended:?}");
    let (winner, loser) = (&winner[0].2, &loser[0].2);
    assert_eq!(winner["status"], "ok", "{winner}");
    assert_eq!(
        (&loser["status"], &loser["code"]),
        (&"refused".into(), &409.into()),
        "{loser}"
    );
    let held_by = winner["id"].as_str().unwrap();
    assert_eq!(
        loser["error"],
        format!("unique key sleep.K is held by task {held_by}")
    );
    let bob = &ended[2];
    assert_eq!((bob.1, &bob.2["status"]), (0, &"ok".into()), "{bob:?}");

    // The holder ended: its node freed the key, the next submit gets it.
    eventually(Duration::from_secs(5), "alice's key freed", || {
        holder(&s, Role::Alice, "alice", "sleep.K")
            .is_none()
            .then_some(())
    });
    let again = s.fleet(
        Role::Alice,
        &[
            "submit", "sleep", "10ms", "--json", "--tenant", "alice", "--unique", "K",
        ],
        b"",
    );
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(json_lines(&again.stdout)[0]["status"], "ok");

    let listed = s.fleet(
        Role::Alice,
        &["schedule", "list", "--tenant", "alice", "--json"],
        b"",
    );
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert!(
        json_lines(&listed.stdout).is_empty(),
        "{}",
        text(&listed.stdout)
    );
    let violations = s.server.violations();
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

/// alice rolls her whole stream up from a unique key's subject
/// (`Nats-Rollup: all` with the `nats` CLI): her own key goes, the fleet's
/// and bob's stay, so while their holders run a fleet-account and a bob
/// submit of the same key are still refused with the holders' ids.
#[test]
fn a_tenants_rollup_wipes_only_its_own_keys() {
    let (s, _node) = tenants_up();
    let go = s.server.dir.path().join("go");
    let hold = ["sleep", "10s", "--json", "--unique", "K", "--batch"];
    let fleet_args: Vec<&str> = hold.iter().copied().chain(["fleet-hold"]).collect();
    let bob_args: Vec<&str> = hold
        .iter()
        .copied()
        .chain(["bob-hold", "--tenant", "bob"])
        .collect();
    let _holders = [
        racer(&s, &go, Role::Admin, "fleet", &fleet_args),
        racer(&s, &go, Role::Bob, "bob", &bob_args),
    ];
    std::fs::write(&go, "").unwrap();
    let take = s.nats(
        Role::Alice,
        &[
            "req",
            "sched.unique.sleep.K",
            "alice-1",
            "-H",
            "Nats-Expected-Last-Subject-Sequence:0",
            "-H",
            "Nats-TTL:1h",
        ],
    );
    assert!(text(&take.stdout).contains("SCHEDULES_alice"), "{take:?}");
    eventually(Duration::from_secs(10), "the holders' keys taken", || {
        let fleet = s.nats(
            Role::Admin,
            &["kv", "get", "fleet-unique", "sleep.K", "--raw"],
        );
        let bob = holder(&s, Role::Bob, "bob", "sleep.K");
        (text(&fleet.stdout).trim() == "fleet-hold.1" && bob.as_deref() == Some("bob-hold.1"))
            .then_some(())
    });
    assert_eq!(
        holder(&s, Role::Alice, "alice", "sleep.K").as_deref(),
        Some("alice-1")
    );

    let attack = s.nats(
        Role::Alice,
        &["req", "sched.unique.x", "", "-H", "Nats-Rollup:all"],
    );
    assert!(
        text(&attack.stdout).contains("SCHEDULES_alice"),
        "her own stream takes it: {attack:?}"
    );
    assert_eq!(holder(&s, Role::Alice, "alice", "sleep.K"), None);

    let again = ["sleep", "10ms", "--json", "--unique", "K"];
    for (role, tenant, held_by) in [
        (Role::Admin, None, "fleet-hold.1"),
        (Role::Bob, Some("bob"), "bob-hold.1"),
    ] {
        let mut args = again.to_vec();
        args.extend(tenant.map(|t| ["--tenant", t]).iter().flatten());
        let mut all = vec!["submit"];
        all.extend(args);
        let out = s.fleet(role, &all, b"");
        assert_eq!(
            out.status.code(),
            Some(1),
            "{role:?}: {}",
            text(&out.stderr)
        );
        let line = &json_lines(&out.stdout)[0];
        assert_eq!(
            line["error"],
            format!("unique key sleep.K is held by task {held_by}"),
            "{role:?}"
        );
    }
    let violations = s.server.violations();
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}
