//! `fleet dashboard` as its users see it: a real nats-server, two nodes,
//! the dashboard, and headless Chromium (bin/setup installs it; without it
//! these tests fail, they never skip). Also what a tenant's token and the
//! read-only role may and may not do.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fleet_testkit::browser::{Browser, Page};
use fleet_testkit::http::{get, request};
use fleet_testkit::secure::{Role, Secure};
use fleet_testkit::*;

const TOKEN: &str = "operator-token-for-the-test-0123";

/// A running dashboard; killed when dropped.
struct Dashboard {
    _child: KillOnDrop,
    addr: SocketAddr,
}

/// Starts `fleet dashboard` with connection `flags` and the dashboard's own
/// `options` (tokens), and waits for the address it prints.
fn dashboard(urls: &str, flags: &[&str], options: &[&str]) -> Dashboard {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut child: Child = Command::new(fleet_bin())
        .args(["--server", urls])
        .args(flags)
        .args(["dashboard", "--listen", &addr.to_string()])
        .args(options)
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting fleet dashboard");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with(&format!("fleet dashboard: http://{addr}/")),
        "{line}"
    );
    Dashboard {
        _child: KillOnDrop(child),
        addr,
    }
}

fn token_file(dir: &Path, name: &str, token: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{token}\n")).unwrap();
    path.display().to_string()
}

async fn number(page: &Page, css: &str) -> u64 {
    page.text(css)
        .await
        .unwrap()
        .replace(',', "")
        .trim()
        .parse()
        .unwrap_or(u64::MAX)
}

