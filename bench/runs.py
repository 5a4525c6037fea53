"""One measured run each: the ceiling pair (examples/ceiling.rs), fleet
nodes plus `fleet submit`, the nats CLI's own bench, and a node's peak RSS.
Every run gets a nats-server of its own, so no run sees another's streams.
"""

import json
import os
import re
import time
from pathlib import Path

from procs import BenchError, cpu_seconds, nats_server, tool, wait_for_log

NODE_READY = "node ready"
CEILING_READY = "ceiling worker ready"


class Bins:
    def __init__(self, bin_dir):
        bin_dir = Path(bin_dir)
        self.fleet = bin_dir / "fleet"
        self.ceiling = bin_dir / "examples" / "ceiling"
        for b in (self.fleet, self.ceiling):
            if not b.exists():
                raise BenchError(f"{b} is missing: build with cargo build --release --bins --examples")


def lines_file(workdir, name, count, line):
    """A file of `count` lines `line(i)` (bytes, no newline), written in
    chunks so a million lines never sit in memory; reused when present."""
    path = Path(workdir) / f"{name}-{count}.txt"
    if not path.exists():
        with open(path, "wb") as f:
            for start in range(0, count, 10_000):
                f.write(b"".join(line(i) + b"\n" for i in range(start, min(count, start + 10_000))))
    return path


def echo_line(i):
    """100 bytes of ASCII."""
    return b"%08d" % i + b"x" * 92


def hex_64k_line(i):
    """64 KiB of hex text, different for every line, no newline in it."""
    return os.urandom(32 * 1024).hex().encode()


def ceiling(procs, bins, mode, tasks, window, size=100, handler="echo", conf=None):
    """`ceiling worker` + `ceiling submit`; the submit's JSON summary plus
    worker and submitter CPU seconds."""
    with nats_server(procs, conf) as (url, d, server):
        worker = procs.spawn([bins.ceiling, "--nats-url", url, "worker", "--mode", mode,
                              "--handler", handler], d / "worker.log")
        wait_for_log(worker, CEILING_READY)
        cpu0, server0 = cpu_seconds(worker.pid), cpu_seconds(server.pid)
        out = d / "submit.json"
        code, wall, cpu, rss = procs.run_measured(
            [bins.ceiling, "--nats-url", url, "submit", "--mode", mode, "-n", tasks,
             "--window", window, "--size", size], d / "submit.log", stdout_path=out)
        if code != 0:
            raise BenchError(f"ceiling submit exited {code}: {(d / 'submit.log').read_text()[-1500:]}")
        server_cpu = cpu_seconds(server.pid) - server0
        worker_cpu, worker_rss = procs.kill_measured(worker)
        worker_cpu -= cpu0
        summary = json.loads(out.read_text())
    return {
        "tasks": summary["tasks"],
        "seconds": summary["seconds"],
        "tasks_per_s": summary["tasks_per_s"],
        "latency_us": summary["latency_us"],
        "worker_cpu_s": worker_cpu,
        "server_cpu_s": server_cpu,
        "submit_cpu_s": cpu,
        "worker_rss_mib": worker_rss,
        "submit_rss_mib": rss,
    }


def start_nodes(procs, bins, url, d, nodes, concurrency):
    started = []
    for i in range(1, nodes + 1):
        started.append(procs.spawn(
            [bins.fleet, "--nats-url", url, "node", "--name", f"node{i}", "--concurrency", concurrency],
            d / f"node{i}.log"))
    for node in started:
        wait_for_log(node, NODE_READY)
    return started


def fleet(procs, bins, kind, input_path, window, nodes=1, concurrency=64, ephemeral=False,
          conf=None, timeout=300):
    """`nodes` fleet nodes and one `fleet submit KIND` fed `input_path` on
    stdin; the summary JSON plus CPU seconds and peak RSS of both sides."""
    with nats_server(procs, conf) as (url, d, server):
        started = start_nodes(procs, bins, url, d, nodes, concurrency)
        cpu0 = [cpu_seconds(n.pid) for n in started]
        server0 = cpu_seconds(server.pid)
        summary_path = d / "summary.json"
        cmd = [bins.fleet, "--nats-url", url, "submit", kind, "--window", window,
               "--no-progress", "--summary-json", summary_path]
        if ephemeral:
            cmd.append("--ephemeral")
        code, wall, cpu, rss = procs.run_measured(cmd, d / "submit.log", stdin_path=input_path,
                                                  timeout=timeout)
        server_cpu = cpu_seconds(server.pid) - server0
        ends = [procs.kill_measured(n) for n in started]
        node_cpu = sum(cpu - c for (cpu, _), c in zip(ends, cpu0))
        node_rss = max(rss for _, rss in ends)
        if code != 0 or not summary_path.exists():
            raise BenchError(f"fleet submit {kind} exited {code}: {(d / 'submit.log').read_text()[-1500:]}")
        summary = json.loads(summary_path.read_text())
    if summary["ok"] != summary["tasks"] or summary["seconds"] <= 0:
        raise BenchError(f"fleet submit {kind}: {summary}")
    summary.update({
        "tasks_per_s": summary["tasks"] / summary["seconds"],
        "node_cpu_s": node_cpu,
        "server_cpu_s": server_cpu,
        "submit_cpu_s": cpu,
        "node_rss_mib": node_rss,
        "submit_rss_mib": rss,
        "submit_wall_s": wall,
    })
    return summary


def idle_rss(procs, bins, idle_s):
    """Peak RSS of a node that started, set up its streams and sat idle for
    `idle_s`; then the same for a ceiling worker."""
    with nats_server(procs) as (url, d, _):
        (node,) = start_nodes(procs, bins, url, d, 1, 64)
        time.sleep(idle_s)
        _, node_rss = procs.kill_measured(node)
        worker = procs.spawn([bins.ceiling, "--nats-url", url, "worker"], d / "worker.log")
        wait_for_log(worker, CEILING_READY)
        time.sleep(idle_s)
        _, worker_rss = procs.kill_measured(worker)
    return {"node_rss_mib": node_rss, "worker_rss_mib": worker_rss, "idle_s": idle_s}


def nats_bench(procs, msgs):
    """The server's own figures: `nats bench js pub async` then `js consume`
    of what it published (100-byte messages, file storage)."""
    nats = tool("nats")
    out = {}
    with nats_server(procs) as (url, d, _):
        common = ["--msgs", str(msgs), "--size", "100", "--no-progress", "--server", url, "--no-context"]
        for name, cmd in (
            ("js_pub_async", [nats, "bench", "js", "pub", "async", "benchmark.subject", "--create", "--purge"]),
            ("js_consume", [nats, "bench", "js", "consume"]),
        ):
            log = d / f"{name}.log"
            code, _, _, _ = procs.run_measured(cmd + common, log, stdout_path=d / f"{name}.out", timeout=180)
            text = (d / f"{name}.out").read_text(errors="replace") + log.read_text(errors="replace")
            m = re.search(r"stats:\s*([\d,]+)\s*msgs/sec", text)
            if code != 0 or not m:
                raise BenchError(f"nats bench {name} failed ({code}):\n{text[-1500:]}")
            out[name] = int(m.group(1).replace(",", ""))
    return out
