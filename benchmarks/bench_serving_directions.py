"""The published directions of issue 6, reproduced in simulation and printed as ratios (every baseline
is simulated in the same run, same workload and seed):

1a. Layered prefill in its paper's own setup (From Tokens to Layers, the authors' repository): qwen3-30b-a3b
   on 2xH100-SXM, tp 2, their arXiv requests at 1.5 req/s (and 1.0, 2.0), chunked(512) against layered (16 groups,
   8192 tokens), against the authors' measured means (benchmarks/data/README.md).
1. Layered vs chunked prefill (From Tokens to Layers): qwen3-30b-a3b on 2xH100-SXM, tp 2, ShareGPT
   lengths, Poisson arrivals at several loads. One TBT SLO for both: layered prefill's p90 max TBT, and
   (policy-neutral) chunked(512)'s; chunked prefill takes the largest budget that meets it; compare TTFT
   at every load (ratio < 1: layered lowers TTFT).
2. Disaggregation (DistServe): opt-13b on 4xA100-SXM-80GB, TTFT 0.2 s, TPOT 0.1 s. First the simulator
   replays DistServe's published measured runs (vLLM v0.2 and DistServe on the same 300 ShareGPT requests)
   with the engines' published iteration profiles: mean TTFT/TPOT, and per request the SLO attainment and
   SLO scale; then disaggregation against colocated vLLM (prefill-first) in the paper's configurations
   (attainment and SLO scale by per-GPU rate, per-GPU goodput) and best layout against best layout as the
   TPOT SLO tightens (each engine's own profile, and the same kernels for both), both on DistServe's
   requests resampled with Poisson arrivals; best against best on our ShareGPT trace (prompt + output <=
   2048, OPT's context); and what `planner plan` picks by TPOT SLO when colocated and disaggregated
   deployments each run on their own engine (vLLM v0.2, DistServe).
2b. Disaggregation for OPT-66B in DistServe's own ablation setting (ShareGPT, TTFT 0.4 s, TPOT 0.1 s): best
   disaggregated placement against best colocated parallelism on one 8x A100 node, our cost model for both.
3. Chunked vs prefill-first (Sarathi-Serve): llama-3.1-70b on 4xH100-SXM, tp 4, ShareGPT lengths,
   strict TBT SLO; capacity = goodput under (TTFT <= 2 s, max TBT <= SLO).

    python3 benchmarks/bench_serving_directions.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import planner
from cost_models.cluster import parse_cluster
from cost_models.serving.deployment import CostCache, Deployment, simulate
from cost_models.serving.engine_profile import load_engine_profile
from cost_models.serving.metrics import attainment, capacity_rate, goodput, measured_result, slo_scale, summarize
from cost_models.serving.policies import Chunked, Disaggregated, Layered, PrefillFirst
from cost_models.serving.trace_files import write_trace
from cost_models.serving.workload import Workload, arrivals, read_trace

SHAREGPT = Path(__file__).resolve().parent / "data" / "traces" / "sharegpt_8k_filtered_stats_llama2_tokenizer.csv"
ARXIV = Path(__file__).resolve().parent / "data" / "arxiv_summarization_lengths.csv"
# The layered-prefill authors' measured comparison (github.com/scale-snu/layered-prefill README, "VS. vLLM
# (v0.10.2)"): Qwen3-30B-A3B, 2x H100 80GB, tp 2, max model length 16384, 100 arXiv prompts at 1.5 req/s;
# vLLM chunked prefill (512 tokens per iteration, 256 sequences) against layered prefill (8192 tokens,
# 16 layer groups). Mean TTFT / TPOT / end-to-end latency in ms.
PAPER_MEASURED = {"chunked": (1018.75, 19.71, 4904.02), "layered": (712.84, 15.09, 3525.08)}
PAPER_CLAIMS = "TTFT -70%, end-to-end latency -41%, energy per token -22% (best cases of the paper)"
N = 1500


def sharegpt(n: int, rate: float, max_total: int | None = None, seed: int = 0) -> Workload:
    t = read_trace(SHAREGPT)
    keep = np.ones(len(t), bool) if max_total is None else (t.prompt_tokens + t.output_tokens <= max_total)
    rng = np.random.default_rng(seed)
    index = rng.choice(np.flatnonzero(keep), size=n, replace=False)
    return Workload(arrivals(n, rate, seed=seed), t.prompt_tokens[index], t.output_tokens[index], "sharegpt")


BUDGETS = (128, 256, 512, 1024, 2048, 4096)
# vLLM's default token budget once chunked prefill is on (max_num_batched_tokens = 512 in vLLM 0.4-0.6's
# SchedulerConfig); its p90 max TBT is the second, policy-neutral SLO of section [1].
VLLM_CHUNK_DEFAULT = 512


def _chunked_best(costs, wl: Workload, tbt: float) -> tuple[int, dict] | None:
    """Largest chunk budget whose p90 max TBT meets `tbt` (90% attainment of the TBT SLO), with its summary."""
    best = None
    for budget in BUDGETS:
        r = simulate(costs, Deployment(Chunked(budget), tp=2), wl)
        if attainment(r, {"tbt": tbt}) >= 0.9:
            best = (budget, summarize(r))
    return best


def _arxiv(n: int, rate: float, seed: int, max_total: int = 16384) -> Workload:
    """The paper's arXiv requests in file order (those within the 16384-token context), Poisson at `rate`."""
    rows = np.loadtxt(ARXIV, delimiter=",", skiprows=1, dtype=np.int64)
    rows = rows[rows.sum(axis=1) <= max_total][:n]
    return Workload(arrivals(len(rows), rate, seed=seed), rows[:, 0], rows[:, 1], "arxiv")


