"""The table of bin/bench: one row per figure, each beside the ceiling that
does the same work, their ratio and, where there is one, the target.
Printed as text, written as Markdown and JSON."""

import json
from pathlib import Path

UNIT_FORMAT = {
    "tasks/s": "{:,.0f}",
    "msgs/s": "{:,.0f}",
    "us": "{:,.0f}",
    "MiB": "{:.1f}",
    "MiB/s": "{:,.1f}",
    "CPU s/100k": "{:.2f}",
}


def row(rid, group, label, value, unit, ceiling=None, ceiling_label=None, target=None, note=""):
    """A figure. `target` is ("ratio>=", x), ("ratio<=", x) or ("value<=", x)."""
    r = {"id": rid, "group": group, "label": label, "value": value, "unit": unit,
         "ceiling": ceiling, "ceiling_label": ceiling_label, "ratio": None,
         "target": None, "pass": None, "note": note}
    if value is not None and ceiling:
        r["ratio"] = value / ceiling
    if target:
        kind, limit = target
        r["target"] = {"ratio>=": f"ratio >= {limit:.2f}", "ratio<=": f"ratio <= {limit:.2f}",
                       "value<=": f"<= {limit:g} {unit}"}[kind]
        measured = r["value"] if kind == "value<=" else r["ratio"]
        if measured is not None:
            r["pass"] = measured >= limit if kind == "ratio>=" else measured <= limit
    return r


def _fmt(value, unit):
    if value is None:
        return "n/a"
    return UNIT_FORMAT.get(unit, "{:,.2f}").format(value) + " " + unit


def _cells(r):
    ceiling = "" if r["ceiling"] is None else _fmt(r["ceiling"], r["unit"])
    if r["ceiling_label"]:
        ceiling += f" ({r['ceiling_label']})"
    ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
    verdict = {True: "pass", False: "MISS", None: ""}[r["pass"]]
    if r["target"] and r["pass"] is None:
        verdict = "n/a"
    target = f"{r['target']}: {verdict}" if r["target"] else ""
    return [r["label"], _fmt(r["value"], r["unit"]), ceiling, ratio, target, r["note"]]


HEADERS = ["figure", "fleet", "ceiling", "ratio", "target", "note"]


def text_table(rows):
    lines = []
    group = None
    cells = [_cells(r) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(HEADERS[:-1])]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
    lines.append(fmt.format(*HEADERS))
    lines.append("  ".join("-" * w for w in widths) + "  ----")
    for r, c in zip(rows, cells):
        if r["group"] != group:
            group = r["group"]
            lines.append(f"[{group}]")
        lines.append(fmt.format(*c).rstrip())
    return "\n".join(lines)


def markdown(meta, rows, errors):
    out = ["# fleet benchmark", ""]
    out.append(f"- date: {meta['date']}  ")
    out.append(f"- nats-server {meta['nats_server']}, {meta['cores']} cores, mode {meta['mode']}, "
               f"best of {meta['rounds']} round(s) for echo, sha256 and durability, {meta['runtime_s']:.0f} s in all  ")
    out.append(f"- git {meta['git']}")
    out.append("")
    out.append("Ratio = fleet / ceiling: for tasks/s and MiB/s higher is better; for us, MiB and CPU lower is. "
               "Absolute numbers are noise on a shared machine; the ratios are the result.")
    out.append("")
    group = None
    for r in rows:
        if r["group"] != group:
            group = r["group"]
            out += ["", f"## {group}", "", "| " + " | ".join(HEADERS) + " |",
                    "|" + "---|" * len(HEADERS)]
        out.append("| " + " | ".join(c.replace("|", "/") for c in _cells(r)) + " |")
    if errors:
        out += ["", "## errors", ""] + [f"- {e}" for e in errors]
    return "\n".join(out) + "\n"


def write(out_dir, meta, rows, runs, errors):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {"meta": meta, "rows": rows, "runs": runs, "errors": errors}
    stamp = meta["date"].replace(":", "").replace("-", "")[:15]
    paths = []
    for name in ("bench", f"bench-{stamp}"):
        j = out_dir / f"{name}.json"
        j.write_text(json.dumps(doc, indent=2) + "\n")
        (out_dir / f"{name}.md").write_text(markdown(meta, rows, errors))
        paths.append(j)
    return paths
