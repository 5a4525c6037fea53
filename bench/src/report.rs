//! The table of `bin/bench`: one row per figure, each beside the reference
//! it is held to (the hand-written loop doing the same work, a peer, or an
//! ideal), their ratio and, where there is one, the target with the
//! shortfall of a miss. Printed as text, written as Markdown and JSON.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// A target a row is held to.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// ratio >= x
    RatioAtLeast(f64),
    /// ratio <= x
    RatioAtMost(f64),
    /// value <= x
    ValueAtMost(f64),
}

/// One figure.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Stable id (see [`crate::ROWS`]).
    pub id: String,
    /// Section of the table.
    pub group: String,
    /// What it is.
    pub label: String,
    /// The figure measured (fleet's, or a peer's in the peer rows).
    pub value: Option<f64>,
    /// Its unit.
    pub unit: String,
    /// The reference: the same work by the hand-written loop, by a peer,
    /// by fleet on one server, or the ideal. (Named `ceiling` in the JSON
    /// since the loop was the only reference once.)
    pub ceiling: Option<f64>,
    /// What the reference is.
    pub ceiling_label: Option<String>,
    /// value / reference.
    pub ratio: Option<f64>,
    /// The target, as text.
    pub target: Option<String>,
    /// Whether the target is met.
    pub pass: Option<bool>,
    /// How far a missed target is missed, in the target's terms (ratio, or
    /// the unit for a limit on the value); `None` when met or unknown.
    pub shortfall: Option<f64>,
    /// The shortfall as the table shows it: `0.15` for a ratio, `1.2 MiB`
    /// for a limit on the value.
    pub miss_by: Option<String>,
    /// How it was measured.
    pub note: String,
}

/// A row; `ratio` and `pass` follow from the figures.
#[allow(clippy::too_many_arguments)]
pub fn row(
    id: &str,
    group: &str,
    label: &str,
    value: Option<f64>,
    unit: &str,
    ceiling: Option<f64>,
    ceiling_label: Option<&str>,
    target: Option<Target>,
    note: String,
) -> Row {
    let ratio = match (value, ceiling) {
        (Some(v), Some(c)) if c > 0.0 => Some(v / c),
        _ => None,
    };
    // (text, how far the figure is on the wrong side of the target, the
    // unit that distance is in).
    let (target_text, short, short_unit) = match target {
        None => (None, None, ""),
        Some(Target::RatioAtLeast(x)) => {
            (Some(format!("ratio >= {x:.2}")), ratio.map(|r| x - r), "")
        }
        Some(Target::RatioAtMost(x)) => {
            (Some(format!("ratio <= {x:.2}")), ratio.map(|r| r - x), "")
        }
        Some(Target::ValueAtMost(x)) => {
            (Some(format!("<= {x} {unit}")), value.map(|v| v - x), unit)
        }
    };
    let pass = short.map(|s| s <= 0.0);
    let shortfall = short.filter(|s| *s > 0.0);
    // Two decimals, or three for a miss that two would show as 0.00.
    let miss_by = shortfall.map(|by| match short_unit {
        "" if by < 0.005 => format!("{by:.3}"),
        "" => format!("{by:.2}"),
        unit => fmt(Some(by), unit),
    });
    Row {
        id: id.to_string(),
        group: group.to_string(),
        label: label.to_string(),
        value,
        unit: unit.to_string(),
        ceiling,
        ceiling_label: ceiling_label.map(str::to_string),
        ratio,
        target: target_text,
        pass,
        shortfall,
        miss_by,
        note,
    }
}

