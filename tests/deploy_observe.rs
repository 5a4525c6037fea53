//! The monitoring side of `deploy/` against the real thing: promtool accepts
//! the Prometheus config and the alerts; every metric the alerts and the
//! Grafana dashboard query is one a real node or a real `fleet dashboard`
//! exports (scraped after real tasks, one of them failing for good); the
//! Grafana JSON imports with one Prometheus data source and its queries are
//! valid PromQL; the Kubernetes probes, ports and annotations, the systemd
//! units and prometheus.yml agree on where metrics are served; a node tells
//! systemd READY=1 and STOPPING=1; deploy/README.md shows only the commands
//! run here. Without promtool these tests fail (run bin/setup), never skip.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use fleet_testkit::http::{get, parse_metrics, request};
use fleet_testkit::*;
use serde::Deserialize;

/// The commands deploy/README.md (Monitoring) and the comments of
/// prometheus.yml and alerts.yml show, run from the repository root.
const PROMTOOL_COMMANDS: [&str; 2] = [
    "promtool check config --syntax-only deploy/prometheus/prometheus.yml",
    "promtool check rules deploy/prometheus/alerts.yml",
];

const TOKEN: &str = "operator-token-for-deploy-observe";

/// Prometheus's own series: not exported by fleet, present for every target.
const PROMETHEUS_OWN: &[&str] = &["up"];

/// Labels Prometheus puts on every series it scrapes (target labels).
const TARGET_LABELS: &[&str] = &["job", "instance", "__name__"];

