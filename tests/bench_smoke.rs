//! `bin/bench --quick` end to end: every scenario runs against real servers
//! and processes and lands in the JSON report with a figure above zero.
//! Quick counts prove the script works; they measure nothing.

mod common;

use std::process::Command;

/// Every row `bin/bench` reports; a row missing or at zero fails the test.
const ROWS: &[&str] = &[
    "nats_bench_js_pub",
    "nats_bench_js_consume",
    "echo_ephemeral_w256_1node",
    "echo_kept_w256_1node",
    "echo_ephemeral_w256_2node",
    "echo_kept_w256_2node",
    "echo_ephemeral_w256_4node",
    "echo_kept_w256_4node",
    "echo_ephemeral_w1_p50",
    "echo_ephemeral_w1_p99",
    "echo_ephemeral_w1_p999",
    "echo_kept_w1_p50",
    "echo_kept_w1_p99",
    "echo_kept_w1_p999",
    "sha256_64k",
    "sleep10ms_1node",
    "sleep10ms_2node",
    "sleep10ms_4node",
    "node_rss_idle",
    "node_rss_256_inflight",
    "node_rss_kept_w256",
    "submit_rss_big",
    "node_cpu_kept",
    "submit_cpu_kept",
    "server_cpu_kept",
    "node_cpu_ephemeral",
    "submit_cpu_ephemeral",
    "server_cpu_ephemeral",
    "node_cpu_big",
    "submit_cpu_big",
    "server_cpu_big",
    "echo_kept_w256_sync",
    "echo_kept_w256_sync_c256",
];

#[test]
fn bench_quick_reports_every_scenario() {
    let root = common::root();
    let out = tempfile::tempdir().unwrap();
    let path = format!(
        "{}:{}",
        root.join(".tools/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = Command::new(root.join("bin/bench"))
        .args(["--quick", "--out"])
        .arg(out.path())
        .env("PATH", path)
        .current_dir(&root)
        .output()
        .expect("running bin/bench");
    let stdout = common::text(&run.stdout);
    let stderr = common::text(&run.stderr);
    assert!(
        run.status.success(),
        "bin/bench --quick failed ({}):\n{stdout}\n{stderr}",
        run.status
    );
    eprintln!("{stderr}\n{stdout}");

    let json_path = out.path().join("bench.json");
    let markdown = out.path().join("bench.md");
    assert!(markdown.exists(), "no bench.md in {}", out.path().display());
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json_path).expect("bench.json")).unwrap();

    let meta = &doc["meta"];
    assert!(
        meta["nats_server"]
            .as_str()
            .is_some_and(|v| v.starts_with('v')),
        "meta: {meta}"
    );
    assert!(
        meta["cores"].as_u64().is_some_and(|c| c > 0),
        "meta: {meta}"
    );
    assert_eq!(
        doc["errors"].as_array().map(Vec::len),
        Some(0),
        "errors: {}",
        doc["errors"]
    );

    let rows = doc["rows"].as_array().expect("rows");
    for id in ROWS {
        let row = rows
            .iter()
            .find(|r| r["id"] == *id)
            .unwrap_or_else(|| panic!("row {id} missing from bench.json:\n{stdout}"));
        let value = row["value"]
            .as_f64()
            .unwrap_or_else(|| panic!("row {id} has no value: {row}"));
        assert!(value > 0.0, "row {id} is not above zero: {row}");
        if !row["ceiling_label"].is_null() {
            let ceiling = row["ceiling"].as_f64().unwrap_or(0.0);
            assert!(ceiling > 0.0, "row {id} has no ceiling figure: {row}");
            assert!(
                row["ratio"].as_f64().is_some(),
                "row {id} has no ratio: {row}"
            );
        }
        if !row["target"].is_null() {
            assert!(
                row["pass"].is_boolean(),
                "row {id} has a target but no verdict: {row}"
            );
        }
    }
    assert_eq!(
        rows.len(),
        ROWS.len(),
        "rows the test does not know: update ROWS"
    );
}
