"""Planning speed of serving plans (issue 6): wall time of `planner.plan` for llama-3.1-70b on 16xH100-SXM
(2 nodes) and qwen3-30b-a3b on 8xH100-SXM under chat SLOs (TTFT 1 s, TPOT 0.1 s), searching tp x pp (pp across
nodes), prefill-first / chunked (512, 2048, 8192) / layered prefill (MoE) and disaggregated xPyD with per-phase
tp. Targets: <= 5 s and <= 10 s wall (graph capture included; for scale, AIConfigurator takes 10.3 s and 49.7 s
here for the same questions over a narrower space).

    python3 benchmarks/bench_serving_plan.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import planner

CASES = (("llama-3.1-70b", "16xH100-SXM", 5.0), ("qwen3-30b-a3b", "8xH100-SXM", 10.0))
SLO = {"ttft": 1.0, "tpot": 0.1}


def main() -> int:
    ok = True
    for model, cluster, target in CASES:
        t0 = time.perf_counter()
        plan = planner.plan(model, cluster, "chat", slo=SLO)
        wall = time.perf_counter() - t0
        s, p, d = plan.data["solver"], plan.data["predicted"], plan.data["decision"]
        ok &= wall <= target
        print(f"{model} on {cluster}, chat, SLO TTFT {SLO['ttft']} s TPOT {SLO['tpot']} s: {wall:.2f} s wall "
              f"(capture and search; target <= {target:.0f} s) {'OK' if wall <= target else 'SLOW'}")
        print(f"    candidates {s['candidates']} (policies {', '.join(s['policies_considered'])}; colocated tp x pp "
              f"{s['layouts_considered']}), goodput searched for {s['candidates_evaluated']}, "
              f"{s['candidates_pruned']} pruned (by bound, or one probe at the incumbent's rate), "
              f"{s['simulations']} simulations")
        print(f"    chosen: {d['serving']['description']} ({p['gpus_used']} GPUs): goodput {p['goodput_rps']:.2f} req/s, "
              f"{p['goodput_per_gpu']:.3f} req/s/GPU; at that rate TTFT mean {p['ttft_s']:.3f} s p90 {p['ttft_p90_s']:.3f} s, "
              f"TPOT mean {p['tpot_s'] * 1e3:.1f} ms p90 {p['tpot_p90_s'] * 1e3:.1f} ms, attainment {p['slo_attainment']:.1%}")
        for alt in plan.data["alternatives"][:3]:
            print(f"    runner-up: {alt['layout']}: {alt['goodput_per_gpu']:.3f} req/s/GPU")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
