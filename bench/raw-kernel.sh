#!/usr/bin/env bash
# bench/raw-kernel.sh: what io_uring features would save in the kernel's share of a relayed
# request. Runs `loadgen raw-relay` (the relay with no runtime) once per variant, all on CPU 0,
# and measures them in turn against one `loadgen serve` upstream, loadgen on CPU 1.
#   bench/raw-kernel.sh                       # plain, detached-send, multishot, fixed-files, poll-first
#   bench/raw-kernel.sh plain multishot       # variants: plain, or --kernel lists (a,b)
# Prints, per run: req/s and the relay's user, system and total CPU per request (/proc/PID/stat),
# then the mean of each variant. Knobs (environment): REPS=4 DURATION=5s CONNS=200 TARGET=target
set -euo pipefail
T=${TARGET:-target}
LG=$T/release/loadgen
REPS=${REPS:-4}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-200}
VARIANTS=("$@")
[ ${#VARIANTS[@]} -gt 0 ] || VARIANTS=(plain detached-send multishot fixed-files poll-first)
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
scratch raw-kernel
start_upstream 1

RELAY_PID=()
RELAY_ADDR=()
for i in "${!VARIANTS[@]}"; do
    v=${VARIANTS[$i]}
    args=()
    [ "$v" = plain ] || args=(--kernel "$v")
    "$LG" raw-relay --upstream "$UP" --cpus 0 "${args[@]}" > "$DIR/relay$i.out" 2>&1 &
    RELAY_PID[i]=$!
    PIDS+=($!)
    RELAY_ADDR[i]=$(wait_line "$DIR/relay$i.out" "listening on" | awk '{print $NF}')
done

for _ in $(seq 1 "$REPS"); do
    for i in "${!VARIANTS[@]}"; do
        pid=${RELAY_PID[$i]}
        read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
        taskset -c 1 "$LG" -c "$CONNS" -d "$DURATION" --warmup 1s -q --json "$DIR/out.json" \
            "http://${RELAY_ADDR[$i]}/" > /dev/null
        read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
        python3 - "${VARIANTS[$i]}" "$DIR/out.json" "$u0" "$s0" "$u1" "$s1" <<'PY'
import json, os, sys
label, path, u0, s0, u1, s1 = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
j = json.load(open(path))
tick = os.sysconf("SC_CLK_TCK")
# CPU is counted over warmup + measured window, so divide by every response of both.
reqs = j["responses"] * (1 + 1 / j["duration_s"])
user, sys_ = (u1 - u0) / tick / reqs * 1e6, (s1 - s0) / tick / reqs * 1e6
errs = sum(j["errors"].values())
print(f"{label:28s} {j['rps']:9.0f} req/s  user {user:5.2f}  sys {sys_:5.2f}  "
      f"total {user + sys_:5.2f} us/req  errors {errs}", flush=True)
PY
    done
done | tee "$DIR/runs.txt"
echo "mean over $REPS runs, $CONNS connections:"
awk '{u[$1] += $5; s[$1] += $7; t[$1] += $9; n[$1]++}
     END {for (k in n) printf "  %-28s user %.3f  sys %.3f  total %.3f us/req\n", k, u[k]/n[k], s[k]/n[k], t[k]/n[k]}' \
    "$DIR/runs.txt" | sort
