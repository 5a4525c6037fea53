//! Which metrics, and which of their labels, a PromQL expression selects:
//! a small reader of PromQL good enough for the alerts and the dashboard.

use super::*;

/// A metric an expression selects, and the label names its matchers use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Selector {
    pub(crate) name: String,
    pub(crate) labels: Vec<String>,
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
pub(crate) fn read_matchers(s: &[char], i: usize) -> (usize, Vec<String>, Option<String>) {
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
pub(crate) fn selectors(expr: &str) -> Vec<Selector> {
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
pub(crate) fn variable_selectors(query: &str) -> Vec<Selector> {
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
pub(crate) fn grafana_variables(expr: &str) -> BTreeSet<String> {
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
