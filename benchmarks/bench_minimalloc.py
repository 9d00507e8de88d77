"""Benchmark: the MiniMalloc "challenging" suite (11 accelerator workloads, capacity 1,048,576).

For every instance: buffers, liveness lower bound, capacity, the peak our `pack` reaches, its time
and whether the packing verifies; against two baselines measured in the same run: greedy-by-size
(its peak / capacity) and a plain CP-SAT model (one interval per buffer in time and address,
add_no_overlap_2d only) with a short time limit (did it find a packing?).

    python3 benchmarks/bench_minimalloc.py [--only A,B] [--time-limit 10] [--baseline-time-limit 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ortools.sat.python import cp_model

from passes.buffer_packing import (
    PackingConfig,
    PackingInstance,
    greedy_by_size,
    pack,
    peak_of,
    read_csv,
    verify_packing,
)

SUITE = Path(__file__).resolve().parent / "data" / "minimalloc" / "challenging"


def plain_cpsat(instance: PackingInstance, time_limit_s: float) -> tuple[bool, float]:
    """The baseline model: offsets, one 2D no-overlap, nothing else. Returns (found, seconds)."""
    model = cp_model.CpModel()
    cap = instance.capacity
    # offset[i]: address of buffer i; address/time intervals as in the textbook formulation
    offset = [model.new_int_var(0, cap - b.size, f"o{i}") for i, b in enumerate(instance.buffers)]
    address = [model.new_fixed_size_interval_var(o, b.size, "") for o, b in zip(offset, instance.buffers)]
    lifetime = [model.new_fixed_size_interval_var(b.lower, b.upper - b.lower, "") for b in instance.buffers]
    model.add_no_overlap_2d(lifetime, address)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.num_workers = 2
    solver.parameters.random_seed = 0
    start = time.monotonic()
    status = solver.solve(model)
    return status in (cp_model.OPTIMAL, cp_model.FEASIBLE), time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated instance names, e.g. A,B (default: all)")
    parser.add_argument("--time-limit", type=float, default=10.0, help="seconds for our pack per instance")
    parser.add_argument("--baseline-time-limit", type=float, default=10.0,
                        help="seconds for the plain CP-SAT baseline per instance (0 skips it)")
    parser.add_argument("--suite", type=Path, default=SUITE, help="folder with NAME.CAPACITY.csv files")
    args = parser.parse_args()
    files = sorted(args.suite.glob("*.csv"))
    if args.only:
        wanted = {name.strip() for name in args.only.split(",")}
        files = [f for f in files if f.name.split(".")[0] in wanted]
    if not files:
        print(f"no instances found in {args.suite}", file=sys.stderr)
        return 2
    header = (f"{'inst':4} {'bufs':>5} {'lower bound':>12} {'capacity':>10} {'peak':>10} {'time s':>7} "
              f"{'verified':>8} {'greedy peak/cap':>15} {'plain CP-SAT':>14}")
    print(header)
    print("-" * len(header))
    total, solved = 0.0, 0
    for path in files:
        inst = read_csv(path)
        sol = pack(inst, PackingConfig(time_limit_s=args.time_limit))
        ok = sol.found and not verify_packing(inst, sol.offsets) and sol.peak_bytes <= inst.capacity
        total += sol.solve_time_s
        solved += ok
        greedy_ratio = peak_of(inst, greedy_by_size(inst)) / inst.capacity
        if args.baseline_time_limit > 0:
            found, secs = plain_cpsat(inst, args.baseline_time_limit)
            baseline = f"{'found' if found else 'none'} {secs:5.1f}s"
        else:
            baseline = "skipped"
        peak = f"{sol.peak_bytes:,}" if sol.found else "-"
        print(f"{path.name.split('.')[0]:4} {len(inst.buffers):5d} {sol.lower_bound_bytes:12,} "
              f"{inst.capacity:10,} {peak:>10} {sol.solve_time_s:7.2f} {'yes' if ok else 'NO':>8} "
              f"{greedy_ratio:15.3f} {baseline:>14}", flush=True)
    print(f"packed and verified {solved}/{len(files)}; total pack time {total:.2f} s")
    return 0 if solved == len(files) else 1


if __name__ == "__main__":
    sys.exit(main())
