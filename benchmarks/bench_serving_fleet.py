"""Mixed-GPU serving fleet at minimum cost (Melange-style, CP-SAT): llama-3-8b, chat lengths, SLO TTFT 0.5 s,
TPOT 0.1 s, GPU types H100-SXM, A100-SXM-80GB and L4 at their spec prices. Profiles every (type, tp) and size
bucket once by simulation, then solves at several rates; prints the chosen mix, its $/h against the cheapest
single-type fleet solved in the same run (the same CP-SAT restricted to one type), and the solve times.

    python3 benchmarks/bench_serving_fleet.py
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import planner
from passes.fleet_strategy import fleet_instance
from passes.serving_fleet import FleetConfig, restrict, solve_fleet

MODEL, SPEC, WORKLOAD = "llama-3-8b", "H100-SXM,A100-SXM-80GB,L4", "chat"
SLO = {"ttft": 0.5, "tpot": 0.1}
RATES = (5, 15, 30, 60, 120)


def main() -> None:
    t0 = time.perf_counter()
    inst, _, buckets, profiler = fleet_instance(planner.capture(MODEL), SPEC, WORKLOAD, 1.0, SLO)
    print(f"{MODEL} {WORKLOAD} SLO {SLO} on {SPEC}: profiled {len(inst.configs)} configurations x {len(buckets)} "
          f"buckets with {profiler.simulations} simulations in {time.perf_counter() - t0:.1f} s")
    for rate in RATES:
        scaled = dataclasses.replace(inst, bucket_rate=tuple(rate * r for r in inst.bucket_rate))
        sol = solve_fleet(scaled, FleetConfig())
        per_type = {g: solve_fleet(restrict(scaled, g), FleetConfig()) for g in dict.fromkeys(inst.gpu_type)}
        feasible = {g: s.cost_milli for g, s in per_type.items() if s.cost_milli is not None}
        best = min(feasible, key=lambda g: (feasible[g], g))
        mix = " + ".join(f"{n} x {inst.configs[c]}" for c, n in enumerate(sol.counts) if n)
        print(f"  {rate:4d} req/s: {mix:<44} ${sol.cost_milli / 1000:7.3f}/h ({sol.status}, solve "
              f"{sol.solve_time_s * 1e3:.0f} ms) | cheapest single type {best} ${feasible[best] / 1000:7.3f}/h "
              f"-> mix/single x{sol.cost_milli / feasible[best]:.3f}")


if __name__ == "__main__":
    main()