def _latency_summary(r) -> tuple[float, float, float, float]:
    """Mean TTFT, TPOT, end-to-end latency (ms) and energy per prompt + output token (J) of a run."""
    m = summarize(r)
    w = r.workload
    e2e = float(np.nanmean(r.finish_s - w.arrival_s))
    energy = m["energy_per_token_j"] * float(w.output_tokens.sum()) / float(w.prompt_tokens.sum() + w.output_tokens.sum())
    return m["ttft_mean"] * 1e3, m["tpot_mean"] * 1e3, e2e * 1e3, energy


def layered_in_its_own_setup() -> None:
    """The layered-prefill paper's own setup (module constants), against the authors' measurements."""
    costs = CostCache(planner.capture("qwen3-30b-a3b", seq_len=2048), parse_cluster("2xH100-SXM"))
    policies = {"chunked": Chunked(512, max_num_seqs=256), "layered": Layered(16, max_prefill_tokens=8192,
                                                                             max_num_seqs=256)}
    print(f"[1a] layered prefill in its paper's setup: qwen3-30b-a3b 2xH100 tp2, arXiv requests (<= 16384 tokens), "
          f"chunked(512) vs layered(G=16, 8192 tokens); paper claims {PAPER_CLAIMS}")
    for rate in (1.5, 1.0, 2.0):
        runs = {name: [_latency_summary(simulate(costs, Deployment(pol, tp=2), _arxiv(100, rate, seed)))
                       for seed in range(5)] for name, pol in policies.items()}
        means = {name: np.mean(np.array(v), axis=0) for name, v in runs.items()}
        c, lay = means["chunked"], means["layered"]
        line = (f"    {rate:3.1f} req/s, 100 prompts, mean of 5 arrival seeds: simulated chunked TTFT {c[0]:7.1f} TPOT "
                f"{c[1]:5.1f} E2E {c[2]:7.1f} ms, layered {lay[0]:7.1f} / {lay[1]:5.1f} / {lay[2]:7.1f} ms -> layered/chunked "
                f"TTFT x{lay[0] / c[0]:.2f} TPOT x{lay[1] / c[1]:.2f} E2E x{lay[2] / c[2]:.2f} energy/token x{lay[3] / c[3]:.2f}")
        print(line)
        if rate == 1.5:
            mc, ml = PAPER_MEASURED["chunked"], PAPER_MEASURED["layered"]
            print(f"      measured (authors, vLLM v0.10.2 vs layered): chunked {mc[0]:.1f} / {mc[1]:.1f} / {mc[2]:.1f} ms, "
                  f"layered {ml[0]:.1f} / {ml[1]:.1f} / {ml[2]:.1f} ms -> TTFT x{ml[0] / mc[0]:.2f} TPOT x{ml[1] / mc[1]:.2f} "
                  f"E2E x{ml[2] / mc[2]:.2f}; simulated/measured: chunked TTFT {c[0] / mc[0]:.2f} TPOT {c[1] / mc[1]:.2f} "
                  f"E2E {c[2] / mc[2]:.2f}, layered TTFT {lay[0] / ml[0]:.2f} TPOT {lay[1] / ml[1]:.2f} E2E {lay[2] / ml[2]:.2f}")


