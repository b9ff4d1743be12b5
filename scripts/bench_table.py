#!/usr/bin/env python3
"""Median table of scripts/bench-peers.sh results, with meshrpc's ratios to each peer.

Usage: bench_table.py OUT_DIR SECONDS WARMUP
Each figure is the median over passes of that figure alone; errors are the max.
CPU µs/call = (server + client CPU seconds) / (rps x (seconds + warm-up)), as the peers'
summarize.py computes it; 'other cores' = machine busy cores minus ours (neighbours).
"""
import os, re, statistics, sys
from collections import defaultdict

out, secs, warm = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
kv = lambda line: dict(re.findall(r"(\w+)=(\S+)", line))
runs, cpu = defaultdict(list), defaultdict(list)
for line in open(os.path.join(out, "raw.txt")):
    d = kv(line)
    runs[(d["peer"], d["mode"], int(d["c"]))].append(d)
if os.path.exists(os.path.join(out, "cpu.txt")):
    for line in open(os.path.join(out, "cpu.txt")):
        d = kv(line)
        cpu[(d["peer"], d["mode"], int(d["c"]))].append(d)

med = statistics.median
names = {"meshrpc": "meshrpc", "meshrpc-notel": "meshrpc without telemetry", "floor": "raw-TCP floor", "tarpc": "tarpc", "tarpc-1w": "tarpc on 1 worker", "gonetrpc": "Go net/rpc", "tonic": "tonic", "volo": "volo"}
peers = [p for p in ["meshrpc", "meshrpc-notel", "floor", "tarpc", "tarpc-1w", "gonetrpc", "tonic", "volo"] if any(k[0] == p for k in runs)]
cells = sorted({(k[1], k[2]) for k in runs}, key=lambda x: (x[1], x[0]))

def m(p, mode, c, key):
    vals = [float(d[key]) for d in runs.get((p, mode, c), []) if d.get("errors") != "RUN_FAILED"]
    return med(vals) if vals else None

def errors(p, mode, c):
    es = [d["errors"] for d in runs.get((p, mode, c), [])]
    return "RUN_FAILED" if "RUN_FAILED" in es else str(max((int(e) for e in es), default=0))

def cpu_us(p, mode, c):
    rs = m(p, mode, c, "rps")
    vals = [(float(d["server_cpu_s"]) + float(d["client_cpu_s"])) for d in cpu.get((p, mode, c), [])]
    if not rs or not vals:
        return None
    return med(vals) / (rs * (secs + warm)) * 1e6

def other(p, mode, c):
    vals = [float(d["other_cores"]) for d in cpu.get((p, mode, c), [])]
    return med(vals) if vals else None

fmt_rps = lambda x: "—" if x is None else (f"{x/1e6:.2f}M" if x >= 1e6 else f"{x/1e3:.1f}k")
fmt = lambda x, f="{:.1f}": "—" if x is None else f.format(x)
passes = max((len(v) for v in runs.values()), default=0)
print(f"Requests/s, medians of {passes} passes of {secs:g} s (+{warm:g} s warm-up); C=1 pinned to one vCPU (PIN=0:0).\n")
others = [p for p in peers if p != "meshrpc"]
print("| workload | C | " + " | ".join(names[p] for p in peers) + " | " + " | ".join(f"÷ {names[p]}" for p in others if p != "floor") + " |")
print("|---|---:|" + "---:|" * (len(peers) + len([p for p in others if p != "floor"])))
for mode, c in cells:
    mine = m("meshrpc", mode, c, "rps")
    row = [fmt_rps(m(p, mode, c, "rps")) for p in peers]
    ratios = []
    for p in others:
        if p == "floor":
            continue
        theirs = m(p, mode, c, "rps")
        ratios.append(f"{mine/theirs:.2f}×" if mine and theirs else "—")
    print(f"| {mode} | {c} | " + " | ".join(row) + " | " + " | ".join(ratios) + " |")

print("\nLatency (µs, medians of passes) and errors (max over passes):\n")
print("| workload | C | peer | p50 | p99 | p99.9 | errors | CPU µs/call | other cores |")
print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
for mode, c in cells:
    for p in peers:
        if (p, mode, c) not in runs:
            continue
        print(f"| {mode} | {c} | {names[p]} | {fmt(m(p, mode, c, 'p50_us'))} | {fmt(m(p, mode, c, 'p99_us'))} | "
              f"{fmt(m(p, mode, c, 'p999_us'))} | {errors(p, mode, c)} | {fmt(cpu_us(p, mode, c), '{:.2f}')} | {fmt(other(p, mode, c), '{:.2f}')} |")

if "tarpc" in peers and "meshrpc" in peers:
    print("\nmeshrpc against tarpc (the targets of the performance issue):\n")
    for mode, c in cells:
        a, b = m("meshrpc", mode, c, "rps"), m("tarpc", mode, c, "rps")
        pa, pb = m("meshrpc", mode, c, "p99_us"), m("tarpc", mode, c, "p99_us")
        p50a, p50b = m("meshrpc", mode, c, "p50_us"), m("tarpc", mode, c, "p50_us")
        if a and b:
            print(f"- {mode} c={c}: {a/b:.2f}× the requests/s; p99 {pa:.0f} µs vs {pb:.0f} µs ({pa/pb:.2f}×); p50 {p50a:.1f} vs {p50b:.1f} µs")

if "meshrpc-notel" in peers and "meshrpc" in peers:
    print("\nWhat metrics and tracing cost (meshrpc as shipped against the same build without them):\n")
    for mode, c in cells:
        a, b = m("meshrpc", mode, c, "rps"), m("meshrpc-notel", mode, c, "rps")
        if a and b:
            print(f"- {mode} c={c}: {a/b:.3f}× the requests/s ({(1 - a/b) * 100:.1f} % fewer)")
