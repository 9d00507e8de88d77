"""Serving-simulator speed: the 19,366 requests of splitwise_conv on llama-3.1-70b, tp 4 on
4xH100-SXM, chunked prefill (budget 512), with their recorded arrival times.

Target (issue 6): <= 2 s. Baseline measured in the same run: the same simulator stepping every
decode iteration one at a time (no closed-form fast-forward), which must agree on every request's
times. For scale only (not measured here): Vidur takes 31 s for this trace and setup.

    python3 benchmarks/bench_serving_sim.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import planner
from cost_models.cluster import parse_cluster
from cost_models.serving.deployment import CostCache
from cost_models.serving.metrics import summarize
from cost_models.serving.policies import Chunked
from cost_models.serving.simulator import simulate_instance
from cost_models.serving.workload import read_trace

TRACE = Path(__file__).resolve().parent / "data" / "traces" / "splitwise_conv.csv"


def main() -> None:
    t0 = time.perf_counter()
    graph = planner.capture("llama-3.1-70b", seq_len=2048)
    costs = CostCache(graph, parse_cluster("4xH100-SXM"))
    w = read_trace(TRACE)
    cost = costs.get(4, 1)
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = simulate_instance(cost, Chunked(512), w)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    slow = simulate_instance(cost, Chunked(512), w, fast_forward=False)
    t_slow = time.perf_counter() - t0
    same = np.allclose(fast.finish_s, slow.finish_s, rtol=1e-9) and np.allclose(fast.first_token_s, slow.first_token_s)
    s = summarize(fast)
    print(f"requests: {len(w)}  (setup: capture + cost tables {setup:.2f} s)")
    print(f"simulated in {t_fast:.3f} s (target <= 2 s: {'PASS' if t_fast <= 2 else 'FAIL'}); "
          f"{fast.iterations} iterations, {fast.iterations / t_fast / 1e3:.0f}k iterations/s")
    print(f"baseline, one decode iteration at a time: {t_slow:.3f} s  -> speedup x{t_slow / t_fast:.1f}; "
          f"identical per-request times: {same}")
    print(f"for scale (not measured here): Vidur 31 s -> x{31 / t_fast:.0f}")
    print(f"TTFT mean {s['ttft_mean']:.3f} s p99 {s['ttft_p99']:.3f} s; TPOT mean {s['tpot_mean'] * 1e3:.1f} ms "
          f"p99 {s['tpot_p99'] * 1e3:.1f} ms; {s['output_tokens_per_s']:.0f} output tok/s; "
          f"energy {s['energy_per_token_j']:.2f} J/token; preemptions {s['preemptions']}")


if __name__ == "__main__":
    main()
