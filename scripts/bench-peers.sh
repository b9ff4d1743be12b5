#!/usr/bin/env bash
# Runs meshrpc and the peers of ../shared/peers (floor, tarpc, Go net/rpc, tonic) on the
# same closed-loop workloads, interleaved, with the order rotated between passes, and
# prints one median table with ratios (also written to target/bench-peers/table.md).
#
# Usage: scripts/bench-peers.sh [SECONDS=5] [PASSES=3]
#   PEERS="meshrpc tarpc ..."  which to run (default: meshrpc floor tarpc gonetrpc tonic);
#                              meshrpc-notel is meshrpc built without metrics and tracing
#                              (--no-default-features), to measure what they cost;
#                              tarpc-1w is tarpc with both processes on one tokio worker
#                              (TOKIO_WORKER_THREADS=1), its best layout on 2 vCPUs
#   CELLS="add:1 add:32 ..."   which workload:C cells (default below)
#   PEERS_DIR=...              the harness (default: ../shared/peers next to this repo)
# C=1 cells pin server and client to the same vCPU (PIN=0:0), as the peers' README asks.
# Needs golang-go and protobuf-compiler for the Go and tonic peers (installed if missing).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SECS="${1:-5}"
PASSES="${2:-3}"
PEERS_DIR="${PEERS_DIR:-$ROOT/../shared/peers}"
read -r -a PEERS <<<"${PEERS:-meshrpc floor tarpc gonetrpc tonic}"
read -r -a CELLS <<<"${CELLS:-add:1 add:32 add:256 echo1k:32 echo1k:256}"
OUT="$ROOT/target/bench-peers"
WARMUP=1
mkdir -p "$OUT"
rm -f "$OUT/raw.txt" "$OUT/cpu.txt" "$OUT/uptime.txt"

[[ -d "$PEERS_DIR" ]] || { echo "error: no peer harness at $PEERS_DIR (set PEERS_DIR)" >&2; exit 1; }
if ! command -v go >/dev/null || ! command -v protoc >/dev/null; then
    echo "installing golang-go and protobuf-compiler for the Go and tonic peers" >&2
    apt-get update -qq && apt-get install -y -qq golang-go protobuf-compiler >/dev/null
fi
command -v taskset >/dev/null && [[ -x /usr/bin/time ]] || {
    echo "error: needs taskset (util-linux) and /usr/bin/time (GNU time)" >&2; exit 1; }

echo "building meshrpc (release) and the peers before measuring anything" >&2
(cd "$ROOT" && cargo build --release --quiet -p meshrpc-cli)
MESHRPC="$ROOT/target/release/meshrpc"
MESHRPC_NOTEL="$ROOT/target/notel/release/meshrpc"
for p in "${PEERS[@]}"; do
    case "$p" in
        meshrpc) ;;
        meshrpc-notel) (cd "$ROOT" && cargo build --release --quiet -p meshrpc-cli --no-default-features --target-dir target/notel) ;;
        *) "$PEERS_DIR/run.sh" "${p%-1w}" add 1 0.2 >/dev/null ;;  # builds the peer if needed
    esac
done

