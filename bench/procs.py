"""Processes for bin/bench: nats-servers on free loopback ports with fresh
stores, fleet nodes and ceiling workers, and what they cost (CPU, RSS).

Every process is started here and registered; `Procs.kill_all` ends them
all (the driver calls it on exit, on Ctrl-C and on SIGTERM). Children also
die with the driver if it is killed outright (PR_SET_PDEATHSIG).
"""

import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


class BenchError(Exception):
    """A scenario that could not be measured."""


def tool(name):
    """A tool from .tools/bin (bin/setup) or PATH."""
    local = ROOT / ".tools" / "bin" / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found:
        return found
    raise BenchError(f"{name} not found in .tools/bin or on PATH: run bin/setup")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:  # not Linux: Procs.kill_all still ends them
        pass


def child_env():
    """The environment without NATS or logging settings of the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_") and k != "RUST_LOG"}
    env["NO_COLOR"] = "1"
    return env


def cpu_seconds(pid):
    """utime + stime of a running process, in seconds (rounded down to a
    clock tick: subtracted from a later wait4 figure, it never undercounts)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mib(pid):
    """VmHWM of a running process in MiB: its peak resident set since exec.
    (wait4's ru_maxrss is no use: it keeps the forking parent's peak.)"""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # exited between two samples
        pass
    return 0.0


class Procs:
    """Starts processes and remembers them until they are ended."""

    def __init__(self, workdir, keep_logs=None):
        self.workdir = Path(workdir)
        self.keep_logs = keep_logs
        self.live = []

    def spawn(self, cmd, log, stdin=None, stdout=None):
        """Starts `cmd` (stderr to `log`) in its own session."""
        with open(log, "ab") as err:
            proc = subprocess.Popen(
                [str(c) for c in cmd],
                stdin=stdin if stdin is not None else subprocess.DEVNULL,
                stdout=stdout if stdout is not None else subprocess.DEVNULL,
                stderr=err,
                env=child_env(),
                start_new_session=True,
                preexec_fn=_die_with_parent,
                cwd=ROOT,
            )
        proc.log = Path(log)
        self.live.append(proc)
        return proc

    def kill(self, proc):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc in self.live:
            self.live.remove(proc)

    def kill_measured(self, proc):
        """Kills a running process; returns (CPU s, peak RSS MiB) from wait4's
        rusage, which counts CPU to the microsecond (/proc's stat only to the
        clock tick)."""
        if proc.poll() is not None:
            raise BenchError(f"{proc.args[0]} exited ({proc.returncode}); see {proc.log}")
        rss = peak_rss_mib(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        self.live.remove(proc)
        return usage.ru_utime + usage.ru_stime, rss

    def kill_all(self):
        for proc in list(self.live):
            self.kill(proc)

    def run_measured(self, cmd, log, stdin_path=None, stdout_path=None, timeout=300):
        """Runs `cmd` to its end; returns (exit code, wall s, CPU s, peak RSS
        MiB): CPU from wait4's rusage, the peak from VmHWM, sampled every 10 ms
        (it only grows, so the last sample is the peak)."""
        stdin = open(stdin_path, "rb") if stdin_path else None
        stdout = open(stdout_path, "wb") if stdout_path else None
        try:
            started = time.monotonic()
            proc = self.spawn(cmd, log, stdin=stdin, stdout=stdout)
        finally:
            for f in (stdin, stdout):
                if f:
                    f.close()
        rss = 0.0
        while True:
            rss = max(rss, peak_rss_mib(proc.pid))
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - started > timeout:
                self.kill(proc)
                raise BenchError(f"{Path(cmd[0]).name} did not finish within {timeout}s; see {log}")
            time.sleep(0.01)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        self.live.remove(proc)
        return proc.returncode, wall, usage.ru_utime + usage.ru_stime, rss


def wait_for_log(proc, needle, timeout=30, count=1):
    """Waits until `needle` appears `count` times in the process's log."""
    deadline = time.monotonic() + timeout
    while True:
        text = proc.log.read_text(errors="replace") if proc.log.exists() else ""
        if text.count(needle) >= count:
            return
        if proc.poll() is not None:
            raise BenchError(f"{proc.args[0]} exited ({proc.returncode}) before {needle!r}:\n{text[-2000:]}")
        if time.monotonic() > deadline:
            raise BenchError(f"no {needle!r} within {timeout}s from {proc.args[0]}:\n{text[-2000:]}")
        time.sleep(0.02)


def server_version():
    out = subprocess.run([tool("nats-server"), "--version"], capture_output=True, text=True).stdout
    m = re.search(r"v?\d+\.\d+\.\d+\S*", out)
    return m.group(0) if m else out.strip()


def sync_always_conf(dest):
    """A copy of nats.conf with `sync_interval: always` switched on."""
    text = (ROOT / "nats.conf").read_text()
    if "# sync_interval: always" not in text:
        raise BenchError("nats.conf has no '# sync_interval: always' line to switch on")
    Path(dest).write_text(text.replace("# sync_interval: always", "sync_interval: always"))
    return Path(dest)


@contextlib.contextmanager
def nats_server(procs, conf=None):
    """A nats-server of its own: a config (nats.conf), a free loopback port,
    a fresh store. Yields (url, dir, process); killed and deleted afterwards."""
    d = Path(tempfile.mkdtemp(prefix="server-", dir=procs.workdir))
    port = free_port()
    cmd = [tool("nats-server"), "-c", conf or ROOT / "nats.conf",
           "-p", port, "-a", "127.0.0.1", "-sd", d / "jetstream"]
    proc = procs.spawn(cmd, d / "server.log")
    try:
        wait_for_log(proc, "Server is ready", timeout=20)
        yield f"nats://127.0.0.1:{port}", d, proc
    except BenchError:
        if procs.keep_logs:  # the logs of a failed run, for a look afterwards
            dest = Path(procs.keep_logs) / d.name
            dest.mkdir(parents=True, exist_ok=True)
            for log in d.glob("*.log"):
                shutil.copy(log, dest)
        raise
    finally:
        procs.kill(proc)
        shutil.rmtree(d, ignore_errors=True)
