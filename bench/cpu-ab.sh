#!/usr/bin/env bash
# CPU per task of whole processes, two fleet builds interleaved (issue 9).
#
#   bench/cpu-ab.sh A_BIN B_BIN [kept|ephemeral] [TASKS] [ROUNDS]
#
# For each round, A then B: a fresh nats-server (nats.conf, the pinned
# binary in .tools/bin, a new store), `fleet setup`, one `fleet node` at
# default flags, then one `fleet submit echo` of TASKS 100-byte lines
# (window 256, the default). Prints per run the rate (tasks/s from the
# submit's summary) and the CPU seconds (user + system, from
# /proc/<pid>/stat before and after the submit) of the server, the node
# and the submit, then the medians per build. CPU seconds are far less
# noisy than wall time on a shared machine.
#
# A_BIN may equal B_BIN (an A/A run shows the noise). Set PERF=node to
# also record the first B run's node with `perf record -g` into
# /tmp/perf.node.data (perf report --no-children -i ...).
set -euo pipefail
a=$1; b=$2; mode=${3:-kept}; n=${4:-100000}; rounds=${5:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
server=$root/.tools/bin/nats-server
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -c "
with open('$work/in', 'w') as f:
    for i in range($n): f.write('%08d' % i + 'x' * 92 + '\n')
"
ticks=$(getconf CLK_TCK)
cpu() { awk -v t="$ticks" '{printf "%.2f", ($14 + $15) / t}' "/proc/$1/stat"; }

# one BIN LABEL [PERF]: one run, one line "LABEL rate server node submit".
one() {
    local bin=$1 label=$2 prof=${3:-} d port url spid npid s0 n0 s1 n1 rate sub
    d=$(mktemp -d -p "$work")
    port=$((20000 + RANDOM % 20000))
    "$server" -c "$root/nats.conf" -p "$port" -a 127.0.0.1 -sd "$d/js" >"$d/server.log" 2>&1 &
    spid=$!
    url=nats://127.0.0.1:$port
    until "$bin" --server "$url" setup >/dev/null 2>&1; do sleep 0.1; done
    "$bin" --server "$url" node --name n1 >"$d/node.log" 2>&1 &
    npid=$!
    until grep -q "node ready" "$d/node.log"; do sleep 0.05; done
    local ppid=""
    if [ -n "$prof" ]; then
        perf record -F ${PERF_HZ:-1999} ${PERF_CG:--g} -p "$npid" -o /tmp/perf.node.data >/dev/null 2>&1 &
        ppid=$!
        sleep 0.3
    fi
    local extra=()
    [ "$mode" = ephemeral ] && extra=(--ephemeral)
    s0=$(cpu "$spid"); n0=$(cpu "$npid")
    /usr/bin/time -f "%U %S" -o "$d/time" "$bin" --server "$url" submit echo --no-progress \
        "${extra[@]}" --summary-json "$d/sum.json" <"$work/in" >/dev/null 2>"$d/submit.err"
    s1=$(cpu "$spid"); n1=$(cpu "$npid")
    [ -n "$ppid" ] && { kill -INT "$ppid"; wait "$ppid" 2>/dev/null || true; }
    rate=$(python3 -c "import json; d=json.load(open('$d/sum.json')); print(round(d['tasks'] / d['seconds']))")
    sub=$(awk '{printf "%.2f", $1 + $2}' "$d/time")
    kill "$npid"; wait "$npid" 2>/dev/null || true
    kill "$spid"; wait "$spid" 2>/dev/null || true
    echo "$label $rate $(echo "$s1 - $s0" | bc) $(echo "$n1 - $n0" | bc) $sub"
}

echo "build rate server-cpu-s node-cpu-s submit-cpu-s ($mode, $n tasks)"
for r in $(seq "$rounds"); do
    one "$a" A | tee -a "$work/runs"
    p=""; [ "$r" = 1 ] && [ "${PERF:-}" = node ] && p=yes
    one "$b" B "$p" | tee -a "$work/runs"
done
python3 - "$work/runs" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for build in ("A", "B"):
    cols = list(zip(*[map(float, r[1:]) for r in rows if r[0] == build]))
    med = [statistics.median(c) for c in cols]
    print(f"median {build}: rate {med[0]:.0f}/s server {med[1]:.2f} node {med[2]:.2f} submit {med[3]:.2f}")
EOF