# One meshrpc run, measured like ../shared/peers/run.sh measures a peer.
run_meshrpc() {
    local name=$1 bin=$2 mode=$3 c=$4 tmp spid port line
    local spin=() cpin=()
    if [[ -n "${PIN:-}" ]]; then spin=(taskset -c "${PIN%%:*}"); cpin=(taskset -c "${PIN##*:}"); fi
    tmp=$(mktemp -d)
    "${spin[@]}" "$bin" demo --listen 127.0.0.1:0 --traffic 0 >"$tmp/server.out" 2>"$tmp/server.err" &
    spid=$!
    port=""
    for _ in $(seq 1 200); do
        port=$(sed -n 's/^PORT \([0-9]\+\)$/\1/p' "$tmp/server.out" | head -1)
        [[ -n "$port" ]] && break
        sleep 0.05
    done
    [[ -n "$port" ]] || { cat "$tmp/server.err" >&2; kill "$spid"; echo "meshrpc server did not start" >&2; return 1; }
    read -r _ U1 N1 S1 I1 W1 Q1 SQ1 ST1 _ < /proc/stat
    timeout $((SECS + WARMUP + 30)) /usr/bin/time -f "%e %U %S" -o "$tmp/client.time" \
        "${cpin[@]}" "$bin" bench --addr "127.0.0.1:$port" --workload "$mode" -c "$c" \
        -d "${SECS}s" --warmup "${WARMUP}s" --json >"$tmp/client.json"
    read -r _ U2 N2 S2 I2 W2 Q2 SQ2 ST2 _ < /proc/stat
    read -r _ _ _ _ _ _ _ _ _ _ _ _ _ SU SS _ < <(sed 's/^.*) //; s/^/x x /' "/proc/$spid/stat")
    kill "$spid"; wait "$spid" 2>/dev/null || true
    line=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("peer=%s mode=%s c=%s rps=%.0f p50_us=%.1f p99_us=%.1f p999_us=%.1f errors=%d" % (sys.argv[4], sys.argv[2], sys.argv[3], d["requests_per_sec"], d["p50_us"], d["p99_us"], d["p999_us"], d["errors"]))' "$tmp/client.json" "$mode" "$c" "$name")
    local tck ncpu busy irq tot ce cu cs
    tck=$(getconf CLK_TCK); ncpu=$(nproc)
    busy=$(( (U2+N2+S2+ST2) - (U1+N1+S1+ST1) )); irq=$(( (Q2+SQ2) - (Q1+SQ1) ))
    tot=$(( busy + irq + (I2+W2) - (I1+W1) ))
    read -r ce cu cs < "$tmp/client.time"
    awk -v name="$name" -v m="$mode" -v c="$c" -v su="$SU" -v ss="$SS" -v t="$tck" -v ce="$ce" -v cu="$cu" -v cs="$cs" \
        -v busy="$busy" -v irq="$irq" -v tot="$tot" -v n="$ncpu" 'BEGIN{
        mach = (tot > 0) ? n * busy / tot : 0; irqc = (tot > 0) ? n * irq / tot : 0
        ours = ((su+ss)/t + cu + cs) / ce
        printf "peer=%s mode=%s c=%s server_cpu_s=%.2f client_cpu_s=%.2f client_wall_s=%.2f machine_busy_cores=%.2f softirq_cores=%.2f other_cores=%.2f\n",
            name, m, c, (su+ss)/t, cu+cs, ce, mach + irqc, irqc, mach + irqc - ours }' >> "$OUT/cpu.txt"
    rm -rf "$tmp"
    echo "$line"
}

export PEERS_CPU_LOG="$OUT/cpu.txt"
n=${#PEERS[@]}
k=0
for pass in $(seq 0 $((PASSES - 1))); do
    echo "before pass $pass: $(uptime)" | tee -a "$OUT/uptime.txt" >&2
    for cell in "${CELLS[@]}"; do
        mode=${cell%%:*}; c=${cell##*:}
        pin=""; [[ "$c" == 1 ]] && pin="0:0"
        for i in $(seq 0 $((n - 1))); do
            p="${PEERS[$(( (i + pass + k) % n ))]}"
            if [[ "$p" == meshrpc || "$p" == meshrpc-notel ]]; then
                bin=$MESHRPC; [[ "$p" == meshrpc-notel ]] && bin=$MESHRPC_NOTEL
                line=$(PIN="$pin" run_meshrpc "$p" "$bin" "$mode" "$c") || line="peer=$p mode=$mode c=$c rps=0 p50_us=0 p99_us=0 p999_us=0 errors=RUN_FAILED"
            elif [[ "$p" == *-1w ]]; then
                # The peer on one tokio worker per process, logged under its own name.
                base=${p%-1w}
                line=$(PEERS_CPU_LOG="$OUT/cpu-1w.txt" TOKIO_WORKER_THREADS=1 PIN="$pin" WARMUP=$WARMUP \
                    "$PEERS_DIR/run.sh" "$base" "$mode" "$c" "$SECS") ||
                    line="peer=$base mode=$mode c=$c rps=0 p50_us=0 p99_us=0 p999_us=0 errors=RUN_FAILED"
                line=${line/peer=$base /peer=$p }
                if [[ -f "$OUT/cpu-1w.txt" ]]; then
                    sed "s/peer=$base /peer=$p /" "$OUT/cpu-1w.txt" >> "$OUT/cpu.txt"; rm -f "$OUT/cpu-1w.txt"
                fi
            else
                line=$(PIN="$pin" WARMUP=$WARMUP "$PEERS_DIR/run.sh" "$p" "$mode" "$c" "$SECS") ||
                    line="peer=$p mode=$mode c=$c rps=0 p50_us=0 p99_us=0 p999_us=0 errors=RUN_FAILED"
            fi
            echo "pass=$pass $line" | tee -a "$OUT/raw.txt" >&2
        done
        k=$((k + 1))
    done
    echo "after pass $pass: $(uptime)" | tee -a "$OUT/uptime.txt" >&2
done
python3 "$ROOT/scripts/bench_table.py" "$OUT" "$SECS" "$WARMUP" | tee "$OUT/table.md"
