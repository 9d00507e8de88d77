"""What a serving plan must tell the engines so they run as simulated: per instance role, the scheduler limits
of the policy, the KV cache the simulation gave the instance and the memory around it.

`engine_settings(cost, policy, context_tokens)` for one instance (colocated replica, prefill or decode
instance) returns plain numbers that the plan records (`decision.serving.engines`) and codegen renders:
- `max_num_seqs`: requests the instance runs at once (vLLM --max-num-seqs, SGLang --max-running-requests);
  for chunked prefill at most the token budget (decodes take budget too; vLLM requires
  max_num_batched_tokens >= max_num_seqs), as `schedulers.chunked_step` admits;
- `max_num_batched_tokens`: the token budget of one iteration (chunked prefill: the chunk budget; prefill
  batches: their token cap), None for decode-only instances;
- `kv_cache_tokens` / `kv_cache_bytes`: the KV pool of the instance (`simulator.kv_cache_tokens`) and its
  bytes on each GPU (vLLM --kv-cache-memory-bytes is per GPU), `kv_bytes_per_token` per GPU;
- `weights_bytes` per GPU and `device_memory_bytes` (SGLang's --mem-fraction-static covers weights + KV);
- `block_size`: the KV block tokens the simulation used (`simulator.engine_block_size`: the engine profile's,
  else vLLM's default for the device).
"""

from __future__ import annotations

import math

from cost_models.estimate_infer import inference_memory
from cost_models.serving.simulator import engine_block_size, kv_cache_tokens


def engine_settings(cost, policy, context_tokens: int | None) -> dict:
    """Engine limits and memory of one instance priced by `cost` (an IterationCost or a profiled one) under
    `policy` (a `policies` value) for requests of at most `context_tokens` tokens.

    >>> import planner
    >>> from cost_models.cluster import parse_cluster
    >>> from cost_models.serving.deployment import CostCache
    >>> from cost_models.serving.policies import Chunked
    >>> cost = CostCache(planner.capture("tiny-llama", seq_len=64), parse_cluster("1xH100-SXM")).get(1, 1)
    >>> s = engine_settings(cost, Chunked(512), 2048)
    >>> s["max_num_seqs"], s["max_num_batched_tokens"], s["kv_cache_tokens"] % 16, s["block_size"]
    (256, 512, 0, 16)
    """
    block = engine_block_size(cost)
    seqs = int(policy.max_num_seqs)
    budget = getattr(policy, "budget", None) or getattr(policy, "max_batched_tokens", None) or \
        getattr(policy, "max_prefill_tokens", None)
    if getattr(policy, "budget", None):
        seqs = min(seqs, int(policy.budget))
    tokens = kv_cache_tokens(int(cost.kv_capacity_tokens), seqs, context_tokens, block) // block * block
    per_token = float(cost.kv_bytes_per_token)
    memory = inference_memory(cost.ctx, 0, 1, 8192)
    return {"max_num_seqs": seqs, "max_num_batched_tokens": int(budget) if budget else None,
            "kv_cache_tokens": int(tokens), "kv_bytes_per_token": per_token,
            "kv_cache_bytes": math.ceil(tokens * per_token), "weights_bytes": math.ceil(memory["weights"]),
            "device_memory_bytes": int(cost.ctx.capacity_bytes), "block_size": block}


def expert_parallel_settings(cost, policy, context_tokens: int | None) -> dict:
    """`engine_settings` of a wide expert-parallel instance (`expert_parallel.ExpertParallelCost`: `cost.dp`
    attention groups sharing one batch): the scheduler limits are the instance's totals (SGLang's
    --max-running-requests and --chunked-prefill-size with DP attention are; vLLM's per data-parallel rank are
    these over the groups), the KV pool is each group's own (a group's --max-total-tokens; its bytes on each
    of the group's GPUs).

    >>> import planner
    >>> from cost_models.cluster import parse_cluster
    >>> from cost_models.serving.deployment import CostCache
    >>> from cost_models.serving.policies import Chunked
    >>> costs = CostCache(planner.capture("tiny-mixtral", seq_len=64), parse_cluster("4xH100-SXM"))
    >>> s = expert_parallel_settings(costs.get(1, 1, 4), Chunked(512), 2048)
    >>> s["attention_groups"], s["kv_cache_tokens"] * 4 <= costs.get(1, 1, 4).kv_capacity_tokens
    (4, True)
    """
    groups = int(cost.dp)
    whole = engine_settings(cost, policy, context_tokens)
    block = whole["block_size"]
    tokens = whole["kv_cache_tokens"] // groups // block * block
    return {**whole, "kv_cache_tokens": tokens, "kv_cache_bytes": math.ceil(tokens * whole["kv_bytes_per_token"]),
            "attention_groups": groups}


def serving_engine_facts(costs, policy, tp: int, pp: int, source: str, context: int | None, ep_dp: int = 1) -> dict:
    """The facts a serving plan records for its engine scripts (`decision.serving`): the longest request of the
    workload (the engines' context limit), prefix caching and round-robin dispatch as simulated, and
    `engines`: `engine_settings` per instance role ("instance" for colocated replicas, `ep_dp` > 1 for wide
    expert-parallel ones; "prefill" and "decode" for a disaggregated deployment). `costs` is the plan's
    `deployment.CostCache`."""
    from cost_models.serving.policies import DecodeOnly, Disaggregated, PrefillFirst
    from cost_models.serving.workload import longest_request_tokens

    longest = longest_request_tokens(source, context)
    if isinstance(policy, Disaggregated):
        cache = costs.for_policy(policy)
        engines = {"prefill": engine_settings(cache.get(policy.prefill_tp, policy.prefill_pp), PrefillFirst(), longest),
                   "decode": engine_settings(cache.get(policy.decode_tp, policy.decode_pp), DecodeOnly(), longest)}
    elif ep_dp > 1:
        engines = {"instance": expert_parallel_settings(costs.get(tp, pp, ep_dp), policy, longest)}
    else:
        engines = {"instance": engine_settings(costs.get(tp, pp), policy, longest)}
    return {"longest_request_tokens": longest, "prefix_caching": True, "dispatch": "round_robin", "engines": engines}
