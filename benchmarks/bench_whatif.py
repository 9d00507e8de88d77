"""What-if sweep speed: 100 planned points of llama-3.1-70b chat serving
(5 GPU types x 4 counts x 5 request rates), target <= 60 s on this 2-core machine.

Prints the wall time, points per second, how many points were feasible, and the per-point time of
a plain sequential loop over the first 10 points (the baseline, measured in the same run), so the
gain from parallel workers and the graph cache is visible.

    python3 benchmarks/bench_whatif.py [--jobs 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner.whatif import what_if

GPUS = ("H100-SXM", "A100-SXM-80GB", "H200-SXM", "L40S", "MI300X")
COUNTS = (2, 4, 8, 16)
RATES = [0.5, 1.0, 2.0, 4.0, 8.0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    clusters = [f"{n}x{gpu}" for gpu in GPUS for n in COUNTS]
    started = time.perf_counter()
    base = what_if("llama-3.1-70b", clusters[:2], workload="chat", vary={"rate": RATES}, jobs=1)
    baseline = (time.perf_counter() - started) / len(base)
    started = time.perf_counter()
    records = what_if("llama-3.1-70b", clusters, workload="chat", vary={"rate": RATES}, jobs=args.jobs)
    took = time.perf_counter() - started
    ok = sum(1 for r in records if r["ok"])
    print(f"points: {len(records)} ({len(GPUS)} GPU types x {len(COUNTS)} counts x {len(RATES)} rates), "
          f"feasible: {ok}, jobs: {args.jobs}")
    print(f"sweep wall time: {took:.1f} s (target <= 60 s) {'ok' if took <= 60 else 'MISS'}; "
          f"{len(records) / took:.2f} points/s")
    print(f"sequential baseline: {baseline:.2f} s per point -> {baseline * len(records):.1f} s for the sweep; "
          f"speed-up {baseline * len(records) / took:.2f}x")
    best = {}
    for r in records:
        devices = r.get("devices") or r.get("gpus_used")
        if r["ok"] and r.get("output_tokens_per_s") and devices:
            per_gpu = r["output_tokens_per_s"] / devices
            if per_gpu > best.get(r["cluster"], (0, None))[0]:
                best[r["cluster"]] = (per_gpu, r.get("layout"))
    for cluster, (per_gpu, layout) in sorted(best.items(), key=lambda kv: -kv[1][0])[:5]:
        print(f"  {cluster:18} {per_gpu:9.1f} output tokens/s per GPU  {layout}")


if __name__ == "__main__":
    main()
