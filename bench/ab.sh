#!/usr/bin/env bash
# bench/ab.sh: paired A/B measurements of one Ringway knob, interleaved in the same run, with
# Ringway pinned to CPU 0 and loadgen plus a `loadgen serve` upstream on CPU 1.
#   bench/ab.sh gateway   # a plain route against API-key auth + a (never limiting) rate limit
#   bench/ab.sh ring      # io_uring COOP_TASKRUN|TASKRUN_FLAG (default) against monoio's flags
#   bench/ab.sh defer     # COOP_TASKRUN (default) against DEFER_TASKRUN|SINGLE_ISSUER
# Prints, per run: req/s and Ringway's user and system CPU per request (from /proc/PID/stat).
# Knobs (environment): REPS=3 DURATION=5s CONNS=50 TARGET=target
set -euo pipefail
MODE=${1:?usage: bench/ab.sh gateway|ring|defer}
T=${TARGET:-target}
RW=$T/release/ringway
LG=$T/release/loadgen
REPS=${REPS:-3}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-50}
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
scratch ab
start_upstream 1

cat > "$DIR/ringway.toml" <<TOML
[runtime]
workers = 1
[[listener]]
bind = "127.0.0.1:0"
[upstream.app]
servers = ["$UP"]
max_idle = 1024
[auth.keys]
type = "api_key"
keys = [{ name = "bench", key = "bench-key-0123456789" }]
[[route]]
match = { path_prefix = "/gw" }
upstream = "app"
auth = "keys"
rate_limit = { rate = 100000000, per = "1s", key = "consumer" }
[[route]]
upstream = "app"
TOML

start_ringway() { # ENV...
    env "$@" taskset -c 0 "$RW" --config "$DIR/ringway.toml" > "$DIR/rw.out" 2>&1 &
    RWPID=$!
    PIDS+=($RWPID)
    ADDR=$(wait_line "$DIR/rw.out" "listening on" | awk '{print $4}')
}

measure() { # LABEL URL [loadgen args...]
    local label=$1 url=$2; shift 2
    read -r u0 s0 < <(awk '{print $14, $15}' /proc/$RWPID/stat)
    taskset -c 1 "$LG" -c "$CONNS" -d "$DURATION" --warmup 1s -q --json "$DIR/out.json" "$@" "$url" > /dev/null
    read -r u1 s1 < <(awk '{print $14, $15}' /proc/$RWPID/stat)
    python3 - "$label" "$DIR/out.json" "$u0" "$s0" "$u1" "$s1" <<'PY'
import json, os, sys
label, path, u0, s0, u1, s1 = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
j = json.load(open(path))
tick = os.sysconf("SC_CLK_TCK")
# CPU is counted over warmup + measured window, so divide by every response of both.
reqs = j["responses"] * (1 + 1 / j["duration_s"])
errs = sum(j["errors"].values())
print(f"{label:10s} {j['rps']:10.0f} req/s  user {(u1-u0)/tick/reqs*1e6:5.2f} us/req  "
      f"sys {(s1-s0)/tick/reqs*1e6:5.2f} us/req  p99 {j['latency_us']['p99']:8.0f} us  errors {errs}")
PY
}

case "$MODE" in
gateway)
    start_ringway
    for r in $(seq 1 "$REPS"); do
        measure "plain" "http://$ADDR/plain"
        measure "gateway" "http://$ADDR/gw/x" -H "x-api-key: bench-key-0123456789"
    done
    ;;
ring | defer)
    # The default (COOP_TASKRUN) against monoio's own flags (ring) or DEFER_TASKRUN (defer).
    other=$([ "$MODE" = ring ] && echo plain || echo defer)
    for r in $(seq 1 "$REPS"); do
        for v in coop "$other"; do
            start_ringway RINGWAY_URING="$v"
            measure "$v" "http://$ADDR/plain"
            kill "$RWPID"; wait "$RWPID" 2>/dev/null || true
        done
    done
    ;;
*) echo "usage: bench/ab.sh gateway|ring|defer" >&2; exit 2 ;;
esac
