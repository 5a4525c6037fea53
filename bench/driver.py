"""bin/bench: fleet against a hand-written ceiling, on servers of its own.

Runs bin/setup and a release build, then every scenario below, each on a
fresh nats-server (nats.conf, free loopback port, temporary store); prints
the table and writes it as JSON and Markdown to --out (default .bench/).
Exits 1 when a scenario could not be measured (targets missed are reported,
not errors). See `bin/bench --help`.
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import report
import runs
from procs import ROOT, BenchError, Procs, server_version, sync_always_conf
from report import row

FULL = dict(rounds=3, tput=40_000, lat=2_000, multi=40_000, sha=2_000, sleep_s=2.0, idle_s=3.0,
            inflight_tasks=768, inflight_sleep="1s", big=1_000_000, sync=5_000, nats_bench=100_000)
QUICK = dict(rounds=1, tput=5_000, lat=100, multi=1_000, sha=20, sleep_s=0.2, idle_s=1.0,
             inflight_tasks=256, inflight_sleep="500ms", big=20_000, sync=300, nats_bench=5_000)
SLEEP_CONCURRENCY = 64
SLEEP_TASK_S = 0.010


def parse_args():
    p = argparse.ArgumentParser(prog="bin/bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny counts: proves every scenario runs (seconds)")
    p.add_argument("--out", default=str(ROOT / ".bench"), help="where to write bench.json and bench.md (default .bench/)")
    p.add_argument("--rounds", type=int, help="rounds of the echo, sha256 and durability comparisons; the best "
                   "counts (default 3, quick 1)")
    p.add_argument("--no-build", action="store_true", help="skip bin/setup and cargo build")
    p.add_argument("--bin-dir", help="where fleet and examples/ceiling are (default target/release)")
    return p.parse_args()


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# What cargo sets for a test or build script it runs. Inherited by a nested
# cargo (bin/bench run by tests/bench_smoke.rs), they change what build scripts
# that track them (ring tracks CARGO_PKG_*) see, and force a rebuild of all.
CARGO_RUN_VARS = ("CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_CRATE_", "CARGO_BIN_", "CARGO_TARGET_TMPDIR",
                  "CARGO_PRIMARY_PACKAGE", "OUT_DIR")


def build():
    subprocess.run([str(ROOT / "bin" / "setup")], check=True, cwd=ROOT)
    log("building (cargo build --release --bins --examples) ...")
    started = time.monotonic()
    env = {k: v for k, v in os.environ.items() if not k.startswith(CARGO_RUN_VARS)}
    subprocess.run(["cargo", "build", "--release", "--bins", "--examples", "--quiet"], check=True, cwd=ROOT,
                   env=env)
    log(f"  built in {time.monotonic() - started:.0f} s")


def default_bin_dir():
    target = os.environ.get("CARGO_TARGET_DIR")
    return (Path(target) if target else ROOT / "target") / "release"


def git_describe():
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=ROOT).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True,
                               cwd=ROOT).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


class Bench:
    def __init__(self, procs, bins, cfg, workdir):
        self.procs, self.bins, self.cfg, self.workdir = procs, bins, cfg, workdir
        self.runs = {}
        self.errors = []

    def measure(self, name, what, fn, *args, **kwargs):
        """Runs one scenario, keeps its result under `name` (a list over
        rounds) and prints one line; a failure is recorded, not raised."""
        started = time.monotonic()
        try:
            result = fn(self.procs, *args, **kwargs)
        except BenchError as err:
            self.errors.append(f"{name}: {err} (logs in {self.procs.keep_logs})")
            log(f"  {what}: FAILED: {str(err).splitlines()[0]}")
            return None
        self.runs.setdefault(name, []).append(result)
        if "tasks_per_s" in result:
            shown = f"{result['tasks_per_s']:,.0f} tasks/s, p50 {result['latency_us']['p50']:,} us"
        else:
            shown = ", ".join(f"{k} {v:,.1f}" for k, v in result.items())
        log(f"  {what}: {shown} ({time.monotonic() - started:.1f} s)")
        return result

    def best(self, name, key="tasks_per_s", lowest=False):
        """The best round of a scenario (noise only ever slows a run down)."""
        rounds = self.runs.get(name)
        if not rounds:
            return None
        pick = min if lowest else max
        return pick(rounds, key=lambda r: key(r) if callable(key) else r[key])

    def input(self, name, count, line):
        return runs.lines_file(self.workdir, name, count, line)

    def run_all(self):
        c, b = self.cfg, self.bins
        log("nats CLI bench (the server's own figures)")
        self.measure("nats_bench", "nats bench js pub async + js consume", runs.nats_bench, c["nats_bench"])

        echo = self.input("echo", c["tput"], runs.echo_line)
        echo_lat = self.input("echo", c["lat"], runs.echo_line)
        multi = self.input("echo", c["multi"], runs.echo_line)
        sha = self.input("hex64k", c["sha"], runs.hex_64k_line)
        for i in range(c["rounds"]):
            log(f"round {i + 1} of {c['rounds']}: echo window 256 and window 1, more nodes, sha256")
            for mode, eph, fleet_name in (("plain", True, "ephemeral"), ("kept", False, "kept")):
                self.measure(f"ceiling_{mode}_w256", f"ceiling {mode} w256", runs.ceiling, b, mode, c["tput"], 256)
                self.measure(f"fleet_{fleet_name}_w256_n1", f"fleet {fleet_name} w256 1 node", runs.fleet, b,
                             "echo", echo, 256, ephemeral=eph)
            for mode, eph, fleet_name in (("plain", True, "ephemeral"), ("kept", False, "kept")):
                self.measure(f"ceiling_{mode}_w1", f"ceiling {mode} w1", runs.ceiling, b, mode, c["lat"], 1)
                self.measure(f"fleet_{fleet_name}_w1", f"fleet {fleet_name} w1", runs.fleet, b,
                             "echo", echo_lat, 1, ephemeral=eph)
            # More nodes share the 2 cores with the server and the submitter.
            for nodes in (2, 4):
                for eph, fleet_name in ((True, "ephemeral"), (False, "kept")):
                    self.measure(f"fleet_{fleet_name}_w256_n{nodes}", f"fleet {fleet_name} w256 {nodes} nodes",
                                 runs.fleet, b, "echo", multi, 256, nodes=nodes, ephemeral=eph)
            self.measure("ceiling_sha256", "ceiling kept sha256 64 KiB", runs.ceiling, b, "kept", c["sha"], 256,
                         size=64 * 1024, handler="sha256")
            self.measure("fleet_sha256", "fleet sha256 64 KiB w256 1 node", runs.fleet, b, "sha256", sha, 256)

        log(f"sleep 10ms, concurrency {SLEEP_CONCURRENCY} per node")
        for nodes in (1, 2, 4):
            ideal = nodes * SLEEP_CONCURRENCY / SLEEP_TASK_S
            tasks = int(ideal * c["sleep_s"])
            path = self.input("sleep10ms", tasks, lambda i: b"10ms")
            self.measure(f"fleet_sleep_n{nodes}", f"fleet sleep 10ms {plural(nodes)}", runs.fleet, b, "sleep",
                         path, 2 * nodes * SLEEP_CONCURRENCY, nodes=nodes, concurrency=SLEEP_CONCURRENCY,
                         ephemeral=True)

        log("cost: node RSS idle and with 256 in flight, submitter for many tasks")
        self.measure("node_idle", f"node idle {c['idle_s']:g} s", runs.idle_rss, b, c["idle_s"])
        inflight = self.input(f"sleep{c['inflight_sleep']}", c["inflight_tasks"],
                              lambda i: c["inflight_sleep"].encode())
        self.measure("node_inflight", "node, 256 sleep tasks in flight", runs.fleet, b, "sleep", inflight, 256,
                     concurrency=256, ephemeral=True)
        big = self.input("echo", c["big"], runs.echo_line)
        self.measure("submit_big", f"fleet submit {c['big']:,} echo tasks (ephemeral, w256)", runs.fleet, b,
                     "echo", big, 256, ephemeral=True, timeout=900)

        log(f"durability: sync_interval: always, {c['rounds']} round(s)")
        conf = sync_always_conf(Path(self.workdir) / "sync-always.conf")
        sync_in = self.input("echo", c["sync"], runs.echo_line)
        for i in range(c["rounds"]):
            self.measure("ceiling_kept_sync", "ceiling kept w256, sync always", runs.ceiling, b, "kept",
                         c["sync"], 256, conf=conf)
            self.measure("fleet_kept_sync", "fleet kept w256, sync always", runs.fleet, b, "echo", sync_in,
                         256, conf=conf)
            self.measure("fleet_kept_sync_c256", "fleet kept w256 concurrency 256, sync always", runs.fleet,
                         b, "echo", sync_in, 256, concurrency=256, conf=conf)


def get(run, *keys):
    for k in keys:
        if run is None:
            return None
        run = run.get(k)
    return run


def duplicates(run):
    """`fleet submit` counts results that came twice; none are expected here."""
    return f"; {run['duplicates']} duplicate results" if run and run.get("duplicates") else ""


def plural(nodes):
    return f"{nodes} node" + ("s" if nodes > 1 else "")


def per_100k(run, cpu_key):
    if run is None:
        return None
    return run[cpu_key] / run["tasks"] * 100_000


def rows(bench):
    c = bench.cfg
    best, R = bench.best, []
    nb = best("nats_bench", key=lambda r: r["js_pub_async"])
    R.append(row("nats_bench_js_pub", "server (nats CLI)", "nats bench js pub async", get(nb, "js_pub_async"),
                 "msgs/s", note=f"{c['nats_bench']:,} x 100 B, file storage"))
    R.append(row("nats_bench_js_consume", "server (nats CLI)", "nats bench js consume", get(nb, "js_consume"),
                 "msgs/s", note="durable consumer, explicit acks"))

    g = "echo, window 256"
    cp, ck = best("ceiling_plain_w256"), best("ceiling_kept_w256")
    for nodes in (1, 2, 4):
        target = ("ratio>=", 0.90) if nodes == 1 else None
        note = f"{c['tput'] if nodes == 1 else c['multi']:,} tasks"
        if nodes > 1:
            note += f"; {nodes} nodes on {os.cpu_count()} cores"
        for name, label, ceil, ceil_label in (("ephemeral", "ephemeral", cp, "plain"), ("kept", "kept", ck, "kept")):
            f = best(f"fleet_{name}_w256_n{nodes}")
            R.append(row(f"echo_{name}_w256_{nodes}node", g, f"{label}, {plural(nodes)}", get(f, "tasks_per_s"),
                         "tasks/s", get(ceil, "tasks_per_s"), ceil_label, target, note + duplicates(f)))

    g = "echo, window 1 (latency)"
    p50 = lambda r: r["latency_us"]["p50"]
    for fleet_name, mode in (("ephemeral", "plain"), ("kept", "kept")):
        f, ceil = best(f"fleet_{fleet_name}_w1", p50, True), best(f"ceiling_{mode}_w1", p50, True)
        for q, target in (("p50", ("ratio<=", 1.2)), ("p99", None), ("p999", None)):
            R.append(row(f"echo_{fleet_name}_w1_{q}", g, f"{fleet_name} {q.replace('p999', 'p99.9')}",
                         get(f, "latency_us", q), "us", get(ceil, "latency_us", q), mode, target,
                         f"{c['lat']:,} tasks, 1 node"))

    g = "handlers"
    mib = lambda r: None if r is None else r["tasks"] * 64 / 1024 / r["seconds"]
    R.append(row("sha256_64k", g, "sha256, 64 KiB payloads", mib(best("fleet_sha256")), "MiB/s",
                 mib(best("ceiling_sha256")), "kept sha256", note=f"{c['sha']:,} tasks, 1 node, kept"))
    for nodes in (1, 2, 4):
        ideal = nodes * SLEEP_CONCURRENCY / SLEEP_TASK_S
        R.append(row(f"sleep10ms_{nodes}node", g, f"sleep 10ms, {plural(nodes)}",
                     get(best(f"fleet_sleep_n{nodes}"), "tasks_per_s"), "tasks/s", ideal, "ideal",
                     note=f"ideal = {nodes} x {SLEEP_CONCURRENCY} / 10 ms; window {2 * nodes * SLEEP_CONCURRENCY}"))

    g = "cost"
    idle = best("node_idle", "node_rss_mib", True)
    R.append(row("node_rss_idle", g, "node peak RSS, idle", get(idle, "node_rss_mib"), "MiB",
                 get(idle, "worker_rss_mib"), "worker", target=("value<=", 10),
                 note=f"VmHWM after {c['idle_s']:g} s idle"))
    R.append(row("node_rss_256_inflight", g, "node peak RSS, 256 in flight", get(best("node_inflight"), "node_rss_mib"),
                 "MiB", target=("value<=", 30),
                 note=f"{c['inflight_tasks']} x sleep {c['inflight_sleep']}, concurrency 256, window 256"))
    fk, fe = best("fleet_kept_w256_n1"), best("fleet_ephemeral_w256_n1")
    R.append(row("node_rss_kept_w256", g, "node peak RSS, echo kept w256", get(fk, "node_rss_mib"), "MiB",
                 get(ck, "worker_rss_mib"), "worker"))
    big = best("submit_big")
    R.append(row("submit_rss_big", g, f"submit peak RSS, {c['big']:,} tasks", get(big, "submit_rss_mib"), "MiB",
                 get(cp, "submit_rss_mib"), "ceiling submit", target=("value<=", 50),
                 note=f"echo, ephemeral, w256, stdin from a file; flat? {c['tput']:,} tasks: "
                      f"{get(fe, 'submit_rss_mib') or 0:.1f} MiB"))
    for label, run, ceil in (("kept", fk, ck), ("ephemeral", fe, cp), (f"{c['big']:,} ephemeral", big, cp)):
        rid = label.split()[-1] if run is not big else "big"
        R.append(row(f"node_cpu_{rid}", g, f"node CPU, {label}", per_100k(run, "node_cpu_s"), "CPU s/100k",
                     per_100k(ceil, "worker_cpu_s"), "worker"))
        R.append(row(f"submit_cpu_{rid}", g, f"submit CPU, {label}", per_100k(run, "submit_cpu_s"),
                     "CPU s/100k", per_100k(ceil, "submit_cpu_s"), "submit"))
        R.append(row(f"server_cpu_{rid}", g, f"nats-server CPU, {label}", per_100k(run, "server_cpu_s"),
                     "CPU s/100k", per_100k(ceil, "server_cpu_s"), "server"))

    g = "durability: sync_interval always"
    cs = best("ceiling_kept_sync")
    for rid, name, label in (("echo_kept_w256_sync", "fleet_kept_sync", "kept, 1 node"),
                             ("echo_kept_w256_sync_c256", "fleet_kept_sync_c256", "kept, 1 node, concurrency 256")):
        f = best(name)
        note = f"{c['sync']:,} tasks" + duplicates(f)
        if f and fk and cs and ck:
            note += (f"; price: fleet x{f['tasks_per_s'] / fk['tasks_per_s']:.2f}, "
                     f"ceiling x{cs['tasks_per_s'] / ck['tasks_per_s']:.2f} of default")
        R.append(row(rid, g, label, get(f, "tasks_per_s"), "tasks/s", get(cs, "tasks_per_s"), "kept", note=note))
    return R


def main():
    args = parse_args()
    cfg = dict(QUICK if args.quick else FULL)
    if args.rounds:
        cfg["rounds"] = max(1, args.rounds)
    started = time.monotonic()

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background

    workdir = tempfile.mkdtemp(prefix="fleet-bench-")
    procs = Procs(workdir, keep_logs=Path(args.out) / "failed")
    try:
        if not args.no_build:
            build()
        bins = runs.Bins(args.bin_dir or default_bin_dir())
        meta = {
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "mode": "quick" if args.quick else "full",
            "nats_server": server_version(),
            "cores": os.cpu_count(),
            "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "rounds": cfg["rounds"],
            "counts": cfg,
            "git": git_describe(),
        }
        log(f"fleet bench ({meta['mode']}): nats-server {meta['nats_server']}, {meta['cores']} cores")
        measuring = time.monotonic()
        bench = Bench(procs, bins, cfg, workdir)
        bench.run_all()
        meta["runtime_s"] = time.monotonic() - started
        meta["measuring_s"] = time.monotonic() - measuring
        table = rows(bench)
        paths = report.write(args.out, meta, table, bench.runs, bench.errors)
        print()
        print(f"fleet bench, {meta['mode']}: nats-server {meta['nats_server']}, {meta['cores']} cores, "
              f"git {meta['git']}, {meta['runtime_s']:.0f} s")
        print("ratio = fleet / ceiling: for tasks/s and MiB/s higher is better; for us, MiB and CPU lower is")
        print(report.text_table(table))
        print(f"\nwritten: {paths[0]} and {paths[0].with_suffix('.md')}")
        if bench.errors:
            print("\nerrors:\n  " + "\n  ".join(e.splitlines()[0] for e in bench.errors))
            return 1
        return 0
    except KeyboardInterrupt:
        log("interrupted: stopping everything bin/bench started")
        return 130
    except (BenchError, subprocess.CalledProcessError) as err:
        log(f"bin/bench: {err}")
        return 1
    finally:
        procs.kill_all()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
