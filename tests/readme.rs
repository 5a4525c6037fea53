//! Every `sh` block of the README runs as written, against a real
//! nats-server with a node, with the real `fleet` and `nats` binaries.
//!
//! Conventions the runner understands (and nothing else): a line ending in
//! `# exits N` must exit with N; `results.N` is the sequence from the PubAck
//! printed by the `nats req` line before it; a line whose comment says
//! "once it ran" reads what a task kept and is tried again until it is
//! there; after a line ending in `&` the runner waits a moment for it to
//! be up. The README's `toml` block is written
//! to `handlers.toml` in the working directory. Each block gets a fresh
//! server, with a node unless the block starts its own.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use fleet_testkit::*;

fn blocks(readme: &str, lang: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match &mut current {
            None if line.trim() == format!("```{lang}") => current = Some(String::new()),
            Some(block) if line.trim() == "```" => {
                out.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    out
}

/// `results.N` with N the sequence of the PubAck the `nats req` before it
/// printed; inside single quotes, the quotes are closed around it.
fn with_seq(command: &str) -> String {
    let seq = "$(grep -o '\"seq\":[0-9]*' req.out | cut -d: -f2)";
    let Some(at) = command.find("results.N") else {
        return command.to_string();
    };
    let quoted = command[..at].matches('\'').count() % 2 == 1;
    let value = if quoted {
        format!("'\"{seq}\"'")
    } else {
        seq.to_string()
    };
    format!(
        "{}results.{value}{}",
        &command[..at],
        &command[at + "results.N".len()..]
    )
}

/// Turns one README block into a script that checks each line's exit code.
fn script(block: &str) -> String {
    let mut out = String::from("set -uo pipefail\n");
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        let (command, comment) = match line.split_once(" #") {
            Some((c, rest)) => (c.trim().to_string(), rest.trim().to_string()),
            None => (line.trim().to_string(), String::new()),
        };
        let command = with_seq(&command);
        let expected: i32 = comment
            .strip_prefix("exits ")
            .and_then(|r| r.split(':').next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        if let Some(bg) = command.strip_suffix('&') {
            if bg.starts_with("nats sub") {
                // Wait until the subscription is in place, as a person would.
                out.push_str(&format!(
                    "{bg} 2> sub.err &\nfor _ in $(seq 100); do grep -q Subscribing sub.err && break; sleep 0.1; done\n"
                ));
            } else {
                out.push_str(&format!("{bg} &\nsleep 2\n"));
            }
            continue;
        }
        if comment.contains("once it ran") {
            // A read of what a task kept: a person would look again until
            // the task has run; so does the runner, for up to 10 s.
            out.push_str(&format!(
                "for _ in $(seq 50); do {command} > once.out 2>&1 && ! grep -qE '404|not found' once.out && break; sleep 0.2; done\ncat once.out\n"
            ));
            continue;
        }
        let command = if command.starts_with("nats req") {
            format!("{command} | tee req.out")
        } else {
            command
        };
        out.push_str(&format!(
            "{command}\nrc=$?\nif [ $rc -ne {expected} ]; then echo \"README line exited $rc, not {expected}: {}\" >&2; exit 1; fi\n",
            command.replace('"', "'").replace('$', "")
        ));
    }
    out
}

/// Runs one block as a script in `work` against `url`; panics with what it
/// printed when a line exits other than the README says. Returns stdout.
fn run_block(block: &str, work: &std::path::Path, url: &str) -> String {
    let path = format!(
        "{}:{}:{}",
        fleet_bin().parent().unwrap().display(),
        tool("nats").parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Output goes to files: what a block leaves running in the background
    // would keep a pipe open.
    let (out_file, err_file) = (work.join("block.out"), work.join("block.err"));
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(script(block))
        .current_dir(work)
        .env("PATH", &path)
        .env("NATS_URL", url)
        .env_remove("NATS_USER")
        .env_remove("NATS_PASSWORD")
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_file).unwrap())
        .stderr(std::fs::File::create(&err_file).unwrap())
        .spawn()
        .unwrap();
    let pgid = child.id();
    let status = child.wait().unwrap();
    // Stop what the block left running in the background.
    let _ = Command::new("kill")
        .args(["-TERM", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
    std::thread::sleep(Duration::from_millis(200));
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
    let stdout = std::fs::read_to_string(&out_file).unwrap();
    let stderr = std::fs::read_to_string(&err_file).unwrap();
    assert!(
        status.success(),
        "README block failed:\n{block}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

/// Runs every `sh` block of the README; checks exit codes and what a reader
/// would look for in the output. `sh secure` blocks run against the
/// locked-down setup of `bin/dev --secure` (deploy/secure/nats.conf, set up
/// by admin, a node as the node role).
#[test]
fn readme_commands_run_as_written() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let sh = blocks(&readme, "sh");
    assert!(sh.len() >= 3, "README lost its sh blocks");
    let work = tempfile::tempdir().unwrap();
    for toml in blocks(&readme, "toml") {
        std::fs::write(work.path().join("handlers.toml"), toml).unwrap();
    }
    let mut all_output = String::new();
    for block in &sh {
        // Each block runs against a fleet of its own: a fresh server, and a
        // node unless the block starts its own (every node of a group must
        // have the same handlers).
        let server = NatsServer::start();
        let _node = (!block.contains("fleet node")).then(|| {
            NodeProc::spawn(
                &server,
                "node1",
                &["--max-deliver", "2", "--retry-delay", "50ms"],
            )
        });
        all_output.push_str(&run_block(block, work.path(), &server.url()));
    }
    // What a reader of each block expects to see.
    assert!(all_output.contains(&sha256_hex(b"hello")), "{all_output}");
    assert!(all_output.lines().any(|l| l.trim() == "hi"), "{all_output}");
    assert!(all_output.contains("MAKE ME LOUD"), "{all_output}");
    assert!(all_output.contains("FROM A FILE"), "{all_output}");
    // The operating block: the node in service discovery, its metrics, the
    // dashboard's fleet-wide view of it.
    assert!(
        all_output.contains("fleet node ops of group workers"),
        "{all_output}"
    );
    assert!(
        all_output.contains(r#"fleet_node_tasks_total{kind="echo",outcome="ok"} 1"#),
        "{all_output}"
    );
    assert!(all_output.contains("fleet_nodes 1"), "{all_output}");
    // The limits block: the limit as listed, and as the nats CLI wrote it.
    assert!(
        all_output.contains("echo: concurrency 3, rate 20/s, per-key concurrency 1"),
        "{all_output}"
    );
    assert!(
        all_output.contains(r#"{"concurrency":3,"per_key_rate":"5/m"}"#),
        "{all_output}"
    );
    assert!(all_output.contains(r#""draining":true"#), "{all_output}");
    assert!(
        all_output.contains("done.1: already finished: ok"),
        "{all_output}"
    );
    assert!(
        all_output.contains("Nats-Service-Error-Code: 499"),
        "{all_output}"
    );
    // Delayed tasks collected later, and a schedule's last run.
    for line in ["one", "two", "ping"] {
        assert!(
            all_output.lines().any(|l| l.trim() == line),
            "{line}: {all_output}"
        );
    }
    // Deadlines, unique tasks, pausing.
    assert!(
        all_output.contains("Nats-Service-Error-Code: 408"),
        "{all_output}"
    );
    assert!(all_output.contains("held by task daily-1"), "{all_output}");
    assert!(all_output.contains("PAUSED until"), "{all_output}");
    let jsonl = std::fs::read_to_string(work.path().join("results.jsonl")).unwrap();
    assert_eq!(jsonl.lines().count(), 1000);

    let secure = blocks(&readme, "sh secure");
    assert!(!secure.is_empty(), "README lost its tenant block");
    for block in &secure {
        let fleet = fleet_testkit::secure::Secure::start();
        // As bin/dev --secure does: room for the tenants' schedules.
        fleet.setup(&["--tenant", "alice", "--tenant", "bob"]);
        let _node = fleet.node("node1", &["--dev-builtins"]);
        let out = run_block(block, work.path(), &fleet.server.url());
        assert!(out.contains(&sha256_hex(b"hello")), "{out}");
        assert!(
            out.lines().any(|l| l.trim() == "hi"),
            "the tenant's direct get: {out}"
        );
        assert!(
            out.contains("held.1: cancelled: marked; its schedule fires now"),
            "the tenant's cancel: {out}"
        );
        // A tenant's unique key: refused while held, its holder as read.
        assert!(out.contains("held by task t3"), "{out}");
        assert!(out.lines().any(|l| l.trim() == "t3"), "{out}");
    }
}
