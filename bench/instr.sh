#!/usr/bin/env bash
# Instructions per task of the node and the submitter, counted by valgrind
# (callgrind), for fleet builds and the hand-written loop (issue 9).
#
#   bench/instr.sh [kept|ephemeral] BIN... [loop]
#
# Each BIN is a `fleet` binary; `loop` stands for bench/src/bin/ceiling.rs
# (target/release/ceiling). For each, twice (2,000 and 12,000 echo tasks of
# 100 bytes, window 256, a fresh nats-server each time): the node (or loop
# worker) and the submitter run under callgrind; the difference of the two
# runs over 10,000 tasks leaves out start-up and shutdown. Prints one line
# per binary: instructions per task of the node and of the submitter.
#
# Unlike CPU seconds, instruction counts do not move with the machine's
# load, so two builds can be compared on a busy machine in one run. They
# are not time: a cache miss or a system call counts as little, and
# everything runs some 50x slower, so the server batches differently than
# at full speed. Use it to compare builds of the same code path, and
# bench/cpu-ab.sh or bin/bench for rates.
set -euo pipefail
mode=${1:?usage: bench/instr.sh kept|ephemeral BIN... [loop]}
shift
root=$(cd "$(dirname "$0")/.." && pwd)
if ! command -v valgrind >/dev/null 2>&1; then
    echo "bench/instr.sh: valgrind is needed (apt-get install valgrind)" >&2
    exit 1
fi
server=$root/.tools/bin/nats-server
loop=${CARGO_TARGET_DIR:-$root/target}/release/ceiling
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# count BIN N: "node_instructions submit_instructions" for one run of N tasks.
count() {
    local bin=$1 n=$2 d port url npid extra=() loop_mode=$mode
    d=$(mktemp -d -p "$work")
    port=$((20000 + RANDOM % 20000))
    url=nats://127.0.0.1:$port
    "$server" -c "$root/nats.conf" -p "$port" -a 127.0.0.1 -sd "$d/js" >"$d/server.log" 2>&1 &
    local spid=$!
    python3 -c "
with open('$d/in', 'w') as f:
    for i in range($n): f.write('%08d' % i + 'x' * 92 + '\n')
"
    [ "$mode" = ephemeral ] && { extra=(--ephemeral); loop_mode=plain; }
    if [ "$bin" = loop ]; then
        until grep -q "Server is ready" "$d/server.log" 2>/dev/null; do sleep 0.1; done
        valgrind --tool=callgrind --callgrind-out-file="$d/cg.node" \
            "$loop" --nats-url "$url" worker --mode "$loop_mode" >"$d/node.log" 2>&1 &
        npid=$!
        until grep -q "ready" "$d/node.log" 2>/dev/null; do sleep 0.1; done
        valgrind --tool=callgrind --callgrind-out-file="$d/cg.submit" \
            "$loop" --nats-url "$url" submit --mode "$loop_mode" -n "$n" >/dev/null 2>"$d/submit.err"
    else
        until "$bin" --server "$url" setup >/dev/null 2>&1; do sleep 0.1; done
        valgrind --tool=callgrind --callgrind-out-file="$d/cg.node" \
            "$bin" --server "$url" node --name n1 >"$d/node.log" 2>&1 &
        npid=$!
        until grep -q "node ready" "$d/node.log" 2>/dev/null; do sleep 0.1; done
        valgrind --tool=callgrind --callgrind-out-file="$d/cg.submit" \
            "$bin" --server "$url" submit echo --no-progress "${extra[@]}" \
            <"$d/in" >/dev/null 2>"$d/submit.err"
    fi
    kill -TERM "$npid"; wait "$npid" 2>/dev/null || true
    kill "$spid"; wait "$spid" 2>/dev/null || true
    local total
    total() { awk '/^(summary|totals):/ {print $2; exit}' "$1"; }
    echo "$(total "$d/cg.node") $(total "$d/cg.submit")"
}

printf '%-40s %14s %14s   (%s, instructions per task)\n' build node submit "$mode"
for bin in "$@"; do
    read -r n1 s1 < <(count "$bin" 2000)
    read -r n2 s2 < <(count "$bin" 12000)
    printf '%-40s %14d %14d\n' "$bin" $(((n2 - n1) / 10000)) $(((s2 - s1) / 10000))
done
