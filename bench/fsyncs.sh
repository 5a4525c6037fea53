#!/usr/bin/env bash
# fsyncs per task under `sync_interval: always` (issue 9, durability row).
#
#   bench/fsyncs.sh [FLEET_BIN] [TASKS]
#
# On a fresh nats-server started from nats.conf with `sync_interval:
# always` switched on, counts the server's fsync(2) calls (a kernel
# tracepoint, `perf stat -e syscalls:sys_enter_fsync`) while each of these
# runs TASKS echo tasks of 100 bytes at window 256:
#   - the hand-written loop, plain (core reply) and kept (result in a
#     stream), target/release/ceiling;
#   - fleet kept and fleet --ephemeral, one `fleet node` at default flags;
#   - `nats bench js pub` of TASKS messages: async (a PubAck each), fast
#     batch, atomic batches of 100 and 256.
# Prints fsyncs per task (or per message). With every write synced, the
# disk's fsync is what bounds the rate, so these counts say how far apart
# the rates can be, whatever the machine's load (a count does not move
# with it). Needs perf (apt-get install linux-perf) and root.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
fleet=${1:-${CARGO_TARGET_DIR:-$root/target}/release/fleet}
n=${2:-2000}
loop=${CARGO_TARGET_DIR:-$root/target}/release/ceiling
export PATH=$root/.tools/bin:$PATH
if ! perf list tracepoint 2>/dev/null | grep "syscalls:sys_enter_fsync" >/dev/null; then
    echo "bench/fsyncs.sh: perf with syscall tracepoints is needed (root, apt-get install linux-perf)" >&2
    exit 1
fi
work=$(mktemp -d)
spid=""
trap 'kill $spid 2>/dev/null || true; rm -rf "$work"' EXIT
sed 's/# sync_interval: always/sync_interval: always/' "$root/nats.conf" >"$work/sync.conf"
grep -q "^ *sync_interval: always" "$work/sync.conf" || {
    echo "bench/fsyncs.sh: nats.conf has no '# sync_interval: always' line" >&2
    exit 1
}
python3 -c "
with open('$work/in', 'w') as f:
    for i in range($n): f.write('%08d' % i + 'x' * 92 + '\n')
"

# server: a fresh sync-always nats-server; sets d, spid, url.
server() {
    d=$(mktemp -d -p "$work")
    local port=$((20000 + RANDOM % 20000))
    : >"$d/server.log"
    nats-server -c "$work/sync.conf" -p "$port" -a 127.0.0.1 -sd "$d/js" >"$d/server.log" 2>&1 &
    spid=$!
    url=nats://127.0.0.1:$port
    until grep -q "Server is ready" "$d/server.log"; do sleep 0.05; done
}
# counted LABEL CMD...: runs CMD while counting the server's fsyncs.
counted() {
    local label=$1
    shift
    perf stat -e syscalls:sys_enter_fsync -p "$spid" -o "$d/perf" &
    local ppid=$!
    sleep 0.3
    "$@" >/dev/null 2>"$d/cmd.err" || { cat "$d/cmd.err" >&2; exit 1; }
    sleep 0.3
    kill -INT "$ppid"
    wait "$ppid" || true
    awk -v n="$n" -v l="$label" '/sys_enter_fsync/ {gsub(",", "", $1); printf "%-28s %6.2f fsyncs per task\n", l, $1 / n}' "$d/perf"
}
stop() { kill "$@" "$spid"; wait "$@" "$spid" 2>/dev/null || true; }

for mode in plain kept; do
    server
    "$loop" --nats-url "$url" worker --mode "$mode" >/dev/null 2>"$d/worker.log" &
    wpid=$!
    until grep -q "ready" "$d/worker.log"; do sleep 0.05; done
    counted "loop $mode" "$loop" --nats-url "$url" submit --mode "$mode" -n "$n" --window 256 --size 100
    stop "$wpid"
done
for mode in kept ephemeral; do
    server
    until "$fleet" --server "$url" setup >/dev/null 2>&1; do sleep 0.1; done
    "$fleet" --server "$url" node --name n1 >"$d/node.log" 2>&1 &
    npid=$!
    until grep -q "node ready" "$d/node.log"; do sleep 0.05; done
    extra=()
    [ "$mode" = ephemeral ] && extra=(--ephemeral)
    counted "fleet $mode" bash -c '"$0" --server "$1" submit echo --no-progress "${@:3}" <"$2"' \
        "$fleet" "$url" "$work/in" "${extra[@]}"
    stop "$npid"
done
server
for pub in async fast "atomic --batch=100" "atomic --batch=256"; do
    # shellcheck disable=SC2086
    counted "nats bench js pub $pub" nats -s "$url" bench js pub $pub --create --purge \
        --msgs "$n" --size 100 benchsubj
done
stop
