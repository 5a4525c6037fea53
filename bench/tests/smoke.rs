//! `fleet-bench --quick` end to end: every scenario runs against real
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

    assert!(
        out.path().join("bench.md").exists(),
        "no bench.md in {}",
        out.path().display()
    );
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