def layered_vs_chunked() -> None:
    costs = CostCache(planner.capture("qwen3-30b-a3b", seq_len=2048), parse_cluster("2xH100-SXM"))
    w = sharegpt(N, 1.0)
    cap = capacity_rate(costs.get(2, 1), float(w.prompt_tokens.mean()), float(w.output_tokens.mean()))
    print("[1] qwen3-30b-a3b 2xH100 tp2 ShareGPT; one TBT SLO for both policies (90% of requests' max TBT within it); "
          f"chunked takes the largest budget in {BUDGETS} meeting it. SLO 'L' = layered's p90 max TBT, "
          f"SLO 'C' = chunked({VLLM_CHUNK_DEFAULT})'s (vLLM's default budget)")
    for load in (0.05, 0.15, 0.3, 0.5, 0.7):
        wl = w.with_rate(load * cap)
        lay_r = simulate(costs, Deployment(Layered(), tp=2), wl)
        lay = summarize(lay_r)
        slos = {"L": lay["max_tbt_p90"],
                "C": summarize(simulate(costs, Deployment(Chunked(VLLM_CHUNK_DEFAULT), tp=2), wl))["max_tbt_p90"]}
        for tag, tbt in slos.items():
            lay_ok = attainment(lay_r, {"tbt": tbt})
            best = _chunked_best(costs, wl, tbt)
            head = f"    {load * cap:5.2f} req/s SLO {tag} TBT {tbt * 1e3:5.1f} ms:"
            lay_text = (f"layered TTFT mean {lay['ttft_mean']:.3f} s p99 {lay['ttft_p99']:.3f} s "
                        f"({lay['expert_bytes_per_prompt'] / 1e9:.0f} expert GB/prompt, TBT attainment {lay_ok:.2f})")
            if best is None:
                print(f"{head} no chunk budget meets it; {lay_text} -> layered/chunked TTFT ratio < any (chunked infeasible)")
                continue
            budget, ch = best
            print(f"{head} chunked({budget}) TTFT mean {ch['ttft_mean']:.3f} s p99 {ch['ttft_p99']:.3f} s "
                  f"({ch['expert_bytes_per_prompt'] / 1e9:.0f} GB/prompt) | {lay_text} | layered/chunked TTFT mean "
                  f"{lay['ttft_mean'] / ch['ttft_mean']:.3f} p99 {lay['ttft_p99'] / ch['ttft_p99']:.3f}"
                  + ("" if lay_ok >= 0.9 else "  (layered misses this SLO)"))
    print("    where layered loses (ratio > 1): at these loads the running decode batch (tens of requests, 8 of 128 experts\n"
          "    each) already touches nearly every expert per layer, so a chunk re-reads almost nothing extra (see the\n"
          "    near-equal expert GB/prompt); layered's whole-prompt rounds then make each prompt wait for all G group\n"
          "    iterations of its round, while chunked admits new prompts every iteration.")


def _per_gpu_goodput(costs, d: Deployment, w: Workload, slo: dict, hi: float) -> float:
    rate, _ = goodput(lambda r: simulate(costs, d, w.with_rate(r)), slo, rate_hi=hi, steps=8)
    return rate / d.gpus


# The paper's baseline and DistServe's own engine limits, from DistServe's artifact
# (LLMServe/DistServe evaluation/2-benchmark-serving/2-start-api-server.py): vLLM runs OPT-13B at tp 1 with
# --max-num-batched-tokens 16384 --max-num-seqs 1024; DistServe places OPT-13B as prefill tp 2 + decode tp 1.
VLLM_V02 = PrefillFirst(max_batched_tokens=16384, max_num_seqs=1024)
PAPER_DISAGG = Disaggregated(1, 1, prefill_tp=2)
# The measured run replayed below (benchmarks/data/README.md) and the summaries (mean TTFT ms, mean TPOT ms)
# of DistServe's other measured runs of the same requests (the first n, arrivals scaled by the rate), from
# simdistserve/benchmarks/alignment/data-ground-truth/opt-13b-sharegpt/: vllm-{n}-{rate}.exp (vLLM v0.2, tp 1)
# and distserve-c21d11-300-{rate}.exp (DistServe, prefill tp 2 + decode tp 1).
DATA = Path(__file__).resolve().parent / "data"
MEASURED_RUN = DATA / "distserve_opt13b_sharegpt_vllm_3rps.csv"
VLLM_MEASURED = {(100, 1.0): (161.20, 34.25), (200, 2.0): (203.93, 65.26), (250, 2.5): (177.03, 65.48),
                 (300, 3.0): (461.58, 99.86)}
