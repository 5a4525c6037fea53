//! `fleet-bench --quick` end to end: every scenario (fleet, the loop, the
//! Go and apalis peers, the 3-server cluster, fleet under the shipped
//! least-privilege config as admin and as a tenant, 3 nodes on 1, 2 and 3
//! hosts made of network namespaces, which needs root; queue waits by
//! priority band behind a low flood; a concurrency and a rate limit) runs against real
//! servers and processes and lands in the JSON report with a figure above
//! zero. Quick counts prove the benchmark works; they measure nothing.

use std::process::Command;

use fleet_bench::ROWS;

#[test]
fn bench_quick_reports_every_scenario() {
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_fleet-bench"))
        .args(["--quick", "--out"])
        .arg(out.path())
        .output()
        .expect("running fleet-bench");
    let stdout = fleet_testkit::text(&run.stdout);
    let stderr = fleet_testkit::text(&run.stderr);
    assert!(
        run.status.success(),
        "fleet-bench --quick failed ({}):\n{stdout}\n{stderr}",
        run.status
    );
    eprintln!("{stderr}\n{stdout}");

    // The Markdown says when, on what and at which commit, before any figure.
    let md = std::fs::read_to_string(out.path().join("bench.md")).expect("bench.md");
    let head: Vec<&str> = md.lines().take(6).collect();
    for key in ["- date: 20", "- nats-server: v", "- git commit: "] {
        assert!(
            head.iter().any(|l| l.starts_with(key)),
            "bench.md does not open with {key:?}:\n{}",
            head.join("\n")
        );
    }
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("bench.json")).expect("bench.json"))
            .unwrap();
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

    // Every run that ran tasks keeps both rates: the steady one the table
    // compares and the whole-run one.
    for (name, rounds) in doc["runs"].as_object().expect("runs") {
        for run in rounds.as_array().expect("rounds") {
            if run["tasks"].as_f64().unwrap_or(0.0) > 0.0 {
                for rate in ["steady_tasks_per_s", "tasks_per_s"] {
                    assert!(
                        run[rate].as_f64().is_some_and(|r| r > 0.0),
                        "run {name} has no {rate}: {run}"
                    );
                }
            }
        }
    }

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
            // A miss says by how much.
            assert_eq!(
                row["pass"] == false,
                row["miss_by"].is_string(),
                "row {id}: a miss and its shortfall go together: {row}"
            );
        }
    }
    assert_eq!(
        rows.len(),
        ROWS.len(),
        "rows the test does not know: update ROWS"
    );
}
