# What wrk-ab.sh and instructions.sh share: sourced, not run. Sets `here` (the repository),
# `work` (a temporary folder, removed on exit with every process in `pids`), writes the request
# both send to `$work/post.lua` (wrk's script) and `body`, and starts one `mock_upstream`
# (`MOCK_BIN`, default the release example) at `mock_addr`. Loopback only, on free ports.

# Exits with a message unless every named tool is installed.
need() {
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "$tool is not installed (Debian: apt-get install $tool)" >&2; exit 2; }
    done
}
need python3 curl

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until the gateway at $1 (pid $2) answers /healthz; exits with $3's text if it never does.
wait_healthy() {
    for _ in $(seq 300); do
        curl -fs "http://$1/healthz" >/dev/null 2>&1 && return
        kill -0 "$2" 2>/dev/null || break
        sleep 0.2
    done
    echo "the gateway at $1 did not start:" >&2
    cat "$3" >&2
    exit 1
}

body='{"model":"gpt-4.1","messages":[{"role":"user","content":"How do I reset my password?"}]}'
cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '$body'
LUA

mock_addr=127.0.0.1:$(free_port)
"${MOCK_BIN:-$here/target/release/examples/mock_upstream}" --listen "$mock_addr" >/dev/null 2>&1 &
pids+=($!)
