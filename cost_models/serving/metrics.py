"""Serving metrics of a simulation: TTFT and TPOT (mean, p50, p90, p99), throughput, SLO attainment,
goodput by search over the request rate, per-GPU goodput, energy per token, MoE expert bytes per prompt.

Definitions:
- TTFT = first token time - arrival; TPOT = (finish - first token) / (output tokens - 1), for requests
  with more than one output token (the per-request mean inter-token time, as DistServe and vLLM's
  benchmark report it). Rejected requests (too long for the KV cache) miss every SLO.
- TBT (Sarathi-Serve's time between tokens): per request, the longest gap between two of its tokens
  (the longest iteration it decoded in: a prefill-first stall shows here, not in the mean TPOT).
- SLO attainment: fraction of requests with TTFT <= ttft, TPOT <= tpot and max TBT <= tbt (an SLO left
  out is met).
- Goodput (DistServe): the highest request rate at which attainment >= 90%, found by bisection of the
  rate on a log scale (attainment falls with the rate; the bracket is checked and widened first).
  Per-GPU goodput = goodput / GPUs of the deployment.
- Steady state: a rate is only sustainable when the queue does not grow over the run (`queue_growth`,
  `is_sustainable`): goodput judged on a finite trace must also be sustainable, or a longer trace at the
  same rate misses the SLOs.
- SLO scale (DistServe's second axis): at a fixed rate, the smallest factor s for which attainment of the
  scaled SLOs (s x ttft, s x tpot, s x tbt) reaches 90%; below 1 the run has slack, above 1 it needs
  looser SLOs. Unlike goodput it stays finite when no rate meets the SLOs as given.
- Power model: a busy GPU draws idle + (TDP - idle) x u, u = compute-bound share of its busy time
  (from the roofline: the FLOP-limited part of each iteration), floored at 0.3 because HBM traffic of
  memory-bound decode alone draws a large part of board power; an idle GPU draws idle power (the spec's
  `idle_w`, else 15% of TDP). Energy per token = GPU energy over the run / output tokens. The same
  model as `cost_models.estimator`; not a measurement.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from cost_models.serving.iteration_cost import causal_pairs
from cost_models.serving.rate_search import highest_rate
from cost_models.serving.simulator import SimResult

log = logging.getLogger(__name__)

ATTAINMENT = 0.9
_POWER_FLOOR = 0.3


def latencies(r: SimResult) -> tuple[np.ndarray, np.ndarray]:
    """Per-request TTFT and TPOT (NaN where undefined: rejected, or single-token TPOT)."""
    w = r.workload
    ttft = r.first_token_s - w.arrival_s
    steps = w.output_tokens - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(steps > 0, (r.finish_s - r.first_token_s) / np.maximum(steps, 1), np.nan)
    return ttft, tpot


def attainment(r: SimResult, slo: dict) -> float:
    """Fraction of requests meeting both SLOs ({'ttft': s, 'tpot': s}).

    Rejected requests count as misses; a request without a TPOT (one output token) meets the TPOT SLO.
    """
    ttft, tpot = latencies(r)
    ok = np.isfinite(r.finish_s)
    if slo.get("ttft"):
        ok &= ttft <= slo["ttft"]
    if slo.get("tpot"):
        ok &= np.isnan(tpot) | (tpot <= slo["tpot"])
    if slo.get("tbt") and r.max_tbt_s is not None:
        ok &= np.isnan(r.max_tbt_s) | (r.max_tbt_s <= slo["tbt"])
    return float(ok.mean()) if len(ok) else 0.0


def measured_result(w, ttft_s: np.ndarray, tpot_s: np.ndarray) -> SimResult:
    """A measured run (per-request TTFT and TPOT, seconds) as a `SimResult` of workload `w`, so that it is
    scored by the same `attainment` and `slo_scale` as a simulation."""
    first = w.arrival_s + ttft_s
    return SimResult(w, first, first + tpot_s * np.maximum(w.output_tokens - 1, 0), 1)


def slo_scale(r: SimResult, slo: dict) -> float:
    """Smallest factor s with attainment(r, s x slo) >= 90% (inf when over 10% of requests are rejected).

    >>> from types import SimpleNamespace as N
    >>> w = N(arrival_s=np.zeros(10), output_tokens=np.full(10, 2))
    >>> first = np.arange(1, 11) / 10  # TTFT 0.1 .. 1.0 s, TPOT 0.01 s
    >>> r = SimResult(w, first, first + 0.01, 1)
    >>> round(slo_scale(r, {"ttft": 0.5, "tpot": 0.1}), 6)  # 9 of 10 requests need TTFT <= 0.9 s
    1.8
    """
    ttft, tpot = latencies(r)
    score = np.zeros(len(ttft))
    if slo.get("ttft"):
        score = np.maximum(score, ttft / slo["ttft"])
    if slo.get("tpot"):
        score = np.maximum(score, np.nan_to_num(tpot / slo["tpot"], nan=0.0))
    if slo.get("tbt") and r.max_tbt_s is not None:
        score = np.maximum(score, np.nan_to_num(r.max_tbt_s / slo["tbt"], nan=0.0))
    score = np.where(np.isfinite(r.finish_s), score, np.inf)
    if not len(score):
        return math.inf
    # one ulp up: (ttft / slo) x slo can round below ttft, and attainment at s must count that request as met
    return float(np.nextafter(np.sort(score)[math.ceil(ATTAINMENT * len(score)) - 1], np.inf))


def _stats(x: np.ndarray, prefix: str) -> dict:
    x = x[np.isfinite(x)]
    if not len(x):
        return {f"{prefix}_{k}": None for k in ("mean", "p50", "p90", "p99")}
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    return {f"{prefix}_mean": float(x.mean()), f"{prefix}_p50": float(p50), f"{prefix}_p90": float(p90),
            f"{prefix}_p99": float(p99)}


def energy_j(r: SimResult, makespan_s: float) -> float | None:
    """GPU energy of the run (J) under the documented power model; None without a TDP."""
    tdp, idle = r.power.get("tdp_w"), r.power.get("idle_w")
    if not tdp:
        return None
    u = max(r.compute_bound_s / r.busy_s, _POWER_FLOOR) if r.busy_s > 0 else 0.0
    busy = min(r.busy_s, makespan_s)
    return r.gpus * (busy * (idle + (tdp - idle) * min(u, 1.0)) + (makespan_s - busy) * idle)


def summarize(r: SimResult, slo: dict | None = None) -> dict:
    """Latency percentiles, throughput, energy and SLO attainment of one simulation.

    Keys: ttft_{mean,p50,p90,p99}, tpot_{...}, requests_per_s, output_tokens_per_s, energy_per_token_j,
    expert_bytes_per_prompt, attainment, preemptions, rejected, gpus, ...
    """
    w = r.workload
    ttft, tpot = latencies(r)
    done = np.isfinite(r.finish_s)
    makespan = float(np.nanmax(r.finish_s) - w.arrival_s[0]) if done.any() else 0.0
    out_tokens = float(w.output_tokens[done].sum())
    energy = energy_j(r, makespan)
    out = {**_stats(ttft, "ttft"), **_stats(tpot, "tpot")}
    if r.max_tbt_s is not None:
        out.update(_stats(r.max_tbt_s, "max_tbt"))
    out.update(
        requests=len(w), completed=int(done.sum()), rejected=r.rejected, preemptions=r.preemptions, gpus=r.gpus,
        makespan_s=makespan, requests_per_s=done.sum() / makespan if makespan > 0 else 0.0,
        output_tokens_per_s=out_tokens / makespan if makespan > 0 else 0.0,
        energy_per_token_j=energy / out_tokens if energy is not None and out_tokens else None,
        expert_bytes_per_prompt=r.expert_bytes / len(w) if len(w) else 0.0,
        max_kv_blocks=r.max_kv_blocks, kv_capacity_blocks=r.kv_capacity_blocks, iterations=r.iterations,
        prefix_hit_rate=r.prefix_hit_rate,
        utilization=r.busy_s / makespan if makespan > 0 else 0.0,
    )
    if slo is not None:
        out["attainment"] = attainment(r, slo)
    return out


def goodput(run, slo: dict, rate_hi: float, rate_lo: float | None = None, steps: int = 10,
            tolerance: float = 0.02) -> tuple[float, SimResult | None]:
    """Highest rate (req/s) with attainment >= 90% (`rate_search.highest_rate`); `run(rate)` -> SimResult.

    Returns (rate, the result at that rate); (0.0, None) when even `rate_lo` misses.

    >>> from types import SimpleNamespace as N
    >>> import numpy as np
    >>> class Fake:  # attainment 1 below 3 req/s, 0 above
    ...     pass
    >>> def run(rate):
    ...     w = N(arrival_s=np.zeros(1), output_tokens=np.array([2]))
    ...     return SimResult(w, np.array([0.0 if rate <= 3 else 9.0]), np.array([0.1 if rate <= 3 else 9.0]), 1)
    >>> round(goodput(run, {"ttft": 1.0}, rate_hi=8.0)[0], 1)
    3.0
    """
    results: dict[float, SimResult] = {}

    def ok(rate: float) -> bool:
        results[rate] = run(rate)
        return attainment(results[rate], slo) >= ATTAINMENT

    rate = highest_rate(ok, rate_lo or rate_hi / 64, rate_hi, widen=4, factor=4.0, steps=steps, tolerance=tolerance)
    log.debug("goodput %.3f req/s", rate)
    return (rate, results[rate]) if rate else (0.0, None)


def queue_growth(r: SimResult) -> float:
    """How fast the wait for a first token grows over the run: seconds of extra wait per second of
    arrivals, between the first and the last quarter of the requests (medians, so a burst does not
    decide it). A queue that keeps up stays near 0; at an arrival rate lam above the service rate mu
    every request waits (lam / mu - 1) x its arrival time longer than the first.

    Rejected requests (NaN TTFT) count as infinitely late.

    >>> from types import SimpleNamespace as N
    >>> w = N(arrival_s=np.arange(100.0), output_tokens=np.full(100, 2))
    >>> steady = SimResult(w, w.arrival_s + 0.5, w.arrival_s + 1.0, 1)
    >>> growing = SimResult(w, w.arrival_s * 1.5 + 0.5, w.arrival_s * 1.5 + 1.0, 1)
    >>> round(queue_growth(steady), 3), round(queue_growth(growing), 3)
    (0.0, 0.5)
    """
    w = r.workload
    n = len(w.arrival_s)
    if n < 8:
        return 0.0
    wait = np.where(np.isfinite(r.first_token_s), r.first_token_s - w.arrival_s, np.inf)
    q = n // 4
    early, late = slice(0, q), slice(n - q, n)
    span = float(np.median(w.arrival_s[late]) - np.median(w.arrival_s[early]))
    if span <= 0:
        return 0.0
    return float((np.median(wait[late]) - np.median(wait[early])) / span)


MAX_QUEUE_GROWTH = 0.02  # `is_sustainable`'s default: 2% of the arrival span in extra wait


def is_sustainable(r: SimResult, max_growth: float = MAX_QUEUE_GROWTH) -> bool:
    """Whether the run's queue is stable (`queue_growth` <= `max_growth`, 2%: over a 1,000 s trace the
    wait may drift by 20 s at most): a rate judged on a finite trace is only a goodput if the queue
    does not grow, or a longer trace at the same rate would miss the SLOs the short one met.

    >>> from types import SimpleNamespace as N
    >>> w = N(arrival_s=np.arange(100.0), output_tokens=np.full(100, 2))
    >>> is_sustainable(SimResult(w, w.arrival_s + 0.5, w.arrival_s + 1.0, 1))
    True
    """
    return queue_growth(r) <= max_growth


def phase_rates(cost, mean_prompt: float, mean_output: float) -> tuple[float, float]:
    """Offline request rates of one instance doing only prefill (8K-token batches of whole prompts, their
    attention pairs windowed where the model's layers are: `cost.attention_pairs`) or only decode (the largest
    batch the KV cache holds, at most 256)."""
    batch = int(max(min(cost.kv_capacity_tokens / max(mean_prompt + mean_output, 1), 256), 1))
    prompt = max(round(mean_prompt), 1)
    window_share = cost.attention_pairs(prompt, 0) / causal_pairs(prompt, 0)  # 1 without windowed layers
    pairs = 8192 * mean_prompt / 2 * window_share
    prefill = cost.time(prefill_tokens=8192, prefill_pairs=pairs, prompts_done=1) / 8192 * mean_prompt
    decode = cost.time(decodes=batch, decode_kv=batch * (mean_prompt + mean_output / 2)) / batch * mean_output
    return 1.0 / max(prefill, 1e-12), 1.0 / max(decode, 1e-12)


def capacity_rate(cost, mean_prompt: float, mean_output: float) -> float:
    """Upper bound on an instance's request rate: prefill and decode one after the other at their offline rates
    (`phase_rates`), per request (an offline throughput bound). Used to bracket the goodput search."""
    prefill_rate, decode_rate = phase_rates(cost, mean_prompt, mean_output)
    return 1.0 / max(1.0 / prefill_rate + 1.0 / decode_rate, 1e-9)
