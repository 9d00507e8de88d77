"""Serving estimate: continuous batching limited by KV-cache capacity.

Offline (no --qps): every slot the KV cache allows is busy. With B concurrent sequences, a request
costs one prefill and `output_len` decode steps shared with B-1 others, so the request rate is
X = 1 / (t_prefill + output_len * t_decode(B) / B) per replica.

With --qps: mean TTFT and TPOT from the iteration-level serving simulator (`cost_models.serving`)
on Poisson arrivals (seeded, 400 requests of the fixed lengths, per replica at qps / dp) with vLLM-style
prefill-first scheduling and the KV capacity in blocks; iteration times come from the same cost model.
The other keys (throughput, max_batch) stay the offline continuous-batching model above. `planner plan`
searches chunked/layered prefill and disaggregation with the same simulator (planner.plan_infer).
"""

from __future__ import annotations

from cost_models.estimate_context import Context
from cost_models.estimate_infer import forward_pass, max_batch

MAX_CONCURRENCY = 1024  # vLLM's default max_num_seqs is 256-1024; beyond this scheduling overheads dominate
SIMULATED_REQUESTS = 400


def _decode_table(ctx: Context, input_len: int, output_len: int, limit: int) -> tuple[list[int], list[float]]:
    context = input_len + output_len // 2
    sizes = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, limit} & set(range(1, limit + 1)) | {limit})
    return sizes, [forward_pass(ctx, "decode", b, input_len, context).time_s for b in sizes]


def serve(ctx: Context) -> dict:
    o = ctx.options
    per_replica = max_batch(ctx, o.input_len + o.output_len, o.input_len) // o.dp
    concurrency = min(per_replica, MAX_CONCURRENCY)
    if concurrency < 1:
        return {"max_batch": 0, "fits": False}
    prefill = forward_pass(ctx, "prefill", 1, o.input_len)
    _, times = _decode_table(ctx, o.input_len, o.output_len, concurrency)
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
        result.update(_simulate(ctx, o.qps / o.dp))
    return result


def _simulate(ctx: Context, qps: float, seed: int = 0) -> dict:
    """Mean TTFT and TPOT of Poisson arrivals at `qps` on one replica, from the serving simulator
    (`cost_models.serving`: prefill-first continuous batching, KV capacity in blocks; deterministic per seed).

    Empty when the simulation completes no request (a prompt longer than the KV cache holds)."""
    from cost_models.serving.iteration_cost import IterationCost
    from cost_models.serving.metrics import summarize
    from cost_models.serving.policies import PrefillFirst
    from cost_models.serving.simulator import simulate_instance
    from cost_models.serving.workload import fixed

    o = ctx.options
    w = fixed(SIMULATED_REQUESTS, o.input_len, o.output_len, rate=qps, seed=seed)
    m = summarize(simulate_instance(IterationCost(ctx), PrefillFirst(), w))
    if m["ttft_mean"] is None:
        return {}
    return {"ttft_s": m["ttft_mean"], "tpot_s": m["tpot_mean"] if m["tpot_mean"] is not None else 0.0,
            "achieved_requests_per_s": m["requests_per_s"]}
