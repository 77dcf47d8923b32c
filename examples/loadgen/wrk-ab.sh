#!/usr/bin/env bash
# A/B of gateway binaries as separate processes, driven by wrk (BENCHMARKS.md §11).
#
#   examples/loadgen/wrk-ab.sh [-r ROUNDS] [-d SECONDS] [-e VAR=VALUE]... NAME=GATEWAY_BINARY...
#
# Each round runs every binary in turn (so a change in the machine's load hits all of them
# alike) against one `mock_upstream` that answers at once, and prints one line per binary:
# forward throughput (`Cache-Control: no-store`) at c=1 and c=64, cache-hit throughput at c=64
# (one prompt, stored by the first request), and the gateway's peak RSS. `-e` sets an
# environment variable for every gateway (RUST_LOG=warn, say); standard output goes to
# /dev/null. Needs wrk (Debian: `apt-get install wrk`) and a release build of the examples:
#
#   cargo build --release --example gateway --example mock_upstream
#   examples/loadgen/wrk-ab.sh -r 3 main=target/release/examples/gateway new=/tmp/gateway-new
#
# Loopback only, on free ports (common.sh).
set -euo pipefail

rounds=3
seconds=8
envs=()
while getopts "r:d:e:" opt; do
    case $opt in
        r) rounds=$OPTARG ;;
        d) seconds=$OPTARG ;;
        e) envs+=("$OPTARG") ;;
        *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
if [ $# -eq 0 ]; then
    echo "usage: $0 [-r ROUNDS] [-d SECONDS] [-e VAR=VALUE]... NAME=GATEWAY_BINARY..." >&2
    exit 2
fi
source "$(dirname "$0")/common.sh"
need wrk

# Requests per second from a wrk run; errors and non-2xx answers fail the run.
rate() {
    local out
    out=$(wrk "$@")
    if grep -q "Non-2xx\|Socket errors" <<<"$out"; then
        echo "wrk reported errors: $out" >&2
        exit 1
    fi
    awk '/Requests\/sec/ {print $2}' <<<"$out"
}

for round in $(seq "$rounds"); do
    for pair in "$@"; do
        name=${pair%%=*}
        bin=${pair#*=}
        addr=127.0.0.1:$(free_port)
        env "${envs[@]}" HOLYSHEEP_API_KEY=sk-ab "$bin" --listen "$addr" --upstream "http://$mock_addr/v1" \
            >/dev/null 2>"$work/gw.err" &
        gw=$!
        pids+=("$gw")
        wait_healthy "$addr" "$gw" "$work/gw.err"
        url="http://$addr/v1/chat/completions"
        f1=$(rate -t1 -c1 -d"${seconds}s" -s "$work/post.lua" -H "Cache-Control: no-store" "$url")
        f64=$(rate -t1 -c64 -d"${seconds}s" -s "$work/post.lua" -H "Cache-Control: no-store" "$url")
        h64=$(rate -t1 -c64 -d"${seconds}s" -s "$work/post.lua" "$url")
        rss=$(awk '/VmHWM/ {print $2}' "/proc/$gw/status")
        kill "$gw"
        wait "$gw" 2>/dev/null || true
        load=$(cut -d' ' -f1 /proc/loadavg)
        echo "round $round $name forward_c1 $f1 forward_c64 $f64 hit_c64 $h64 peak_rss_kB $rss load $load"
    done
done