fn thousands(n: f64, decimals: usize) -> String {
    let text = format!("{:.*}", decimals, n.abs());
    let (int, frac) = text
        .split_once('.')
        .map_or((text.as_str(), None), |(i, f)| (i, Some(f)));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if n < 0.0 { "-" } else { "" };
    match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

/// A figure with its unit, as the table shows it.
pub fn fmt(value: Option<f64>, unit: &str) -> String {
    let Some(v) = value else {
        return "n/a".to_string();
    };
    let number = match unit {
        "tasks/s" | "msgs/s" | "us" => thousands(v, 0),
        "MiB" => format!("{v:.1}"),
        "MiB/s" => thousands(v, 1),
        "CPU s/100k" => format!("{v:.2}"),
        _ => thousands(v, 2),
    };
    format!("{number} {unit}")
}

/// The header of the table.
pub const HEADERS: [&str; 6] = ["figure", "measured", "reference", "ratio", "target", "note"];

/// What the ratios mean, above the table.
pub const RATIO_NOTE: &str = "ratio = measured / reference. The reference is the hand-written loop (bench/src/bin/ceiling.rs) \
doing the same work in the same mode, unless the row says otherwise: apalis-nats for \"fleet kept vs apalis\", \
fleet kept on one server for the cluster, fleet kept with auth off for least privilege, fleet on loopback for nodes on 1 \
host and fleet with nodes on 1 host for 2 and 3 hosts, the ideal for sleep, the low flood's drain for queue waits \
by priority, fleet with no limit for a concurrency limit, the --rate for a rate limit. Throughput is the steady rate (10th to 90th \
percentile of task ends); every figure is the median of the interleaved rounds. For tasks/s and MiB/s higher \
is better; for us, MiB and CPU lower is.";

fn cells(r: &Row) -> [String; 6] {
    let mut ceiling = r.ceiling.map(|c| fmt(Some(c), &r.unit)).unwrap_or_default();
    if let Some(label) = &r.ceiling_label {
        ceiling.push_str(&format!(" ({label})"));
    }
    let ratio = r.ratio.map(|x| format!("{x:.2}")).unwrap_or_default();
    let target = match (&r.target, r.pass) {
        (Some(t), Some(true)) => format!("{t}: pass"),
        (Some(t), Some(false)) => match &r.miss_by {
            Some(by) => format!("{t}: MISS by {by}"),
            None => format!("{t}: MISS"),
        },
        (Some(t), None) => format!("{t}: n/a"),
        (None, _) => String::new(),
    };
    [
        r.label.clone(),
        fmt(r.value, &r.unit),
        ceiling,
        ratio,
        target,
        r.note.clone(),
    ]
}

/// The table as aligned text, a section per group.
pub fn text_table(rows: &[Row]) -> String {
    let all: Vec<[String; 6]> = rows.iter().map(cells).collect();
    let widths: Vec<usize> = (0..5)
        .map(|i| {
            all.iter()
                .map(|c| c[i].len())
                .chain([HEADERS[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |c: &[String]| {
        let mut out = String::new();
        for (i, w) in widths.iter().enumerate() {
            out.push_str(&format!("{:<w$}  ", c[i], w = w));
        }
        out.push_str(&c[5]);
        out.trim_end().to_string()
    };
    let mut out = vec![
        line(&HEADERS.map(str::to_string)),
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  ")
            + "  ----",
    ];
    let mut group = "";
    for (r, c) in rows.iter().zip(&all) {
        if r.group != group {
            group = &r.group;
            out.push(format!("[{group}]"));
        }
        out.push(line(c));
    }
    out.join("\n")
}

/// The table as Markdown: first when, on what server version and at which
/// commit it was measured (a figure without those cannot be compared with
/// the next run), then what the ratios mean.
pub fn markdown(meta: &serde_json::Value, rows: &[Row], errors: &[String]) -> String {
    let text = |key: &str| meta[key].as_str().unwrap_or("").to_string();
    let mut out = vec![
        "# fleet benchmark".to_string(),
        String::new(),
        format!("- date: {}  ", text("date")),
        format!("- nats-server: {}  ", text("nats_server")),
        format!("- git commit: {}  ", text("git")),
        format!(
            "- {} cores, mode {}, median of {} interleaved round(s), {:.0} s in all",
            meta["cores"],
            text("mode"),
            meta["rounds"],
            meta["runtime_s"].as_f64().unwrap_or(0.0)
        ),
        String::new(),
        format!("{RATIO_NOTE} Absolute numbers are noise on a shared machine; the ratios are the result."),
    ];
    let mut group = "";
    for r in rows {
        if r.group != group {
            group = &r.group;
            out.push(String::new());
            out.push(format!("## {group}"));
            out.push(String::new());
            out.push(format!("| {} |", HEADERS.join(" | ")));
            out.push(format!("|{}", "---|".repeat(HEADERS.len())));
        }
        let c = cells(r).map(|s| s.replace('|', "/"));
        out.push(format!("| {} |", c.join(" | ")));
    }
    if !errors.is_empty() {
        out.push(String::new());
        out.push("## errors".into());
        out.push(String::new());
        out.extend(errors.iter().map(|e| format!("- {e}")));
    }
    out.join("\n") + "\n"
}

/// Writes `bench.json` and `bench.md` (and time-stamped copies) to `dir`;
/// returns the path of `bench.json`.
pub fn write(
    dir: &Path,
    meta: &serde_json::Value,
    rows: &[Row],
    runs: &serde_json::Value,
    errors: &[String],
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let doc = serde_json::json!({"meta": meta, "rows": rows, "runs": runs, "errors": errors});
    let stamp: String = meta["date"]
        .as_str()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(15)
        .collect();
    let md = markdown(meta, rows, errors);
    for name in ["bench".to_string(), format!("bench-{stamp}")] {
        std::fs::write(
            dir.join(format!("{name}.json")),
            serde_json::to_string_pretty(&doc)? + "\n",
        )?;
        std::fs::write(dir.join(format!("{name}.md")), &md)?;
    }
    Ok(dir.join("bench.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_grouped_by_thousands() {
        assert_eq!(fmt(Some(29719.4), "tasks/s"), "29,719 tasks/s");
        assert_eq!(fmt(Some(221.04), "MiB/s"), "221.0 MiB/s");
        assert_eq!(fmt(Some(1004.8859), "x"), "1,004.89 x");
        assert_eq!(fmt(None, "us"), "n/a");
    }

    #[test]
    fn ratios_and_verdicts_follow_from_the_figures() {
        let r = row(
            "a",
            "g",
            "l",
            Some(90.0),
            "tasks/s",
            Some(100.0),
            Some("plain"),
            Some(Target::RatioAtLeast(0.9)),
            String::new(),
        );
        assert_eq!((r.ratio, r.pass), (Some(0.9), Some(true)));
        let r = row(
            "a",
            "g",
            "l",
            Some(12.0),
            "MiB",
            None,
            None,
            Some(Target::ValueAtMost(10.0)),
            String::new(),
        );
        assert_eq!((r.ratio, r.pass), (None, Some(false)));
        let r = row(
            "a",
            "g",
            "l",
            None,
            "us",
            Some(1.0),
            None,
            Some(Target::RatioAtMost(1.2)),
            String::new(),
        );
        assert_eq!(r.pass, None);
        assert!(text_table(&[r]).contains("n/a"));
    }

    #[test]
    fn a_miss_says_by_how_much_in_the_targets_terms() {
        let r = row(
            "a",
            "g",
            "l",
            Some(105.0),
            "tasks/s",
            Some(100.0),
            Some("plain"),
            Some(Target::RatioAtLeast(1.2)),
            String::new(),
        );
        assert_eq!(r.pass, Some(false));
        assert!((r.shortfall.unwrap() - 0.15).abs() < 1e-9, "{r:?}");
        assert!(
            text_table(&[r]).contains("ratio >= 1.20: MISS by 0.15"),
            "the table shows the shortfall"
        );
        let r = row(
            "a",
            "g",
            "l",
            Some(12.5),
            "MiB",
            None,
            None,
            Some(Target::ValueAtMost(10.0)),
            String::new(),
        );
        assert_eq!(r.miss_by.as_deref(), Some("2.5 MiB"));
        let r = row(
            "a",
            "g",
            "l",
            Some(100.0),
            "us",
            Some(100.0),
            Some("plain"),
            Some(Target::RatioAtMost(1.1)),
            String::new(),
        );
        assert_eq!((r.pass, r.shortfall), (Some(true), None));
        assert!(text_table(&[r]).contains("ratio <= 1.10: pass"));
        let r = row(
            "a",
            "g",
            "l",
            Some(110.4),
            "us",
            Some(100.0),
            Some("plain"),
            Some(Target::RatioAtMost(1.1)),
            String::new(),
        );
        assert_eq!(r.miss_by.as_deref(), Some("0.004"), "a near miss shows");
    }
}
