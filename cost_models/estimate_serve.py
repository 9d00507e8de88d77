"""Serving estimate: continuous batching limited by KV-cache capacity.

Offline (no --qps): every slot the KV cache allows is busy. With B concurrent sequences, a request
costs one prefill and `output_len` decode steps shared with B-1 others, so the request rate is
X = 1 / (t_prefill + output_len * t_decode(B) / B) per replica.

With --qps: an iteration-level simulation of Poisson arrivals (seeded) with vLLM-style
prefill-first scheduling: waiting prompts are admitted while KV blocks last and prefilled in one
iteration; otherwise all running sequences decode one token. Iteration times come from the cost
model (prefill time linear in prompt count; decode time interpolated over batch sizes). The
full serving simulator with chunked/layered prefill and disaggregation is `planner`'s serving
module; this one answers `estimate --phase serve`.
"""

from __future__ import annotations

import bisect
import random

from cost_models.estimate_context import Context
from cost_models.estimate_infer import forward_pass, max_batch

MAX_CONCURRENCY = 1024  # vLLM's default max_num_seqs is 256-1024; beyond this scheduling overheads dominate
SIMULATED_REQUESTS = 400


def _decode_table(ctx: Context, input_len: int, output_len: int, limit: int) -> tuple[list[int], list[float]]:
    context = input_len + output_len // 2
    sizes = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, limit} & set(range(1, limit + 1)) | {limit})
    return sizes, [forward_pass(ctx, "decode", b, input_len, context).time_s for b in sizes]


def _interpolate(sizes: list[int], times: list[float], batch: int) -> float:
    i = bisect.bisect_left(sizes, batch)
    if i < len(sizes) and sizes[i] == batch:
        return times[i]
    if i == 0:
        return times[0]
    if i >= len(sizes):
        return times[-1] * batch / sizes[-1]
    lo, hi = sizes[i - 1], sizes[i]
    return times[i - 1] + (times[i] - times[i - 1]) * (batch - lo) / (hi - lo)


def serve(ctx: Context) -> dict:
    o = ctx.options
    per_replica = max_batch(ctx, o.input_len + o.output_len, o.input_len) // o.dp
    concurrency = min(per_replica, MAX_CONCURRENCY)
    if concurrency < 1:
        return {"max_batch": 0, "fits": False}
    prefill = forward_pass(ctx, "prefill", 1, o.input_len)
    sizes, times = _decode_table(ctx, o.input_len, o.output_len, concurrency)
    t_decode = times[-1]
    rate = 1.0 / (prefill.time_s + o.output_len * t_decode / concurrency)
    result = {
        "max_batch": concurrency * o.dp, "fits": True,
        "output_tokens_per_s": rate * o.output_len * o.dp, "requests_per_s": rate * o.dp,
        # decode steps lose the time spent on other requests' prefills: t_decode / (1 - X t_prefill)
        "ttft_s": prefill.time_s, "tpot_s": t_decode / max(1.0 - rate * prefill.time_s, 1e-9),
        "prefill": prefill, "decode_time_s": t_decode, "concurrency": concurrency,
    }
    if o.qps:
        result.update(_simulate(o.qps / o.dp, prefill.time_s, sizes, times, concurrency, o.output_len))
    return result


def _simulate(qps: float, t_prefill: float, sizes, times, slots: int, output_len: int, seed: int = 0) -> dict:
    """Mean TTFT and TPOT of Poisson arrivals at `qps` on one replica (deterministic per seed)."""
    rng = random.Random(seed)
    arrivals, t = [], 0.0
    for _ in range(SIMULATED_REQUESTS):
        t += rng.expovariate(qps)
        arrivals.append(t)
    now, nxt = 0.0, 0
    waiting: list[int] = []
    running: dict[int, int] = {}  # request -> tokens generated
    first_token: dict[int, float] = {}
    finished: dict[int, float] = {}
    while len(finished) < len(arrivals):
        while nxt < len(arrivals) and arrivals[nxt] <= now:
            waiting.append(nxt)
            nxt += 1
        admit = waiting[: max(slots - len(running), 0)]
        if admit:
            waiting = waiting[len(admit):]
            now += t_prefill * len(admit)
            for r in admit:
                running[r] = 1
                first_token[r] = now
            continue
        if not running:
            now = max(now, arrivals[nxt]) if nxt < len(arrivals) else now
            continue
        now += _interpolate(sizes, times, len(running))
        for r in list(running):
            running[r] += 1
            if running[r] >= output_len:
                finished[r] = now
                del running[r]
    ttft = [first_token[r] - arrivals[r] for r in range(len(arrivals))]
    tpot = [(finished[r] - first_token[r]) / max(output_len - 1, 1) for r in range(len(arrivals))]
    span = max(finished.values()) - arrivals[0]
    return {"ttft_s": sum(ttft) / len(ttft), "tpot_s": sum(tpot) / len(tpot),
            "achieved_requests_per_s": len(arrivals) / span if span > 0 else 0.0}