/// Grafana's own variables, which the dashboard need not define.
const GRAFANA_BUILTINS: &[&str] = &[
    "__rate_interval",
    "__interval",
    "__interval_ms",
    "__range",
    "__range_s",
    "__range_ms",
];

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// Every document of a (multi-document) YAML file.
fn yaml_docs(path: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(&read(path))
        .map(|doc| serde_yaml::Value::deserialize(doc).unwrap_or_else(|e| panic!("{path}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml_one(path: &str) -> serde_yaml::Value {
    let mut docs = yaml_docs(path);
    assert_eq!(docs.len(), 1, "{path}: one document");
    docs.remove(0)
}

fn grafana() -> serde_json::Value {
    let path = "deploy/grafana/fleet-dashboard.json";
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

/// Runs a promtool command line as written (from the repository root), with
/// the promtool bin/setup installs; panics with its output if it fails.
fn run_promtool(line: &str) {
    let args: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(args[0], "promtool", "{line}");
    let out = Command::new(tool("promtool"))
        .args(&args[1..])
        .current_dir(root())
        .output()
        .expect("running promtool (bin/setup installs it)");
    assert!(
        out.status.success(),
        "`{line}` failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// PromQL: which metrics, and which of their labels, an expression reads.

/// A metric an expression selects, and the label names its matchers use.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Selector {
    name: String,
    labels: Vec<String>,
}

/// Keywords of PromQL: aggregation operators, set operators, modifiers and
/// literals. None of them is ever a metric name.
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "and",
    "or",
    "unless",
    "atan2",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
    "start",
    "end",
];

/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// PromQL's functions (Prometheus 2.x and 3.x).
const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "cos",
    "cosh",
    "count_over_time",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "deg",
    "delta",
    "deriv",
    "double_exponential_smoothing",
    "exp",
    "floor",
    "histogram_avg",
    "histogram_count",
    "histogram_fraction",
    "histogram_quantile",
    "histogram_stddev",
    "histogram_stdvar",
    "histogram_sum",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "info",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "mad_over_time",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "pi",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rad",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sin",
    "sinh",
    "sort",
    "sort_by_label",
    "sort_by_label_desc",
    "sort_desc",
    "sqrt",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "tan",
    "tanh",
    "time",
    "timestamp",
    "vector",
    "year",
];

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Index just past the string literal that starts at `i` (the end of the
/// text if it is not closed).
fn skip_string(s: &[char], i: usize) -> usize {
    let quote = s[i];
    let mut j = i + 1;
    while j < s.len() && s[j] != quote {
        if s[j] == '\\' && quote != '`' {
            j += 1;
        }
        j += 1;
    }
    (j + 1).min(s.len())
}

/// The string literal at `i` (its raw text between the quotes), and the
/// index past it.
fn string_at(s: &[char], i: usize) -> (String, usize) {
    let end = skip_string(s, i);
    let inner_end = if end > i + 1 && s[end - 1] == s[i] {
        end - 1
    } else {
        end
    };
    (s[i + 1..inner_end.max(i + 1)].iter().collect(), end)
}

/// Index just past the bracket that closes the one at `i` (strings inside
/// are skipped).
fn skip_group(s: &[char], i: usize) -> usize {
    let (open, close) = (s[i], if s[i] == '(' { ')' } else { ']' });
    let mut depth = 0;
    let mut j = i;
    while j < s.len() {
        match s[j] {
            '"' | '\'' | '`' => {
                j = skip_string(s, j);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    j
}

fn skip_spaces(s: &[char], mut i: usize) -> usize {
    while i < s.len() && s[i].is_whitespace() {
        i += 1;
    }
    i
}

/// Reads the matchers of `{…}` starting at `i`: the label names, and the
/// metric name if one is given there (`__name__="x"` or a quoted name).
/// Returns the index past `}`.
fn read_matchers(s: &[char], i: usize) -> (usize, Vec<String>, Option<String>) {
    let (mut labels, mut name) = (Vec::new(), None);
    let mut j = i + 1;
    loop {
        j = skip_spaces(s, j);
        if j >= s.len() || s[j] == '}' {
            return (j + 1, labels, name);
        }
        if s[j] == ',' {
            j += 1;
            continue;
        }
        // A label name (plain or quoted), or a quoted metric name alone.
        let label: String = if s[j] == '"' || s[j] == '\'' {
            let (quoted, end) = string_at(s, j);
            j = end;
            quoted
        } else {
            let start = j;
            while j < s.len() && is_ident(s[j]) {
                j += 1;
            }
            if j == start {
                // Not PromQL; step over it rather than loop.
                j += 1;
                continue;
            }
            s[start..j].iter().collect()
        };
        j = skip_spaces(s, j);
        if j >= s.len() || s[j] == ',' || s[j] == '}' {
            name = Some(label);
            continue;
        }
        // The operator, then the value.
        let op_start = j;
        while j < s.len() && matches!(s[j], '=' | '!' | '~') {
            j += 1;
        }
        let op: String = s[op_start..j].iter().collect();
        j = skip_spaces(s, j);
        let value = if j < s.len() && matches!(s[j], '"' | '\'' | '`') {
            let (value, end) = string_at(s, j);
            j = end;
            value
        } else {
            String::new()
        };
        if label == "__name__" && op == "=" {
            name = Some(value);
        }
        labels.push(label);
    }
}

/// The metrics a PromQL expression selects. A metric name is an identifier
/// that is neither a keyword nor a function, outside strings, `{…}`
/// matchers, `[…]` ranges and the label lists of `by (…)`, `on (…)` and the
/// like; `$variables` and numbers (durations too) are skipped.
fn selectors(expr: &str) -> Vec<Selector> {
    let s: Vec<char> = expr.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        match c {
            '"' | '\'' | '`' => i = skip_string(&s, i),
            '#' => {
                while i < s.len() && s[i] != '\n' {
                    i += 1;
                }
            }
            '[' => i = skip_group(&s, i),
            '{' => {
                // A selector without a name in front: {__name__="x"}.
                let (end, labels, name) = read_matchers(&s, i);
                if let Some(name) = name {
                    found.push(Selector { name, labels });
                }
                i = end;
            }
            '$' => {
                i += 1;
                if i < s.len() && s[i] == '{' {
                    while i < s.len() && s[i] != '}' {
                        i += 1;
                    }
                    i += 1;
                } else {
                    while i < s.len() && is_ident(s[i]) {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit()
                || (c == '.' && s.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                // 0.95, 1e3, 0x1f, 5m, 1h30m: all one token.
                while i < s.len() && (is_ident(s[i]) || s[i] == '.') {
                    i += 1;
                }
            }
            c if is_ident_start(c) => {
                let start = i;
                while i < s.len() && is_ident(s[i]) {
                    i += 1;
                }
                let word: String = s[start..i].iter().collect();
                let next = skip_spaces(&s, i);
                let lower = word.to_ascii_lowercase();
                if LABEL_LISTS.contains(&lower.as_str()) {
                    if next < s.len() && s[next] == '(' {
                        i = skip_group(&s, next);
                    }
                } else if KEYWORDS.contains(&lower.as_str())
                    || FUNCTIONS.contains(&word.as_str())
                    || (next < s.len() && s[next] == '(')
                {
                    // A keyword, or a call of a function.
                } else if next < s.len() && s[next] == '{' {
                    let (end, labels, _) = read_matchers(&s, next);
                    found.push(Selector { name: word, labels });
                    i = end;
                } else {
                    found.push(Selector {
                        name: word,
                        labels: Vec::new(),
                    });
                }
            }
            _ => i += 1,
        }
    }
    found
}

/// The metrics a Grafana variable query reads: `label_values(expr, label)`
/// (the label counts as one of the metric's), `query_result(expr)`, or a
/// plain expression. `label_values(label)` and `metrics(regex)` read none.
fn variable_selectors(query: &str) -> Vec<Selector> {
    let q = query.trim();
    if let Some(inner) = q
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
    {
        let Some((expr, label)) = inner.rsplit_once(',') else {
            return Vec::new();
        };
        let mut found = selectors(expr);
        for sel in &mut found {
            sel.labels.push(label.trim().to_string());
        }
        return found;
    }
    if let Some(inner) = q
        .strip_prefix("query_result(")
        .and_then(|r| r.strip_suffix(')'))
    {
        return selectors(inner);
    }
    if q.starts_with("metrics(") || q.starts_with("label_names(") {
        return Vec::new();
    }
    selectors(q)
}

/// `$name`, `${name}` and `[[name]]` in a Grafana query.
fn grafana_variables(expr: &str) -> BTreeSet<String> {
    let mut vars = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        let name: String = if let Some(braced) = rest.strip_prefix('{') {
            braced
                .split(['}', ':'])
                .next()
                .unwrap_or_default()
                .to_string()
        } else {
            rest.chars().take_while(|c| is_ident(*c)).collect()
        };
        if !name.is_empty() {
            vars.insert(name);
        }
    }
    let mut rest = expr;
    while let Some(at) = rest.find("[[") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find("]]") {
            vars.insert(
                rest[..end]
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
    }
    vars
}

/// A query of the deploy files: where it is, and what it says.
#[derive(Debug, Clone)]
struct Query {
    place: String,
    expr: String,
    variable: bool,
}

/// Every alert and recording rule expression of alerts.yml.
fn alert_queries() -> Vec<Query> {
    let rules = yaml_one("deploy/prometheus/alerts.yml");
    let mut out = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .expect("an alert or a record name");
            out.push(Query {
                place: format!("alerts.yml {name}"),
                expr: rule["expr"].as_str().expect("expr").to_string(),
                variable: false,
            });
        }
    }
    out
}

/// Every panel of the dashboard, rows' nested panels included.
fn panels(dashboard: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        out.push(p.clone());
        if let Some(nested) = p["panels"].as_array() {
            out.extend(nested.iter().cloned());
        }
    }
    out
}

/// Every panel target expression and variable query of the dashboard.
fn grafana_queries(dashboard: &serde_json::Value) -> Vec<Query> {
    let mut out = Vec::new();
    for p in panels(dashboard) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(Query {
                place: format!(
                    "fleet-dashboard.json panel {:?} {}",
                    p["title"].as_str().unwrap_or_default(),
                    t["refId"].as_str().unwrap_or_default()
                ),
                expr: t["expr"].as_str().unwrap_or_default().to_string(),
                variable: false,
            });
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if v["type"] != "query" {
            continue;
        }
        let query = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .or(v["definition"].as_str())
            .unwrap_or_default();
        out.push(Query {
            place: format!(
                "fleet-dashboard.json variable ${}",
                v["name"].as_str().unwrap_or_default()
            ),
            expr: query.to_string(),
            variable: true,
        });
    }
    out
}

/// The selectors of a query, by where they are used.
fn used(queries: &[Query]) -> Vec<(String, Selector)> {
    queries
        .iter()
        .flat_map(|q| {
            let found = if q.variable {
                variable_selectors(&q.expr)
            } else {
                selectors(&q.expr)
            };
            found.into_iter().map(|s| (q.place.clone(), s))
        })
        .collect()
}

/// Series names exported, with the label names each carries.
type Exported = BTreeMap<String, BTreeSet<String>>;

/// The names and label names of a Prometheus text exposition.
fn exported(exposition: &str) -> Exported {
    let mut out = Exported::new();
    for series in parse_metrics(exposition).keys() {
        let (name, rest) = series.split_once('{').unwrap_or((series.as_str(), ""));
        let (_, labels, _) = read_matchers(&format!("{{{rest}").chars().collect::<Vec<_>>(), 0);
        out.entry(name.to_string()).or_default().extend(labels);
    }
    out
}

/// What the queries use that nobody exports: unknown metrics, and labels a
/// metric does not carry; one line each, saying where.
fn unexported(used: &[(String, Selector)], exported: &Exported) -> Vec<String> {
    let mut problems = Vec::new();
    for (place, sel) in used {
        if PROMETHEUS_OWN.contains(&sel.name.as_str()) {
            continue;
        }
        let Some(labels) = exported.get(&sel.name) else {
            problems.push(format!("{place}: metric {} is not exported", sel.name));
            continue;
        };
        for label in &sel.labels {
            if !labels.contains(label) && !TARGET_LABELS.contains(&label.as_str()) {
                problems.push(format!(
                    "{place}: {} has no label {label} (it has {labels:?})",
                    sel.name
                ));
            }
        }
    }
    problems
}

fn names(found: &[Selector]) -> Vec<&str> {
    found.iter().map(|s| s.name.as_str()).collect()
}

#[test]
fn the_extractor_finds_metric_names_and_nothing_else() {
    let found = selectors(
        r#"sum by (kind) (rate(fleet_bogus_total{kind=~"$kind", outcome="ok"}[$__rate_interval])) / on (kind) group_left(tenant) sum without (le) (x_y:z) > bool 0.5 offset 5m"#,
    );
    assert_eq!(names(&found), ["fleet_bogus_total", "x_y:z"]);
    assert_eq!(found[0].labels, ["kind", "outcome"]);
    assert_eq!(
        names(&selectors(
            r#"histogram_quantile(0.95, sum by (le) (rate(a_bucket[5m]))) and up{job=~"fleet-node.*"} == 0 or vector(0)"#
        )),
        ["a_bucket", "up"]
    );
    assert_eq!(
        names(&selectors(
            "max(fleet_nodes) == 0 and on () max(fleet_up)==1 unless absent(b) # c_comment\n"
        )),
        ["fleet_nodes", "fleet_up", "b"]
    );
    assert_eq!(
        names(&selectors(
            r#"count({__name__="by_name", kind="x"}) + 1e3 * "str_ing""#
        )),
        ["by_name"]
    );
    assert!(selectors("label_replace(vector(1), \"dst\", \"$1\", \"src\", \"(.*)\")").is_empty());
    let var = variable_selectors("label_values(fleet_node_tasks_total{outcome=\"ok\"}, kind)");
    assert_eq!(names(&var), ["fleet_node_tasks_total"]);
    assert_eq!(var[0].labels, ["outcome", "kind"]);
    assert!(variable_selectors("label_values(kind)").is_empty());
    assert_eq!(
        grafana_variables("rate(x{a=~\"$kind\", b=\"${group:regex}\"}[$__rate_interval]) [[old]]"),
        BTreeSet::from([
            "kind".into(),
            "group".into(),
            "__rate_interval".into(),
            "old".into()
        ])
    );
}

/// The check the live test makes does fail: a made-up metric, and a real
/// metric with a label it lacks, are reported with where they are used.
#[test]
fn an_unexported_name_or_label_is_reported() {
    let exposition =
        "# TYPE fleet_node_tasks counter\nfleet_node_tasks_total{kind=\"echo\",outcome=\"ok\"} 3\n";
    let queries = [Query {
        place: "sample".into(),
        expr: r#"sum(rate(fleet_node_tasks_total{tenant="a"}[5m])) + sum(fleet_bogus_total) + up"#
            .into(),
        variable: false,
    }];
    let problems = unexported(&used(&queries), &exported(exposition));
    assert_eq!(
        problems,
        [
            "sample: fleet_node_tasks_total has no label tenant (it has {\"kind\", \"outcome\"})",
            "sample: metric fleet_bogus_total is not exported",
        ]
    );
}

// ---------------------------------------------------------------------------

#[test]
fn promtool_accepts_the_prometheus_config_and_the_alerts() {
    for line in PROMTOOL_COMMANDS {
        run_promtool(line);
    }
}

/// A running `fleet dashboard`; killed when dropped.
struct Dashboard {
    _child: KillOnDrop,
    addr: SocketAddr,
}

fn dashboard(server: &NatsServer, token_file: &Path) -> Dashboard {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut child = Command::new(fleet_bin())
        .args(["--server", &server.url(), "dashboard", "--listen"])
        .arg(addr.to_string())
        .arg("--web-token-file")
        .arg(token_file)
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting fleet dashboard");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), format!("fleet dashboard: http://{addr}/"));
    Dashboard {
        _child: KillOnDrop(child),
        addr,
    }
}

/// The next message on the notify socket, or `None` within `limit`.
fn notified(socket: &UnixDatagram, limit: Duration) -> Option<String> {
    socket.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).ok()?;
    Some(text(&buf[..n]).trim_end().to_string())
}

/// The node container of deploy/kubernetes/fleet-node.yaml.
fn node_container() -> serde_yaml::Value {
    let docs = yaml_docs("deploy/kubernetes/fleet-node.yaml");
    let deployment = find(&docs, "Deployment", "fleet-node");
    container(&deployment, "node")
}

fn find(docs: &[serde_yaml::Value], kind: &str, name: &str) -> serde_yaml::Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
        .clone()
}

fn container(deployment: &serde_yaml::Value, name: &str) -> serde_yaml::Value {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
        .clone()
}

/// The value of the environment variable `name` in a container.
fn env_value(container: &serde_yaml::Value, name: &str) -> Option<String> {
    container["env"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
        .map(str::to_string)
}

/// The value of `--flag` in a container's args (`--flag V` or `--flag=V`),
/// else of the environment variable `env`.
fn flag_or_env(container: &serde_yaml::Value, flag: &str, env: &str) -> Option<String> {
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str())
        .collect();
    for (i, arg) in args.iter().enumerate() {
        if *arg == flag {
            return args.get(i + 1).map(|s| s.to_string());
        }
        if let Some(v) = arg.strip_prefix(&format!("{flag}=")) {
            return Some(v.to_string());
        }
    }
    env_value(container, env)
}

/// A probe's or Service's port: a number, or the name of a container port.
fn port_number(container: &serde_yaml::Value, port: &serde_yaml::Value) -> u64 {
    if let Some(n) = port.as_u64() {
        return n;
    }
    let name = port.as_str().expect("a port number or name");
    container["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

/// The node's metrics address in the Kubernetes Deployment.
fn kubernetes_metrics_addr() -> SocketAddr {
    let node = node_container();
    flag_or_env(&node, "--metrics-addr", "FLEET_METRICS_ADDR")
        .expect("the node container sets --metrics-addr or FLEET_METRICS_ADDR")
        .parse()
        .expect("a HOST:PORT metrics address")
}

/// The whole path a Prometheus would take: `fleet setup`, a node with
/// metrics (and a systemd notify socket), a dashboard with a token file,
/// tasks that succeed, one that fails for good and one still running; then
/// both scraped as prometheus.yml scrapes them, and every metric and label
/// the alerts and the Grafana dashboard query must be among what they
/// export. On the way, the commands the failure alerts point to (`fleet
/// dead list --kind`, `nats micro stats fleet`) show the failure, the
/// Kubernetes probe paths answer on the real node, and the node sends
/// systemd READY=1 and STOPPING=1.
#[test]
fn every_metric_the_alerts_and_the_dashboard_query_is_exported() {
    let server = NatsServer::start();
    let setup = fleet(&server, &["setup"], b"");
    assert!(setup.status.success(), "{}", text(&setup.stderr));

    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut node = NodeProc::start(
        &server.url(),
        server.dir.path(),
        "node1",
        &[
            "--dev-builtins",
            "--max-deliver",
            "1",
            "--grace",
            "1s",
            "--metrics-addr",
            &metrics.to_string(),
        ],
        &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())],
    );
    node.wait_ready(Duration::from_secs(30));
    let _logs = LogsOnFailure {
        files: vec![("node1".into(), node.log.clone())],
    };
    assert_eq!(
        notified(&notify, Duration::from_secs(10)).as_deref(),
        Some("READY=1"),
        "a Type=notify unit hears READY=1 once the node is bound"
    );

    let ok = fleet(
        &server,
        &["submit", "echo", "--no-progress"],
        numbered_lines(5).as_bytes(),
    );
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let failed = fleet(&server, &["submit", "fail", "--no-progress"], b"boom\n");
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed.stderr));
    // What the alerts on failures tell the operator to look at.
    let dead = fleet(&server, &["dead", "list", "--kind", "fail"], b"");
    assert!(dead.status.success(), "{}", text(&dead.stderr));
    assert_eq!(
        text(&dead.stdout).lines().count(),
        1,
        "{}",
        text(&dead.stdout)
    );
    let stats = Command::new(tool("nats"))
        .args([
            "--server",
            &server.url(),
            "micro",
            "stats",
            "fleet",
            "--json",
        ])
        .output()
        .expect("running nats");
    assert!(stats.status.success(), "{}", text(&stats.stderr));
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    let last_error = stats[0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "fail")
        .map(|e| e["last_error"].as_str().unwrap_or_default().to_string());
    assert!(
        last_error.is_some_and(|e| !e.is_empty()),
        "nats micro stats fleet shows the handler's last error: {stats}"
    );
    // One task still running: the queue depth has a series while it runs.
    let input = dir.path().join("sleep");
    std::fs::write(&input, "20s\n").unwrap();
    let _running = KillOnDrop(spawn_submit(
        &server,
        &["sleep", "--no-progress"],
        &input,
        &dir.path().join("sleep.out"),
    ));
    let node_text = eventually(Duration::from_secs(10), "the sleep task running", || {
        let body = get(metrics, "/metrics")?.body;
        (body.contains("fleet_node_in_flight 1")).then_some(body)
    });

    let token_file = dir.path().join("web-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let dash = dashboard(&server, &token_file);
    assert_eq!(
        get(dash.addr, "/healthz").unwrap().status,
        200,
        "the probe needs no token"
    );
    let refused = get(dash.addr, "/metrics").expect("the dashboard answers");
    assert_eq!(
        refused.status, 401,
        "/metrics without the bearer token: {}",
        refused.body
    );
    let bearer = format!("Bearer {TOKEN}");
    let dash_text = eventually(
        Duration::from_secs(15),
        "the dashboard's metrics showing the dead letter and the running task",
        || {
            let r = request(
                dash.addr,
                "GET",
                "/metrics",
                &[("Authorization", &bearer)],
                "",
            )?;
            assert_eq!(r.status, 200, "{}", r.body);
            let wanted = [
                "fleet_up 1",
                "fleet_nodes 1",
                "fleet_dead_letters{tenant=\"\",kind=\"fail\"} 1",
                "fleet_queue_depth{tenant=\"\",kind=\"sleep\"} 1",
            ];
            wanted
                .iter()
                .all(|w| r.body.lines().any(|l| l == *w))
                .then_some(r.body)
        },
    );

    let mut all = exported(&node_text);
    for (name, labels) in exported(&dash_text) {
        all.entry(name).or_default().extend(labels);
    }
    let mut queries = alert_queries();
    queries.extend(grafana_queries(&grafana()));
    let used = used(&queries);
    assert!(
        used.len() > 30,
        "the extractor found too few metrics: {used:?}"
    );
    let problems = unexported(&used, &all);
    assert!(
        problems.is_empty(),
        "the alerts or the Grafana dashboard query what fleet does not export:\n{}\n\nexported: {:?}",
        problems.join("\n"),
        all.keys().collect::<Vec<_>>()
    );

    // The Kubernetes probes' paths, on a real node.
    let node_yaml = node_container();
    for (probe, want) in [("livenessProbe", 200), ("readinessProbe", 200)] {
        let path = node_yaml[probe]["httpGet"]["path"]
            .as_str()
            .unwrap_or_else(|| panic!("{probe} path"));
        let answer = get(metrics, path).unwrap_or_else(|| panic!("{path} answers"));
        assert_eq!(answer.status, want, "{probe} {path}: {}", answer.body);
    }

    node.signal("TERM");
    assert_eq!(
        notified(&notify, Duration::from_secs(20)).as_deref(),
        Some("STOPPING=1"),
        "a Type=notify unit hears STOPPING=1 as the node stops"
    );
    let exit = node
        .wait_exit(Duration::from_secs(20))
        .expect("the node exits");
    assert!(exit.success(), "{}", node.log_text());
}

/// The dashboard imports into Grafana as shipped: one Prometheus input that
/// every panel, query and variable uses; a uid and a title; unique panel
/// ids; only variables it defines; every panel type it declares; and every
/// query valid PromQL (checked by promtool, as recording rules).
#[test]
fn the_grafana_dashboard_imports_and_its_queries_are_promql() {
    let d = grafana();
    let uid = d["uid"].as_str().expect("a uid");
    assert!(!uid.is_empty() && uid.len() <= 40, "uid {uid:?}");
    assert!(!d["title"].as_str().expect("a title").is_empty());
    let inputs = d["__inputs"].as_array().expect("__inputs");
    assert_eq!(inputs.len(), 1, "{inputs:?}");
    assert_eq!(
        (
            &inputs[0]["name"],
            &inputs[0]["type"],
            &inputs[0]["pluginId"]
        ),
        (
            &"DS_PROMETHEUS".into(),
            &"datasource".into(),
            &"prometheus".into()
        )
    );
    let source = serde_json::json!({"type": "prometheus", "uid": "${DS_PROMETHEUS}"});
    let required: BTreeSet<&str> = d["__requires"]
        .as_array()
        .expect("__requires")
        .iter()
        .filter(|r| r["type"] == "panel")
        .filter_map(|r| r["id"].as_str())
        .collect();
    let defined: BTreeSet<String> = d["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .collect();
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            assert_eq!(v["datasource"], source, "variable {}", v["name"]);
        }
    }

    let mut ids = BTreeSet::new();
    let mut rules = String::from("groups:\n  - name: grafana\n    rules:\n");
    for p in panels(&d) {
        let title = p["title"].as_str().unwrap_or_default().to_string();
        assert!(!title.is_empty(), "a panel without a title: {p}");
        let id = p["id"].as_u64().unwrap_or_else(|| panic!("{title}: an id"));
        assert!(ids.insert(id), "panel id {id} twice");
        let kind = p["type"].as_str().unwrap_or_default();
        if kind == "row" {
            continue;
        }
        assert!(
            required.contains(kind),
            "{title}: panel type {kind} not in __requires"
        );
        assert_eq!(p["datasource"], source, "panel {title:?}");
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: targets"));
        assert!(!targets.is_empty(), "{title}: no query");
        let mut refs = BTreeSet::new();
        for t in targets {
            let r = t["refId"].as_str().unwrap_or_default();
            assert!(refs.insert(r.to_string()), "{title}: refId {r:?} twice");
            assert_eq!(t["datasource"], source, "panel {title:?} query {r}");
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(!expr.trim().is_empty(), "{title} {r}: no expr");
            let mut concrete = expr.to_string();
            for var in grafana_variables(expr) {
                let value = if GRAFANA_BUILTINS.contains(&var.as_str()) {
                    "5m"
                } else {
                    assert!(
                        defined.contains(&var),
                        "{title} {r}: ${var} is not a variable of the dashboard"
                    );
                    ".*"
                };
                for form in [
                    format!("${{{var}}}"),
                    format!("${var}"),
                    format!("[[{var}]]"),
                ] {
                    concrete = concrete.replace(&form, value);
                }
            }
            rules.push_str(&format!(
                "      - record: grafana:panel{id}:{}\n        expr: {}\n",
                r.to_lowercase(),
                serde_json::to_string(&concrete).unwrap()
            ));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("grafana-queries.yml");
    std::fs::write(&file, &rules).unwrap();
    let out = Command::new(tool("promtool"))
        .arg("check")
        .arg("rules")
        .arg(&file)
        .output()
        .expect("running promtool (bin/setup installs it)");
    assert!(
        out.status.success(),
        "a Grafana query is not valid PromQL:\n{}{}\n{rules}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// The node pods: probes at /healthz and /readyz on the port the node serves
/// metrics on (any address, so the kubelet reaches it), a container port
/// named for it, the prometheus.io annotations, the headless Service and the
/// NetworkPolicy for the same port. The dashboard: its Service, its token
/// Secret and the reader role. Both in kustomization.yaml.
#[test]
fn kubernetes_serves_metrics_where_probes_and_prometheus_look() {
    let addr = kubernetes_metrics_addr();
    assert!(
        addr.ip().is_unspecified(),
        "{addr}: the kubelet and Prometheus reach the pod's address, not loopback"
    );
    let port = u64::from(addr.port());
    let docs = yaml_docs("deploy/kubernetes/fleet-node.yaml");
    let deployment = find(&docs, "Deployment", "fleet-node");
    let node = node_container();
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &node[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(port_number(&node, &get["port"]), port, "{probe} port");
    }
    assert!(
        node["ports"]
            .as_sequence()
            .expect("container ports")
            .iter()
            .any(|p| p["containerPort"].as_u64() == Some(port) && p["name"] == "metrics"),
        "a container port {port} named metrics"
    );
    let template = &deployment["spec"]["template"]["metadata"];
    let annotations = &template["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(
        annotations["prometheus.io/port"].as_str(),
        Some(port.to_string().as_str())
    );
    assert_eq!(annotations["prometheus.io/path"].as_str(), Some("/metrics"));

    let service = find(&docs, "Service", "fleet-node-metrics");
    assert_eq!(
        service["spec"]["clusterIP"].as_str(),
        Some("None"),
        "headless"
    );
    assert_eq!(
        service["spec"]["publishNotReadyAddresses"].as_bool(),
        Some(true)
    );
    for (label, value) in service["spec"]["selector"]
        .as_mapping()
        .expect("a selector")
    {
        assert_eq!(
            &template["labels"][label.as_str().unwrap()],
            value,
            "selector"
        );
    }
    let ports = service["spec"]["ports"].as_sequence().expect("ports");
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["port"].as_u64(), Some(port));
    assert_eq!(port_number(&node, &ports[0]["targetPort"]), port);

    let policy = find(&docs, "NetworkPolicy", "fleet-node");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    admits_monitoring(&policy, port);

    let dash_docs = yaml_docs("deploy/kubernetes/fleet-dashboard.yaml");
    let dash = find(&dash_docs, "Deployment", "fleet-dashboard");
    let c = container(&dash, "dashboard");
    let listen: SocketAddr = flag_or_env(&c, "--listen", "FLEET_DASHBOARD_LISTEN")
        .expect("--listen")
        .parse()
        .unwrap();
    let dash_service = find(&dash_docs, "Service", "fleet-dashboard");
    let sport = &dash_service["spec"]["ports"][0];
    assert_eq!(
        port_number(&c, &sport["targetPort"]),
        u64::from(listen.port())
    );
    assert_eq!(sport["port"].as_u64(), Some(8080));
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(
            c[probe]["httpGet"]["path"].as_str(),
            Some("/healthz"),
            "{probe}"
        );
        assert_eq!(
            port_number(&c, &c[probe]["httpGet"]["port"]),
            u64::from(listen.port())
        );
    }
    // The token file is the key "token" of the Secret fleet-web-token.
    let token_file = flag_or_env(&c, "--web-token-file", "FLEET_DASHBOARD_TOKEN_FILE")
        .expect("--web-token-file");
    let mount = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| token_file.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap())))
        .expect("the token file is in a mounted volume");
    let volume = dash["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap()
        .clone();
    assert_eq!(
        volume["secret"]["secretName"].as_str(),
        Some("fleet-web-token")
    );
    let key = token_file.rsplit('/').next().unwrap();
    assert!(
        volume["secret"]["items"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|i| i["key"] == "token" && i["path"] == key),
        "{token_file} is the Secret's key token"
    );
    assert_eq!(env_value(&c, "NATS_USER").as_deref(), Some("reader"));
    assert_eq!(
        env_value(&c, "NATS_INBOX_PREFIX").as_deref(),
        Some("_INBOX_reader")
    );
    admits_monitoring(
        &find(&dash_docs, "NetworkPolicy", "fleet-dashboard"),
        u64::from(listen.port()),
    );

    let kustomization = yaml_one("deploy/kubernetes/kustomization.yaml");
    let resources: Vec<&str> = kustomization["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    for file in ["fleet-node.yaml", "fleet-dashboard.yaml"] {
        assert!(resources.contains(&file), "{file} in kustomization.yaml");
    }
    for file in resources {
        assert!(
            root().join("deploy/kubernetes").join(file).is_file(),
            "{file}"
        );
    }
}

/// The policy lets the namespace "monitoring" reach `port`.
fn admits_monitoring(policy: &serde_yaml::Value, port: u64) {
    let admitted = policy["spec"]["ingress"]
        .as_sequence()
        .expect("ingress rules")
        .iter()
        .any(|rule| {
            rule["ports"]
                .as_sequence()
                .into_iter()
                .flatten()
                .any(|p| p["port"].as_u64() == Some(port))
                && rule["from"].as_sequence().into_iter().flatten().any(|f| {
                    f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                        == "monitoring"
                })
        });
    assert!(
        admitted,
        "{}: port {port} from namespace monitoring",
        policy["metadata"]["name"].as_str().unwrap_or_default()
    );
}

/// `Key=Value` lines of a systemd unit (or env file), in order.
fn unit_settings(path: &str) -> Vec<(String, String)> {
    read(path)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn setting<'a>(settings: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    settings
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// prometheus.yml scrapes where the systemd units and the Kubernetes
/// objects serve: instance N of fleet-node@ on 127.0.0.1:910N, the
/// dashboard unit's --listen, the Services' names and ports, the token
/// Secret's path; the node unit is Type=notify for the node's READY=1.
#[test]
fn prometheus_scrapes_where_the_deploys_serve() {
    let prom = yaml_one("deploy/prometheus/prometheus.yml");
    let jobs: BTreeMap<&str, &serde_yaml::Value> = prom["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
        .iter()
        .map(|j| (j["job_name"].as_str().expect("job_name"), j))
        .collect();
    assert_eq!(
        jobs.keys().copied().collect::<Vec<_>>(),
        [
            "fleet-dashboard",
            "fleet-dashboard-kubernetes",
            "fleet-node",
            "fleet-node-kubernetes"
        ],
        "the alerts and the Grafana dashboard match jobs fleet-node* and fleet-dashboard*"
    );
    assert_eq!(prom["rule_files"][0].as_str(), Some("alerts.yml"));
    let targets = |job: &str| -> Vec<String> {
        jobs[job]["static_configs"]
            .as_sequence()
            .unwrap()
            .iter()
            .flat_map(|c| c["targets"].as_sequence().unwrap().iter())
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    };

    let node = unit_settings("deploy/systemd/fleet-node@.service");
    assert_eq!(setting(&node, "Type"), ["notify"]);
    assert_eq!(setting(&node, "NotifyAccess"), ["main"]);
    let env = setting(&node, "Environment");
    let template = env
        .iter()
        .find_map(|e| e.strip_prefix("FLEET_METRICS_ADDR="))
        .expect("Environment=FLEET_METRICS_ADDR=… in fleet-node@.service");
    for target in targets("fleet-node") {
        assert!(
            (1..=9).any(|n| template.replace("%i", &n.to_string()) == target),
            "{target} is no fleet-node@N's {template}"
        );
    }
    assert!(
        !unit_settings("deploy/systemd/node.env.example")
            .iter()
            .any(|(k, _)| k == "FLEET_METRICS_ADDR"),
        "node.env is every instance's: a metrics address there would clash"
    );

    let dash = unit_settings("deploy/systemd/fleet-dashboard.service");
    let exec = setting(&dash, "ExecStart").join(" ");
    let words: Vec<&str> = exec.split_whitespace().collect();
    let after = |flag: &str| {
        words
            .iter()
            .position(|w| *w == flag)
            .and_then(|i| words.get(i + 1))
            .copied()
            .unwrap_or_else(|| panic!("{flag} in {exec}"))
    };
    assert_eq!(words[1], "dashboard", "{exec}");
    assert_eq!(
        vec![after("--listen").to_string()],
        targets("fleet-dashboard")
    );
    assert!(after("--web-token-file").contains("web-token"), "{exec}");
    let dash_env = unit_settings("deploy/systemd/dashboard.env.example");
    assert_eq!(setting(&dash_env, "NATS_USER"), ["reader"]);
    assert_eq!(setting(&dash_env, "NATS_INBOX_PREFIX"), ["_INBOX_reader"]);

    // Kubernetes: the Services by their cluster DNS names.
    let docs = yaml_docs("deploy/kubernetes/fleet-node.yaml");
    let service = find(&docs, "Service", "fleet-node-metrics");
    let dns = &jobs["fleet-node-kubernetes"]["dns_sd_configs"][0];
    assert_eq!(
        dns["names"][0].as_str(),
        Some(
            format!(
                "fleet-node-metrics.{}.svc.cluster.local",
                service["metadata"]["namespace"].as_str().unwrap()
            )
            .as_str()
        )
    );
    assert_eq!(dns["port"], service["spec"]["ports"][0]["port"]);
    assert_eq!(
        dns["port"].as_u64(),
        Some(u64::from(kubernetes_metrics_addr().port()))
    );
    let dash_docs = yaml_docs("deploy/kubernetes/fleet-dashboard.yaml");
    let dash_service = find(&dash_docs, "Service", "fleet-dashboard");
    assert_eq!(
        targets("fleet-dashboard-kubernetes"),
        [format!(
            "fleet-dashboard.{}.svc.cluster.local:{}",
            dash_service["metadata"]["namespace"].as_str().unwrap(),
            dash_service["spec"]["ports"][0]["port"].as_u64().unwrap()
        )]
    );
    for job in ["fleet-dashboard", "fleet-dashboard-kubernetes"] {
        let auth = &jobs[job]["authorization"];
        assert_eq!(auth["type"].as_str(), Some("Bearer"), "{job}");
        assert!(
            auth["credentials_file"].as_str().is_some(),
            "{job}: the token"
        );
    }
    assert_eq!(
        jobs["fleet-dashboard-kubernetes"]["authorization"]["credentials_file"].as_str(),
        Some("/etc/prometheus/secrets/fleet-web-token/token"),
        "the Secret fleet-web-token, key token, as the Prometheus Operator mounts it"
    );
}

/// deploy/README.md's Monitoring section shows no command but the ones
/// run here, and the config files' comments show the same.
#[test]
fn the_readme_shows_only_commands_the_tests_run() {
    let readme = read("deploy/README.md");
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Monitoring"))
        .expect("deploy/README.md has a Monitoring section");
    let mut commands = Vec::new();
    let mut in_block = false;
    for line in section.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block && !line.trim().is_empty() && !line.trim_start().starts_with('#') {
            commands.push(line.trim().to_string());
        }
    }
    assert!(!in_block, "an unclosed code block");
    assert_eq!(
        commands, PROMTOOL_COMMANDS,
        "the Monitoring section's commands"
    );
    for (file, line) in [
        ("deploy/prometheus/prometheus.yml", PROMTOOL_COMMANDS[0]),
        ("deploy/prometheus/prometheus.yml", PROMTOOL_COMMANDS[1]),
        ("deploy/prometheus/alerts.yml", PROMTOOL_COMMANDS[1]),
    ] {
        assert!(
            read(file).contains(&format!("#   {line}\n")),
            "{file} shows {line}"
        );
    }
    // Every alert is explained, one line each.
    for q in alert_queries() {
        let name = q.place.trim_start_matches("alerts.yml ");
        assert!(
            section.contains(&format!("`{name}`")),
            "the Monitoring section explains {name}"
        );
    }
}
