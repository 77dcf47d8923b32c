#!/usr/bin/env bash
# Instructions per request of gateway binaries, counted by valgrind's callgrind (BENCHMARKS.md §11).
#
#   examples/loadgen/instructions.sh [-d SECONDS] NAME=GATEWAY_BINARY...
#
# Wall-clock rates on a shared 2-core machine move by ±20 % between runs; instruction counts do
# not, so this is the A/B for a change too small to see in `wrk-ab.sh`. For each binary it runs
# the gateway under callgrind three times in front of one `mock_upstream` that answers at once:
# started and stopped with no request (the baseline), then `wrk -c1` for SECONDS on the forward
# path (`Cache-Control: no-store`), then on cache hits (one prompt, stored by a first request);
# and prints the user-space instructions (callgrind's `Ir`) per request over the baseline. The
# kernel's share (system calls, wake-ups) is not counted: `perf` shows it (§11). Needs valgrind
# and wrk (Debian: `apt-get install valgrind wrk`) and
#
#   cargo build --release --example gateway --example mock_upstream
#
# Loopback only, on free ports (common.sh).
set -euo pipefail

seconds=10
while getopts "d:" opt; do
    case $opt in
        d) seconds=$OPTARG ;;
        *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
if [ $# -eq 0 ]; then
    echo "usage: $0 [-d SECONDS] NAME=GATEWAY_BINARY..." >&2
    exit 2
fi
source "$(dirname "$0")/common.sh"
need valgrind wrk

# Runs BINARY under callgrind with MODE (idle, forward, hit); prints "requests instructions".
run() {
    local bin=$1 mode=$2 addr out gw n=0
    addr=127.0.0.1:$(free_port)
    out=$work/callgrind.$mode
    HOLYSHEEP_API_KEY=sk-instructions valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$bin" --listen "$addr" --upstream "http://$mock_addr/v1" >/dev/null 2>"$work/valgrind.err" &
    gw=$!
    pids+=("$gw")
    wait_healthy "$addr" "$gw" "$work/valgrind.err"
    local url=http://$addr/v1/chat/completions
    case $mode in
        forward)
            n=$(wrk -t1 -c1 -d"${seconds}s" -s "$work/post.lua" -H "Cache-Control: no-store" "$url" |
                awk '/requests in/ {print $1}') ;;
        hit)
            curl -fs -XPOST -H 'Content-Type: application/json' -d "$body" "$url" >/dev/null
            sleep 0.5
            n=$(wrk -t1 -c1 -d"${seconds}s" -s "$work/post.lua" "$url" | awk '/requests in/ {print $1}') ;;
    esac
    kill -TERM "$gw"
    wait "$gw" 2>/dev/null || true
    echo "$n $(awk '/^(summary|totals):/ {print $2; exit}' "$out")"
}

for pair in "$@"; do
    name=${pair%%=*}
    bin=${pair#*=}
    read -r _ idle < <(run "$bin" idle)
    for mode in forward hit; do
        read -r n total < <(run "$bin" "$mode")
        if [ "${n:-0}" -eq 0 ]; then
            echo "$name $mode: no request was answered" >&2
            exit 1
        fi
        echo "$name $mode requests $n instructions_per_request $(((total - idle) / n))"
    done
done
