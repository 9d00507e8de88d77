"""The published directions of issue 6, reproduced in simulation and printed as ratios (every baseline
is simulated in the same run, same workload and seed):

1. Layered vs chunked prefill (From Tokens to Layers): qwen3-30b-a3b on 2xH100-SXM, tp 2, ShareGPT
   lengths, Poisson arrivals at several loads. The TBT SLO is what layered prefill achieves (its p90
   max TBT); chunked prefill takes the largest budget that meets it; compare TTFT (ratio < 1: layered
   lowers TTFT).
2. Disaggregation (DistServe): opt-13b on 4xA100-SXM-80GB, TTFT 0.2 s, TPOT 0.1 s, ShareGPT lengths
   with prompt + output <= 2048 (OPT's context); per-GPU goodput of the best xPyD against the best
   colocated vLLM (prefill-first) layout.
3. Chunked vs prefill-first (Sarathi-Serve): llama-3.1-70b on 4xH100-SXM, tp 4, ShareGPT lengths,
   strict TBT SLO; capacity = goodput under (TTFT <= 2 s, max TBT <= SLO).

    python3 benchmarks/bench_serving_directions.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import planner
from cost_models.cluster import parse_cluster
from cost_models.serving.deployment import CostCache, Deployment, simulate
from cost_models.serving.metrics import attainment, capacity_rate, goodput, summarize
from cost_models.serving.policies import Chunked, Disaggregated, Layered, PrefillFirst
from cost_models.serving.workload import Workload, arrivals, read_trace

SHAREGPT = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces" / \
    "sharegpt_8k_filtered_stats_llama2_tokenizer.csv"
N = 1500


def sharegpt(n: int, rate: float, max_total: int | None = None, seed: int = 0) -> Workload:
    t = read_trace(SHAREGPT)
    keep = np.ones(len(t), bool) if max_total is None else (t.prompt_tokens + t.output_tokens <= max_total)
    rng = np.random.default_rng(seed)
    index = rng.choice(np.flatnonzero(keep), size=n, replace=False)
    return Workload(arrivals(n, rate, seed=seed), t.prompt_tokens[index], t.output_tokens[index], "sharegpt")


def layered_vs_chunked() -> None:
    costs = CostCache(planner.capture("qwen3-30b-a3b", seq_len=2048), parse_cluster("2xH100-SXM"))
    w = sharegpt(N, 1.0)
    cap = capacity_rate(costs.get(2, 1), float(w.prompt_tokens.mean()), float(w.output_tokens.mean()))
    print("[1] qwen3-30b-a3b 2xH100 tp2 ShareGPT; TBT SLO = layered prefill's p90 max TBT; chunked takes the "
          "largest budget in {128..2048} meeting it")
    for load in (0.05, 0.15, 0.3, 0.5):
        wl = w.with_rate(load * cap)
        lay_r = simulate(costs, Deployment(Layered(), tp=2), wl)
        lay = summarize(lay_r)
        tbt = lay["max_tbt_p90"]
        best = None
        for budget in (128, 256, 512, 1024, 2048):
            r = simulate(costs, Deployment(Chunked(budget), tp=2), wl)
            if attainment(r, {"tbt": tbt}) >= 0.9:
                best = (budget, summarize(r))
        if best is None:
            smallest = summarize(simulate(costs, Deployment(Chunked(128), tp=2), wl))
            print(f"    {load * cap:5.2f} req/s: layered meets TBT {tbt * 1e3:.1f} ms (p90), which no chunk budget meets "
                  f"(chunked(128) p90 max TBT {smallest['max_tbt_p90'] * 1e3:.1f} ms, TTFT mean "
                  f"{smallest['ttft_mean']:.3f} s vs layered {lay['ttft_mean']:.3f} s)")
            continue
        budget, ch = best
        print(f"    {load * cap:5.2f} req/s, TBT {tbt * 1e3:5.1f} ms: chunked({budget}) TTFT mean {ch['ttft_mean']:.3f} s "
              f"p99 {ch['ttft_p99']:.3f} s, {ch['expert_bytes_per_prompt'] / 1e9:6.1f} expert GB/prompt | layered "
              f"TTFT mean {lay['ttft_mean']:.3f} s p99 {lay['ttft_p99']:.3f} s, "
              f"{lay['expert_bytes_per_prompt'] / 1e9:6.1f} GB/prompt | layered/chunked TTFT mean "
              f"{lay['ttft_mean'] / ch['ttft_mean']:.3f} p99 {lay['ttft_p99'] / ch['ttft_p99']:.3f}")


def _per_gpu_goodput(costs, d: Deployment, w: Workload, slo: dict, hi: float) -> float:
    rate, _ = goodput(lambda r: simulate(costs, d, w.with_rate(r)), slo, rate_hi=hi, steps=8)
    return rate / d.gpus


def disaggregation() -> None:
    costs = CostCache(planner.capture("opt-13b", seq_len=2048), parse_cluster("4xA100-SXM-80GB"))
    slo = {"ttft": 0.2, "tpot": 0.1}
    w = sharegpt(N, 1.0, max_total=2048)
    hi = 4 * capacity_rate(costs.get(1, 1), float(w.prompt_tokens.mean()), float(w.output_tokens.mean()))
    coloc = {f"{4 // tp}x tp{tp} prefill-first": Deployment(PrefillFirst(), tp=tp, replicas=4 // tp) for tp in (1, 2, 4)}
    disagg = {d.describe(): Deployment(d) for d in (
        Disaggregated(1, 1), Disaggregated(2, 1), Disaggregated(1, 2), Disaggregated(3, 1), Disaggregated(1, 3),
        Disaggregated(2, 2), Disaggregated(1, 1, prefill_tp=2), Disaggregated(1, 1, prefill_tp=2, decode_tp=2))}
    results = {name: _per_gpu_goodput(costs, d, w, slo, hi) for name, d in {**coloc, **disagg}.items()}
    best_c = max(coloc, key=results.get)
    best_d = max(disagg, key=results.get)
    print("[2] opt-13b 4xA100-SXM-80GB, TTFT 0.2 s, TPOT 0.1 s, ShareGPT (<= 2048 tokens)")
    for name in (*coloc, *disagg):
        print(f"    {name:<42} per-GPU goodput {results[name]:.3f} req/s/GPU")
    print(f"    best disaggregated / best colocated per-GPU goodput: x{results[best_d] / max(results[best_c], 1e-9):.2f}"
          f" ({best_d} vs {best_c})")


def chunked_vs_prefill_first() -> None:
    costs = CostCache(planner.capture("llama-3.1-70b", seq_len=2048), parse_cluster("4xH100-SXM"))
    w = sharegpt(N, 1.0)
    hi = 2 * capacity_rate(costs.get(4, 1), float(w.prompt_tokens.mean()), float(w.output_tokens.mean()))
    print("[3] llama-3.1-70b 4xH100-SXM tp4, ShareGPT; capacity = goodput under TTFT <= 2 s and max TBT <= SLO")
    for tbt in (0.2, 0.5):
        slo = {"ttft": 2.0, "tbt": tbt}
        base = _per_gpu_goodput(costs, Deployment(PrefillFirst(), tp=4), w, slo, hi) * 4
        ch = {b: _per_gpu_goodput(costs, Deployment(Chunked(b), tp=4), w, slo, hi) * 4 for b in (512, 1024, 2048)}
        b = max(ch, key=ch.get)
        floor = hi / 64
        ratio = f"x{ch[b] / base:.2f}" if base > 0 else f"> x{ch[b] / floor:.1f} (none at >= {floor:.3f})"
        print(f"    TBT SLO {tbt} s: prefill-first {base:.3f} req/s, chunked(budget={b}) {ch[b]:.3f} req/s -> "
              f"capacity {ratio}")


def main() -> None:
    for fn in (layered_vs_chunked, disaggregation, chunked_vs_prefill_first):
        t0 = time.perf_counter()
        fn()
        print(f"    ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
