#!/usr/bin/env bash
# bench/failover.sh: failover figures for the load balancer. Three `loadgen serve` upstreams
# (CPU 1), Ringway with one worker (CPU 0), outlier detection, a TCP health check and the
# default retry policy; open-loop load from loadgen (CPU 1). One upstream is stopped at ~5 s
# and started again on the same port at ~12 s. Prints requests sent, failed, retried (counted
# at the upstreams: what they served minus what Ringway received) and when the restarted
# upstream had traffic again.
#
#   CARGO_TARGET_DIR=target cargo build --release -p ringway -p loadgen
#   bench/failover.sh [TARGET_DIR]        # default: $CARGO_TARGET_DIR or target
#
# Knobs (environment): RATE=2000 DURATION=20 CONNS=20 KILL_AT=5 RESTART_AT=12
#   UPSTREAM_DELAY=0ms (e.g. 5ms: requests are in flight at the victim when it stops, so
#   retries after a reset show up in the upstream count; a refused connect never does)
set -euo pipefail

T=${1:-${CARGO_TARGET_DIR:-target}}
RW=$T/release/ringway
LG=$T/release/loadgen
RATE=${RATE:-2000}
DURATION=${DURATION:-20}
CONNS=${CONNS:-20}
KILL_AT=${KILL_AT:-5}
RESTART_AT=${RESTART_AT:-12}
UPSTREAM_DELAY=${UPSTREAM_DELAY:-0ms}
for b in "$RW" "$LG"; do
    [ -x "$b" ] || { echo "missing $b: build with cargo build --release -p ringway -p loadgen" >&2; exit 2; }
done

DIR=$(mktemp -d /tmp/ringway-failover.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

now() { date +%s.%N; }

# Waits until FILE holds a line matching PATTERN; prints that line.
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

# start_upstream NAME BIND: prints the PID; stdout goes to $DIR/NAME.out.
start_upstream() {
    taskset -c 1 "$LG" serve --bind "$2" --count --delay "$UPSTREAM_DELAY" >"$DIR/$1.out" 2>&1 &
    echo $!
}

ADDR=()
UP_PID=()
for i in 0 1 2; do
    UP_PID[i]=$(start_upstream "up$i" 127.0.0.1:0)
    PIDS+=("${UP_PID[i]}")
    ADDR[i]=$(wait_line "$DIR/up$i.out" "listening on" 20 | awk '{print $3}')
done

cat >"$DIR/ringway.toml" <<EOF
[runtime]
workers = 1
[[listener]]
bind = "127.0.0.1:0"
[upstream.app]
servers = ["${ADDR[0]}", "${ADDR[1]}", "${ADDR[2]}"]
outlier = { consecutive_failures = 3 }
health_check = { type = "tcp", interval = "1s", timeout = "500ms" }
[[route]]
upstream = "app"
EOF

taskset -c 0 "$RW" --config "$DIR/ringway.toml" >"$DIR/ringway.out" 2> >(
    while IFS= read -r line; do printf '%s %s\n' "$(now)" "$line"; done >"$DIR/ringway.err"
) &
RW_PID=$!
PIDS+=("$RW_PID")
URL=http://$(wait_line "$DIR/ringway.out" "listening on" 20 | awk '{print $4}')/

T0=$(now)
taskset -c 1 "$LG" -q -c "$CONNS" --rate "$RATE" -d "${DURATION}s" --json "$DIR/loadgen.json" "$URL" \
    >"$DIR/loadgen.out" 2>&1 &
LG_PID=$!
PIDS+=("$LG_PID")

sleep "$KILL_AT"
VICTIM=${ADDR[1]}
kill -TERM "${UP_PID[1]}"          # --count: prints what it served, then exits
wait "${UP_PID[1]}" 2>/dev/null || true
T_KILL=$(now)

sleep "$((RESTART_AT - KILL_AT))"
UP_PID[3]=$(start_upstream up1b "$VICTIM")
PIDS+=("${UP_PID[3]}")
wait_line "$DIR/up1b.out" "listening on" 20 >/dev/null
T_RESTART=$(now)
# Traffic again: an established connection on the restarted port that has received bytes
# (TCP health probes connect and close without sending any).
T_TRAFFIC=""
while kill -0 "$LG_PID" 2>/dev/null; do
    if ss -Htni state established "( sport = :${VICTIM##*:} )" | grep -q 'bytes_received:[1-9]'; then
        T_TRAFFIC=$(now)
        break
    fi
    sleep 0.05
done

wait "$LG_PID" || true
kill -TERM "$RW_PID"
wait "$RW_PID" 2>/dev/null || true
served=0
for i in 0 2 3; do
    kill -TERM "${UP_PID[i]}"
    wait "${UP_PID[i]}" 2>/dev/null || true
done
sleep 0.2
for f in up0 up1 up2 up1b; do
    n=$(awk '/^served/ {print $2}' "$DIR/$f.out")
    echo "upstream $f served ${n:-?}"
    served=$((served + ${n:-0}))
done

received=$(grep -o 'requests=[0-9]*' "$DIR/ringway.err" | cut -d= -f2 | paste -sd+ | bc)
python3 - "$DIR/loadgen.json" "$served" "$received" "$T0" "$T_KILL" "$T_RESTART" "${T_TRAFFIC:-}" "$DIR/ringway.err" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
served, received = int(sys.argv[2]), int(sys.argv[3])
t0, tk, tr = map(float, sys.argv[4:7])
tt = float(sys.argv[7]) if sys.argv[7] else None
e = j["errors"]
failed = sum(e.values())
print(f"loadgen: sent {j['requests']} responses {j['responses']} rate {j['rps']:.0f}/s "
      f"failed {failed} {e} p99 {j['latency_us'].get('p99', '?')} us max {j['latency_us'].get('max', '?')} us")
print(f"ringway received {received}; upstreams served {served}; retried {served - received}")
print(f"killed at {tk - t0:.2f} s, restarted at {tr - t0:.2f} s, "
      + (f"traffic again at {tt - t0:.2f} s ({tt - tr:.2f} s after the restart)" if tt else "no traffic again before the end"))
for line in open(sys.argv[8]):
    ts, _, text = line.partition(" ")
    if "upstream app" in text:
        print(f"  {float(ts) - t0:6.2f} s  {text.strip()}")
PY
echo "files: $DIR"