/// The page agrees with `fleet status --json` (polled: the page reads the
/// fleet once a second).
async fn page_matches_status(page: &Page, server: &NatsServer) {
    let out = fleet(server, &["status", "--json"], b"");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let group = &status["groups"][0];
    let expected = [
        ("#tasks-total", &status["tasks"]),
        ("#results-total", &status["results"]),
        ("#dead-total", &status["dead"]),
        ("#groups tr[data-group=workers] .pending", &group["pending"]),
        (
            "#groups tr[data-group=workers] .in-flight",
            &group["in_flight"],
        ),
    ];
    for (css, want) in expected {
        let condition = format!(
            "Number(document.querySelector({css:?}).textContent.replace(/,/g, '')) === {want}"
        );
        page.wait_for(&condition, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{css} never showed {want}: {e}"));
    }
}

/// The whole page in a real browser: live numbers equal to `fleet status`,
/// a chart that moves while tasks run, nodes from service discovery, dead
/// letters shown as text, Replay that re-runs a task whose result then shows
/// in the task lookup, and actions without the token refused.
#[test]
fn the_dashboard_shows_the_fleet_and_acts_on_it() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    // Fails until the file `ready` exists: a dead letter worth replaying.
    let flaky = format!(
        "flaky=test -f {} && cat || {{ echo 'not ready yet' >&2; exit 3; }}",
        ready.display()
    );
    let node_args = ["--max-deliver", "1", "--exec", &flaky];
    let _nodes = [
        NodeProc::spawn(&server, "node1", &node_args),
        NodeProc::spawn(&server, "node2", &node_args),
    ];
    let dash = dashboard(
        &server.url(),
        &[],
        &["--web-token-file", &token_file(dir.path(), "token", TOKEN)],
    );
    let base = format!("http://{}", dash.addr);

    rt().block_on(async {
        let browser = Browser::launch().await.expect("Chromium (bin/setup installs it)");
        let page = browser.new_page().await.unwrap();
        page.goto(&format!("{base}/#token={TOKEN}")).await.unwrap();
        page.wait_for("document.querySelector('#live').textContent === 'live'", Duration::from_secs(10))
            .await
            .expect("the page streams the fleet's state");
        page.wait_for("document.querySelectorAll('#nodes tbody tr').length === 2", Duration::from_secs(10))
            .await
            .expect("both nodes listed");
        let names = page.eval("[...document.querySelectorAll('#nodes tbody tr .name')].map(e => e.textContent).sort().join(' ')").await.unwrap();
        assert_eq!(names, "node1 node2");

        // Work for a few seconds: the chart has to move while it runs.
        let input = dir.path().join("sleeps");
        std::fs::write(&input, "100ms\n".repeat(300)).unwrap();
        let mut batch = spawn_submit(&server, &["sleep", "--window", "10", "--no-progress"], &input, &dir.path().join("out"));
        page.wait_for("Number(document.querySelector('#chart').dataset.max) > 0", Duration::from_secs(15))
            .await
            .expect("the throughput chart moves while tasks run");
        let rate = page.text("#rate-ok").await.unwrap();
        assert!(rate.ends_with("/s") && rate.trim_end_matches("/s").replace(',', "").parse::<u64>().is_ok(), "{rate}");
        assert!(batch.wait().unwrap().success());

        // Three tasks fail for good: three dead letters, shown as text.
        let hostile = "<img src=x onerror=\"document.title='owned'\">";
        let failed = fleet(&server, &["submit", "flaky", "--batch", "dash", "--no-progress"], format!("hello\n{hostile}\nthird\n").as_bytes());
        assert_eq!(failed.status.code(), Some(1), "{}", text(&failed.stderr));
        page.wait_for("document.querySelectorAll('#dead tbody tr').length === 3", Duration::from_secs(15))
            .await
            .expect("the dead letters appear");
        let shown = page.eval("[...document.querySelectorAll('#dead .payload')].map(e => e.textContent).join('|')").await.unwrap();
        assert!(shown.as_str().unwrap().contains(hostile), "{shown}");
        assert_eq!(page.eval("document.querySelectorAll('#dead img').length").await.unwrap(), 0);
        assert_ne!(page.eval("document.title").await.unwrap(), "owned");
        page_matches_status(&page, &server).await;
        assert_eq!(number(&page, "#dead-total").await, 3);

        // Actions need the token: the page's own fetch without it, and a
        // request from elsewhere with it (no Origin) are both refused.
        let status = page
            .eval("fetch('/api/dead/replay', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify({seqs: [1]})}).then(r => r.status)")
            .await
            .unwrap();
        assert_eq!(status, 401);
        let auth = format!("Bearer {TOKEN}");
        let foreign = request(dash.addr, "POST", "/api/dead/delete", &[("Authorization", &auth), ("Content-Type", "application/json")], r#"{"seqs":[1]}"#).unwrap();
        assert_eq!(foreign.status, 403, "{}", foreign.body);
        assert_eq!(number(&page, "#dead-total").await, 3, "nothing was deleted");

        // Replay the first once it can succeed; its result shows in the lookup.
        std::fs::write(&ready, "").unwrap();
        page.eval("[...document.querySelectorAll('#dead tbody tr')].find(tr => tr.querySelector('.id').textContent === 'dash.1').querySelector('input').click()").await.unwrap();
        page.click("#replay").await.unwrap();
        page.wait_for("document.querySelector('#action-message').textContent === 'replayed 1'", Duration::from_secs(10))
            .await
            .expect("the replay is confirmed");
        page.wait_for("document.querySelectorAll('#dead tbody tr').length === 2", Duration::from_secs(10)).await.unwrap();
        page.eval("document.querySelector('#task-id').value = 'dash.1'").await.unwrap();
        page.click("#lookup button").await.unwrap();
        let found = page
            .wait_for("document.querySelector('#task-result .result')?.textContent === 'hello' && document.querySelector('#task-result').textContent", Duration::from_secs(15))
            .await
            .expect("the replayed task's result is found");
        assert!(found.as_str().unwrap().contains("Task-Node"), "{found}");
        page_matches_status(&page, &server).await;

        let shot = std::env::var_os("FLEET_SCREENSHOT")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| dir.path().join("dashboard.png"));
        page.screenshot(&shot).await.unwrap();
        assert!(std::fs::metadata(&shot).unwrap().len() > 20_000, "an empty screenshot");
        assert!(page.console_errors().is_empty(), "{:?}", page.console_errors());
    });
}