DISTSERVE_MEASURED = {(300, 3.0): (91.95, 38.35), (300, 6.0): (107.60, 57.44), (300, 9.0): (148.12, 168.28)}
VLLM_FIT_RUN, DISTSERVE_FIT_RUN = (300, 3.0), (300, 6.0)  # each engine's iteration overhead is fitted to one run
# Measured runs transcribed per request (benchmarks/data/README.md): engine -> {rate: file}; each replayed with its
# own measured issue times.
PER_REQUEST_RUNS = {"vLLM v0.2": {1.0: "distserve_opt13b_sharegpt_vllm_1rps.csv",
                                  2.0: "distserve_opt13b_sharegpt_vllm_2rps.csv",
                                  3.0: "distserve_opt13b_sharegpt_vllm_3rps.csv"},
                    "DistServe": {3.0: "distserve_opt13b_sharegpt_distserve_3rps.csv",
                                  6.0: "distserve_opt13b_sharegpt_distserve_6rps.csv"}}
SIMDISTSERVE_PER_GPU = 1.56  # "Best per GPU rate" of the example in DistServe's simdistserve/README.md
# DistServe's own ablation output as committed (simdistserve/benchmarks/figure11-abalation/figure/figure_11a.json,
# drawn by 02-draw_rate_abalation.py at its default SLO target of 400 ms / 100 ms, the OPT-66B ShareGPT setting of
# 01-run_abalation.sh): SLO attainment (%) of each variant's best configuration at increasing per-GPU rates.
DISTSERVE_ABLATION = {"DistServe (searched placement)": (98.3, 89.7, 81.3, 65.3, 49.0),
                      "vLLM++ (colocated, searched parallelism)": (95.5, 89.5, 81.0, 62.5, 38.0),
                      "vLLM (colocated, tp 1)": (62.0, 49.0, 39.0, 32.0, 19.0)}
TPOT_SWEEP = (0.1, 0.08, 0.06, 0.05, 0.04)


def _load_run(name: str) -> tuple[np.ndarray, Workload]:
    rows = np.loadtxt(DATA / name, delimiter=",", skiprows=1)
    return rows, Workload(rows[:, 0], rows[:, 1].astype(np.int64), rows[:, 2].astype(np.int64), "distserve-sharegpt")


def _measured_run() -> tuple[np.ndarray, Workload]:
    return _load_run(MEASURED_RUN.name)


def _replay(run: Workload, n: int, rate: float) -> Workload:
    """The first n requests of the measured run (issued at 3 req/s) with their arrival times scaled to `rate`."""
    return Workload(run.arrival_s[:n] * 3.0 / rate, run.prompt_tokens[:n], run.output_tokens[:n], run.name)


def _fit_overhead(costs: CostCache, d: Deployment, w: Workload, tpot_ms: float) -> float:
    """Per-iteration runtime overhead (ms) of `costs`' engine profile that makes the mean TPOT `tpot_ms`."""
    lo, hi = 0.0, 50.0
    for _ in range(14):
        mid = (lo + hi) / 2
        trial = costs.with_engine(replace(costs.engine, iteration_overhead_ms=mid))
        lo, hi = (mid, hi) if _means(simulate(trial, d, w), w)[1] < tpot_ms else (lo, mid)
    return (lo + hi) / 2


def _means(r, w: Workload) -> tuple[float, float]:
    tpot = (r.finish_s - r.first_token_s) / np.maximum(w.output_tokens - 1, 1)
    return 1e3 * float(np.nanmean(r.first_token_s - w.arrival_s)), 1e3 * float(np.nanmean(tpot))


def _measured_result(rows: np.ndarray, w: Workload):
    return measured_result(w, rows[:, 3] / 1e3, rows[:, 4] / 1e3)


