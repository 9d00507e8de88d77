"""Serving estimate: continuous batching limited by KV-cache capacity, from the serving simulator.

Offline (no --qps): the throughput benchmark of serving engines (trtllm-bench, vLLM's
benchmark_throughput): `OFFLINE_REQUESTS` requests of the fixed lengths all waiting at t = 0, run
through the iteration-level simulator (`cost_models.serving`) with in-flight batching as today's
engines schedule it: every iteration carries all running decodes and fills up to
`MAX_BATCHED_TOKENS` tokens with prompt chunks (vLLM V1, TensorRT-LLM with chunked context;
Sarathi-Serve), at most `MAX_CONCURRENCY` sequences, the KV cache in blocks. Prompts are prefilled
in batches, not one at a time. Throughput = output tokens / makespan (ramp-up and drain included,
as the benchmarks measure them); `tpot_s` is the mean time per output token of the run and
`ttft_s` the prefill of one prompt on an idle instance.

With --qps: mean TTFT and TPOT from the same simulator on Poisson arrivals (seeded, 400 requests of
the fixed lengths, per replica at qps / dp) with vLLM-style prefill-first scheduling; TTFT includes the
front end's per-request time (`Efficiency.request_overhead_s`). `planner plan` searches chunked/layered
prefill and disaggregation with the same simulator (planner.plan_infer).
"""

from __future__ import annotations

from cost_models.estimate_context import Context
from cost_models.estimate_infer import forward_pass, max_batch

MAX_CONCURRENCY = 1024  # vLLM V1 / TensorRT-LLM default maximum of running sequences on 80 GB-class GPUs
MAX_BATCHED_TOKENS = 8192  # tokens per iteration (vLLM max_num_batched_tokens, TensorRT-LLM max_num_tokens)
OFFLINE_REQUESTS = 2000
SIMULATED_REQUESTS = 400


def serve(ctx: Context) -> dict:
    o = ctx.options
    per_replica = max_batch(ctx, o.input_len + o.output_len, min(o.input_len, MAX_BATCHED_TOKENS)) // o.dp
    concurrency = min(per_replica, MAX_CONCURRENCY)
    if concurrency < 1:
        return {"max_batch": 0, "fits": False}
    prefill = forward_pass(ctx, "prefill", 1, o.input_len)
    offline = _offline(ctx, concurrency)
    if not offline:
        return {"max_batch": 0, "fits": False}
    rate = offline["requests_per_s"]
    t_decode = forward_pass(ctx, "decode", concurrency, o.input_len, o.input_len + o.output_len // 2).time_s
    result = {
        "max_batch": concurrency * o.dp, "fits": True,
        "output_tokens_per_s": rate * o.output_len * o.dp, "requests_per_s": rate * o.dp,
        "ttft_s": prefill.time_s + ctx.eff.request_overhead_s, "tpot_s": offline["tpot_s"],
        "prefill": prefill, "decode_time_s": t_decode, "concurrency": concurrency,
    }
    if o.qps:
        result.update(_simulate(ctx, o.qps / o.dp))
    return result


def _offline(ctx: Context, concurrency: int) -> dict:
    """Requests per second and mean TPOT of one replica running `OFFLINE_REQUESTS` waiting requests."""
    from cost_models.serving.iteration_cost import IterationCost
    from cost_models.serving.metrics import summarize
    from cost_models.serving.policies import Chunked
    from cost_models.serving.simulator import simulate_instance
    from cost_models.serving.workload import fixed

    o = ctx.options
    w = fixed(OFFLINE_REQUESTS, o.input_len, o.output_len, rate=1e9, seed=0)
    m = summarize(simulate_instance(IterationCost(ctx), Chunked(MAX_BATCHED_TOKENS, max_num_seqs=concurrency), w))
    if not m["completed"]:
        return {}
    return {"requests_per_s": m["requests_per_s"], "tpot_s": m["tpot_mean"] or 0.0}


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
    cost = IterationCost(ctx)
    m = summarize(simulate_instance(cost, PrefillFirst(), w))
    if m["ttft_mean"] is None:
        return {}
    return {"ttft_s": m["ttft_mean"] + cost.request_overhead_s,
            "tpot_s": m["tpot_mean"] if m["tpot_mean"] is not None else 0.0,
            "achieved_requests_per_s": m["requests_per_s"]}
