# bench/lib.sh: helpers the bench shell scripts share (sourced, not run).

# wait_line FILE PATTERN [SECONDS]: prints the first line of FILE matching PATTERN once it
# appears (a process announcing `listening on ADDR`); fails after SECONDS (default 10).
wait_line() {
    local end=$((SECONDS + ${3:-10}))
    until grep -m1 -- "$2" "$1" 2>/dev/null; do
        [ $SECONDS -lt $end ] || { echo "timed out waiting for '$2' in $1" >&2; return 1; }
        sleep 0.02
    done
}

# scratch NAME: a scratch folder in DIR; every PID added to PIDS is killed at exit.
scratch() {
    DIR=$(mktemp -d "/tmp/ringway-$1.XXXXXX")
    PIDS=()
    trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT
    ulimit -n 20000 2>/dev/null || true
}

# start_upstream CPU [ARGS...]: a `loadgen serve` ($LG) with ARGS, pinned to CPU ("-": not
# pinned); its PID goes to PIDS and its address to UP.
start_upstream() {
    local cpu=$1
    shift
    if [ "$cpu" = - ]; then
        "$LG" serve --bind 127.0.0.1:0 "$@" > "$DIR/up.out" 2>&1 &
    else
        taskset -c "$cpu" "$LG" serve --bind 127.0.0.1:0 "$@" > "$DIR/up.out" 2>&1 &
    fi
    PIDS+=($!)
    UP=$(wait_line "$DIR/up.out" "listening on" | awk '{print $3}')
}
