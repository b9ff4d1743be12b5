#!/usr/bin/env bash
# Instructions per Calculator.Add call on the server, counted by valgrind's callgrind:
# repeatable whatever else the machine does, so later changes can be compared without noise.
# Runs the server under callgrind twice, for N and 2N calls from an ordinary client, and
# reports (I(2N) - I(N)) / N, so start-up and shutdown cancel out.
# Usage: scripts/callgrind.sh [N=20000] [C=32]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
N="${1:-20000}"; C="${2:-32}"
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
(cd "$ROOT" && cargo build --release --quiet -p meshrpc-cli)
BIN="$ROOT/target/release/meshrpc"
OUT="$ROOT/target/callgrind"; mkdir -p "$OUT"

server_instructions() {
    local calls=$1 tmp spid port
    tmp=$(mktemp -d)
    valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.$calls.out" \
        "$BIN" demo --listen 127.0.0.1:0 --traffic 0 >"$tmp/out" 2>"$tmp/err" &
    spid=$!
    for _ in $(seq 1 600); do
        port=$(sed -n 's/^PORT \([0-9]\+\)$/\1/p' "$tmp/out" | head -1)
        [[ -n "$port" ]] && break
        sleep 0.1
    done
    [[ -n "${port:-}" ]] || { cat "$tmp/err" >&2; echo "server under valgrind did not start" >&2; exit 1; }
    "$BIN" bench --addr "127.0.0.1:$port" --workload add -c "$C" --calls "$calls" --warmup 0s --timeout 60s --json >&2
    kill -INT "$spid"; wait "$spid" || true
    sed -n 's/.*Collected : \([0-9]\+\).*/\1/p' "$tmp/err" | tail -1
    rm -rf "$tmp"
}

i1=$(server_instructions "$N")
i2=$(server_instructions $((2 * N)))
awk -v a="$i1" -v b="$i2" -v n="$N" -v c="$C" 'BEGIN{
    printf "server instructions per Calculator.Add call (callgrind, c=%d): %.0f  (I(%d)=%d, I(%d)=%d)\n", c, (b-a)/n, n, a, 2*n, b }'