def _layouts() -> tuple[dict, dict]:
    coloc = {f"{4 // tp}x tp{tp} vLLM-v0.2 prefill-first": Deployment(VLLM_V02, tp=tp, replicas=4 // tp) for tp in (1, 2, 4)}
    disagg = {d.describe(): Deployment(d) for d in (
        Disaggregated(1, 1), Disaggregated(2, 1), Disaggregated(1, 2), Disaggregated(3, 1), Disaggregated(1, 3),
        Disaggregated(2, 2), PAPER_DISAGG, Disaggregated(1, 2, prefill_tp=2),
        Disaggregated(1, 1, prefill_tp=2, decode_tp=2), Disaggregated(1, 1, decode_tp=2))}
    return coloc, disagg


def _best_ratio(costs_coloc, costs_disagg, w: Workload, slo: dict, hi: float) -> tuple[dict, str, str, float]:
    coloc, disagg = _layouts()
    results = {name: _per_gpu_goodput(costs_coloc, d, w, slo, hi) for name, d in coloc.items()}
    results.update({name: _per_gpu_goodput(costs_disagg, d, w, slo, hi) for name, d in disagg.items()})
    best_c, best_d = max(coloc, key=results.get), max(disagg, key=results.get)
    return results, best_c, best_d, results[best_d] / max(results[best_c], 1e-9)


def _ratio(num: float, den: float) -> str:
    return f"x{num / den:.2f}" if 0 < den < np.inf and num < np.inf else "-"


def _short(name: str) -> str:
    return name.replace("disaggregated(", "").replace(")", "").replace(" vLLM-v0.2 prefill-first", "").replace("pp1", "")


def _replay_measured(engines: dict, model: CostCache, run: Workload, slo: dict) -> None:
    """(a) the simulator against DistServe's measured runs of the same requests."""
    print("    (a) DistServe's measured runs replayed (same requests, arrival times scaled by the rate), mean TTFT / TPOT ms;\n"
          "        each profile's per-iteration runtime overhead is fitted to one run each (fit); the others are held out")
    for name, (costs, deployment, measured, fit_run) in engines.items():
        fitted = _fit_overhead(costs, deployment, _replay(run, *fit_run), measured[fit_run][1])
        print(f"        {name}: iteration overhead fitted now {fitted:.1f} ms, stored in its profile "
              f"{costs.engine.iteration_overhead_ms:.1f} ms")
        for key, (m_ttft, m_tpot) in measured.items():
            w = _replay(run, *key)
            p_ttft, p_tpot = _means(simulate(costs, deployment, w), w)
            c_ttft, c_tpot = _means(simulate(model, deployment, w), w)
            print(f"          {key[0]} requests at {key[1]:3.1f} req/s: measured {m_ttft:6.1f} / {m_tpot:5.1f}, profile "
                  f"{p_ttft:6.1f} / {p_tpot:5.1f} ({p_ttft / m_ttft - 1:+.0%} / {p_tpot / m_tpot - 1:+.0%}), cost model "
                  f"{c_ttft:6.1f} / {c_tpot:5.1f}" + ("  (fit)" if key == fit_run else ""))
    print("        per request, each run replayed with its own measured issue times: share meeting both SLOs and SLO\n"
          "        scale (smallest factor on both SLOs that 90% of requests meet), measured vs simulated (profiles)")
    for name, runs in PER_REQUEST_RUNS.items():
        costs, deployment = engines[name][:2]
        for rate, file in runs.items():
            rows, w = _load_run(file)
            r, m = simulate(costs, deployment, w), _measured_result(rows, w)
            print(f"          {name:<9} {len(w)} requests at {rate:3.1f} req/s on {deployment.gpus} GPU(s) "
                  f"({rate / deployment.gpus:.2f} req/s/GPU): attainment measured {attainment(m, slo):.2f} "
                  f"simulated {attainment(r, slo):.2f}; SLO scale measured {slo_scale(m, slo):.2f} "
                  f"simulated {slo_scale(r, slo):.2f}")


def _paper_configurations(vllm: CostCache, dist: CostCache, w: Workload, slo: dict, hi: float) -> None:
    """(b) the comparison as the paper ran it: vLLM v0.2 at tp 1 per GPU against DistServe's placement."""
    coloc, disagg = Deployment(VLLM_V02, tp=1, replicas=4), Deployment(PAPER_DISAGG)
    print("    (b) the paper's configurations on DistServe's workload (Poisson arrivals), engine profiles: vLLM v0.2 tp 1\n"
          "        on each of 4 GPUs vs DistServe prefill tp 2 + decode tp 1 (3 GPUs); by per-GPU rate: attainment, and SLO\n"
          "        scale (smallest factor on both SLOs that 90% of requests meet: lower is better, the paper's second axis)")
    for per_gpu in (0.5, 1.0, 1.5, 2.0):
        rc = simulate(vllm, coloc, w.with_rate(per_gpu * coloc.gpus))
        rd = simulate(dist, disagg, w.with_rate(per_gpu * disagg.gpus))
        ac, ad, sc, sd = attainment(rc, slo), attainment(rd, slo), slo_scale(rc, slo), slo_scale(rd, slo)
        print(f"        {per_gpu:3.1f} req/s/GPU: attainment vLLM {ac:.2f} DistServe {ad:.2f} ({_ratio(ad, ac)}); SLO "
              f"scale vLLM {sc:.2f} DistServe {sd:.2f} (vLLM / DistServe {_ratio(sc, sd)})")
    paper_c = _per_gpu_goodput(vllm, coloc, w, slo, hi)
    paper_d = _per_gpu_goodput(dist, disagg, w, slo, hi)
    floor = hi / 64 / coloc.gpus
    ratio = (f"x{paper_d / paper_c:.2f}" if paper_c > 0
             else f"> x{paper_d / floor:.1f} (vLLM tp 1 has none at >= {floor:.4f})")
    print(f"        per-GPU goodput: vLLM {paper_c:.3f}, DistServe {paper_d:.3f} req/s/GPU -> disagg / colocated {ratio}")
    print("        cross-check: DistServe's own simulator on this question (simdistserve/README.md: OPT-13B, ShareGPT,")
    print(f"        4xA100, TTFT 200 ms, TPOT 100 ms, P90, 300 requests): {SIMDISTSERVE_PER_GPU} req/s/GPU for prefill tp2 + "
          f"decode tp1; ours {paper_d:.2f}")


def _best_layouts(vllm: CostCache, dist: CostCache, model: CostCache, w: Workload, hi: float) -> None:
    """(c) best layout against best layout on 4 GPUs, TTFT 0.2 s, as the TPOT SLO tightens."""
    print("    (c) best disaggregated / best colocated layout on 4 GPUs (per-GPU goodput; layouts searched: colocated tp 1, 2,\n"
          "        4 replicas; disaggregated xPyD with tp 1-2 per phase), TTFT 0.2 s, by TPOT SLO; engines: each its own\n"
          "        profile (vLLM v0.2 colocated, DistServe disaggregated), DistServe's kernel profile for both, our cost model")
    print("        TPOT SLO  own profiles                   same kernels (DistServe's)     same kernels (cost model)")
    for tpot in TPOT_SWEEP:
        cells = []
        for costs_c, costs_d in ((vllm, dist), (dist, dist), (model, model)):
            _, best_c, best_d, ratio = _best_ratio(costs_c, costs_d, w, {"ttft": 0.2, "tpot": tpot}, hi)
            cells.append(f"x{ratio:4.2f} ({_short(best_d)} / {_short(best_c)})")
        print(f"        {tpot:5.2f} s   " + "  ".join(f"{c:<29}" for c in cells))


def _planner_choice(run: Workload) -> None:
    """(e) what `planner plan` picks when each kind of deployment runs on its own engine."""
    spec = "colocated=vllm-0.2-a100-80gb,disaggregated=distserve-a100-80gb"
    print(f"    (e) planner plan opt-13b --cluster 4xA100-SXM-80GB --workload <DistServe's 300 requests> --slo ttft=0.2,tpot=T\n"
          f"        --engine-profile {spec}\n"
          "        (its own search: prefill-first, chunked, disaggregated xPyD, tp 1-4, pp; its own request sample with the\n"
          "        trace's arrivals, so its numbers differ from (c)'s Poisson resample):")
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "distserve_sharegpt.csv"
        write_trace(trace, run)
        for tpot in TPOT_SWEEP:
            data = planner.plan("opt-13b", "4xA100-SXM-80GB", str(trace), slo={"ttft": 0.2, "tpot": tpot},
                                engine_profile=spec).to_dict()
            p = data["predicted"]
            print(f"        TPOT {tpot:4.2f} s: chosen {_short(data['decision']['serving']['description']):<28} "
                  f"{p['goodput_per_gpu']:.3f} req/s/GPU (attainment {p['slo_attainment']:.1%} at that rate)")


def disaggregation() -> None:
    graph, cluster = planner.capture("opt-13b", seq_len=2048), parse_cluster("4xA100-SXM-80GB")
    slo = {"ttft": 0.2, "tpot": 0.1}
    model = CostCache(graph, cluster)
    vllm = CostCache(graph, cluster, engine=load_engine_profile("vllm-0.2-a100-80gb"))
    dist = CostCache(graph, cluster, engine=load_engine_profile("distserve-a100-80gb"))
    _, run = _measured_run()
    print("[2] opt-13b on A100-SXM-80GB, TTFT 0.2 s, TPOT 0.1 s. Engines either from our cost model or from their\n"
          "    published per-iteration profiles (cost_models/data/engine_profiles: vLLM v0.2 and DistServe, measured by\n"
          "    the DistServe authors); workloads: DistServe's ShareGPT requests (prompt mean "
          f"{run.prompt_tokens.mean():.0f}, output mean {run.output_tokens.mean():.0f})\n"
          "    and our Llama-2-tokenized ShareGPT trace")
    engines = {"vLLM v0.2": (vllm, Deployment(VLLM_V02, tp=1), VLLM_MEASURED, VLLM_FIT_RUN),
               "DistServe": (dist, Deployment(PAPER_DISAGG), DISTSERVE_MEASURED, DISTSERVE_FIT_RUN)}
    _replay_measured(engines, model, run, slo)
    rng = np.random.default_rng(0)
    pick = rng.integers(0, len(run), size=N)
    w = Workload(arrivals(N, 1.0, seed=0), run.prompt_tokens[pick], run.output_tokens[pick], run.name)
    hi = 16.0
    _paper_configurations(vllm, dist, w, slo, hi)
    _best_layouts(vllm, dist, model, w, hi)
    ours = sharegpt(N, 1.0, max_total=2048)
    hi = 4 * capacity_rate(model.get(1, 1), float(ours.prompt_tokens.mean()), float(ours.output_tokens.mean()))
    results, best_c, best_d, ratio = _best_ratio(model, model, ours, slo, hi)
    print(f"    (d) our ShareGPT trace (<= 2048 tokens: prompt mean {ours.prompt_tokens.mean():.0f}, output mean "
          f"{ours.output_tokens.mean():.0f}), one cost model for both, TPOT 0.1 s:")
    for name, value in results.items():
        print(f"        {name:<48} per-GPU goodput {value:.3f} req/s/GPU")
    print(f"        best disaggregated / best colocated: x{ratio:.2f} ({best_d} vs {best_c})")
    _diagnose(model, _layouts()[1][best_d], ours, slo, results[best_d])
    _planner_choice(run)
    print("    DistServe's own simulated ablation (figure_11a.json, OPT-66B ShareGPT, 400 ms / 100 ms), attainment % by rate:")
    for name, values in DISTSERVE_ABLATION.items():
        print(f"        {name:<42} " + " ".join(f"{v:5.1f}" for v in values))
    slow = float(np.mean(run.prompt_tokens > 1080))
    print("    reading: the published direction holds as the paper measured it. Against its baseline (vLLM v0.2 at tp 1 per\n"
          "    GPU) disaggregation raises per-GPU goodput: vLLM v0.2 at tp 1 prefills at most ~1,080 tokens in 200 ms and\n"
          f"    {slow:.0%} of DistServe's prompts are longer, so no rate reaches 90% attainment - in DistServe's measured\n"
          "    runs as in ours (a: 68% measured, 49% simulated at 1 req/s) - while DistServe's placement serves 1.6 req/s/GPU\n"
          "    and meets tighter SLOs at every rate up to that (b). The measured runs last 50-100 s: at 2 req/s/GPU DistServe's\n"
          "    300-request run holds 91% (simulated 91%), a 1,500-request Poisson run does not (its decode queue builds).\n"
          "    The replay reads vLLM's TTFT long at low load (its profiled prefill is slower than the measured one for long\n"
          "    prompts) and misses the measured 3 req/s run's tail (SLO scale 6.8 measured, 2.7 simulated: the measured\n"
          "    run's worst tenth waits far longer than its mean suggests); DistServe's runs agree at both rates.\n"
          "    Best layout against best layout (c) it depends on the TPOT SLO and on the engines: at TPOT 0.1 s colocated\n"
          "    tp 2 replicas win (a 20-60 ms decode step leaves room for prefill-first stalls, and a disaggregated decode GPU\n"
          f"    is KV-bound at {model.get(1, 1).kv_capacity_tokens} tokens of KV per A100, the prefill GPUs' memory idles);\n"
          "    as TPOT tightens the ratio rises, and with each engine's own profile disaggregation wins from TPOT ~0.06 s\n"
          "    (the planner, given each kind of deployment its engine, switches to it there too (e)); with the same\n"
          "    kernels for both, colocation (tp 2, or tp 4 at 0.04 s) keeps a narrowing lead down to 0.04 s, so that win\n"
          "    is DistServe's faster decode kernels as much as the separation. DistServe's own ablation agrees: against\n"
          "    vLLM with searched parallelism (vLLM++) its attainment is the same near 90% and higher only at overload.")


def _diagnose(costs, d: Deployment, w: Workload, slo: dict, per_gpu: float) -> None:
    """Which SLO breaks first above the best disaggregated layout's goodput, and whether decode preempts."""
    r = simulate(costs, d, w.with_rate(per_gpu * d.gpus * 1.25))
    s = summarize(r)
    print(f"    at 1.25x its goodput: TTFT-only attainment {attainment(r, {'ttft': slo['ttft']}):.2f}, TPOT-only "
          f"{attainment(r, {'tpot': slo['tpot']}):.2f}, preemptions {s['preemptions']}, peak KV "
          f"{s['max_kv_blocks']}/{s['kv_capacity_blocks']} blocks")


def disaggregation_opt66b() -> None:
    """DistServe's own OPT-66B setting (the ablation of its artifact: ShareGPT, TTFT 0.4 s, TPOT 0.1 s), simulated
    with our cost model for both kinds: best disaggregated placement against best colocated parallelism (DistServe
    against vLLM++) on one 8x A100-SXM-80GB node, per-GPU goodput."""
    costs = CostCache(planner.capture("opt-66b", seq_len=2048), parse_cluster("8xA100-SXM-80GB"))
    slo = {"ttft": 0.4, "tpot": 0.1}
    w = sharegpt(N, 1.0, max_total=2048)
    coloc = {f"{8 // tp}x tp{tp} prefill-first": Deployment(VLLM_V02, tp=tp, replicas=8 // tp) for tp in (2, 4, 8)}
    disagg = {d.describe(): Deployment(d) for d in (
        Disaggregated(1, 1, prefill_tp=4, decode_tp=4), Disaggregated(1, 1, prefill_tp=2, decode_tp=4),
        Disaggregated(2, 1, prefill_tp=2, decode_tp=4), Disaggregated(1, 2, prefill_tp=2, decode_tp=2),
        Disaggregated(1, 1, prefill_tp=4, decode_tp=2), Disaggregated(2, 2, prefill_tp=2, decode_tp=2))}
    cap = capacity_rate(costs.get(4, 1), float(w.prompt_tokens.mean()), float(w.output_tokens.mean()))
    results = {}
    for name, d in {**coloc, **disagg}.items():
        try:
            results[name] = _per_gpu_goodput(costs, d, w, slo, 4 * cap)
        except Exception as exc:
            print(f"    {name}: not runnable ({str(exc).splitlines()[0][:80]})")
    best_c, best_d = max(coloc, key=lambda k: results.get(k, 0.0)), max(disagg, key=lambda k: results.get(k, 0.0))
    print("[2b] opt-66b on 8xA100-SXM-80GB, DistServe's OPT-66B ShareGPT setting (TTFT 0.4 s, TPOT 0.1 s); per-GPU goodput "
          "with our cost model for both kinds:")
    for name in (*coloc, *disagg):
        if name in results:
            print(f"        {name:<44} {results[name]:.3f} req/s/GPU")
    ratio = results[best_d] / results[best_c] if results.get(best_c) else float("inf")
    print(f"    best disaggregated ({best_d}) / best colocated ({best_c}): x{ratio:.2f}. DistServe's own ablation at these "
          "SLOs (above: attainment 98.3/89.7/81.3% against vLLM++'s 95.5/89.5/81.0% at the same per-GPU rates) puts\n"
          "    disaggregation a few percent ahead of a colocated engine whose parallelism is searched too"
          + (": reproduced." if ratio >= 0.95 else
             ": not reproduced here; on one 8-GPU node a tp4 decode instance holds half the KV cache of the colocated\n"
             "    tp8 instance while the prefill instance idles between prompts, and DistServe's searched placements "
             "(pipeline stages across nodes) are not in this search."))


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
    for fn in (layered_in_its_own_setup, layered_vs_chunked, disaggregation, disaggregation_opt66b,
               chunked_vs_prefill_first):
        t0 = time.perf_counter()
        fn()
        print(f"    ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