/// A tenant's token sees and acts on that tenant's part only; the fleet-wide
/// metrics are the operator's; a dashboard run as the read-only role is
/// refused every change by the server itself.
#[test]
fn tokens_and_roles_bound_what_the_dashboard_shows_and_does() {
    let secure = Secure::start();
    secure.setup(&[]);
    let _node = secure.node("node1", &["--dev-builtins", "--max-deliver", "1"]);
    for (role, batch) in [(Role::Alice, "a"), (Role::Bob, "b")] {
        let out = secure.fleet(
            role,
            &["submit", "fail", "--batch", batch, "--no-progress"],
            b"x\n",
        );
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        let ok = secure.fleet(
            role,
            &[
                "submit",
                "echo",
                "--batch",
                &format!("{batch}ok"),
                "--no-progress",
            ],
            b"mine\n",
        );
        assert!(ok.status.success(), "{}", text(&ok.stderr));
    }
    let dir = tempfile::tempdir().unwrap();
    let alice_token = "alice-token-for-the-test-012345";
    let admin: Vec<String> = Role::Admin.flags();
    let flags: Vec<&str> = admin.iter().map(String::as_str).collect();
    let operator_file = token_file(dir.path(), "op", TOKEN);
    let alice_spec = format!("alice={}", token_file(dir.path(), "alice", alice_token));
    let dash = dashboard(
        &secure.server.url(),
        &flags,
        &[
            "--web-token-file",
            &operator_file,
            "--tenant-token",
            &alice_spec,
        ],
    );
    let as_alice = format!("Bearer {alice_token}");
    let as_operator = format!("Bearer {TOKEN}");
    let call = |method: &str, path: &str, auth: &str, body: &str| {
        let origin = format!("http://{}", dash.addr);
        let headers = [
            ("Authorization", auth),
            ("Content-Type", "application/json"),
            ("Origin", origin.as_str()),
        ];
        request(dash.addr, method, path, &headers, body).unwrap()
    };

    let letters = call("GET", "/api/dead", &as_alice, "").json();
    let letters = letters["letters"].as_array().unwrap().clone();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["tenant"], "alice");
    let all = call("GET", "/api/dead", &as_operator, "").json();
    let bobs = all["letters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["tenant"] == "bob")
        .unwrap()["seq"]
        .clone();
    assert_eq!(
        call(
            "POST",
            "/api/dead/delete",
            &as_alice,
            &format!("{{\"seqs\":[{bobs}]}}")
        )
        .status,
        403
    );
    assert_eq!(
        call("GET", "/api/task?id=bok.1", &as_alice, "").json()["found"],
        false,
        "bob's result"
    );
    let own = call("GET", "/api/task?id=aok.1", &as_alice, "").json();
    assert_eq!(
        (own["found"].clone(), own["preview"].clone()),
        (true.into(), "mine".into()),
        "{own}"
    );
    assert_eq!(call("GET", "/metrics", &as_alice, "").status, 403);
    assert!(
        get(dash.addr, "/api/state").unwrap().status == 401,
        "a token is needed when tokens are set"
    );
    let state = eventually_state(dash.addr, &as_alice);
    assert_eq!(state["scope"]["tenant"], "alice");
    assert_eq!(state["nodes"], serde_json::json!([]));

    // The same dashboard as the read-only role: it reads, the server refuses changes.
    let reader: Vec<String> = Role::Reader.flags();
    let reader_flags: Vec<&str> = reader.iter().map(String::as_str).collect();
    let ro = dashboard(
        &secure.server.url(),
        &reader_flags,
        &["--web-token-file", &operator_file],
    );
    let origin = format!("http://{}", ro.addr);
    let headers = [
        ("Authorization", as_operator.as_str()),
        ("Content-Type", "application/json"),
        ("Origin", origin.as_str()),
    ];
    let listed = request(ro.addr, "GET", "/api/dead", &headers, "").unwrap();
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(
        listed.json()["letters"].as_array().unwrap().len(),
        2,
        "{}",
        listed.body
    );
    let refused = request(
        ro.addr,
        "POST",
        "/api/dead/delete",
        &headers,
        &format!("{{\"seqs\":[{bobs}]}}"),
    )
    .unwrap();
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("ermission"), "{}", refused.body);
    let metrics = request(ro.addr, "GET", "/metrics", &headers, "").unwrap();
    assert!(
        metrics
            .body
            .contains("fleet_dead_letters{tenant=\"bob\",kind=\"fail\"} 1"),
        "{}",
        metrics.body
    );
}

/// The state once the dashboard has read the fleet at least once.
fn eventually_state(addr: SocketAddr, auth: &str) -> serde_json::Value {
    for _ in 0..100 {
        let state = request(addr, "GET", "/api/state", &[("Authorization", auth)], "")
            .unwrap()
            .json();
        if !state["status"].is_null() {
            return state;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the dashboard never read the fleet");
}
