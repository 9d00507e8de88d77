"""Predictions of a recorded serving decision: rebuild its workload and deployment from the plan's
`serving` section and simulate them (what `passes.serving_strategy` records, and what verify recomputes).
"""

from __future__ import annotations

import numpy as np

from cost_models.estimator import estimate_graph
from cost_models.parallel_config import Options
from cost_models.serving.capacity import saturated_rate
from cost_models.serving.deployment import Deployment, costs_for, simulate
from cost_models.serving.metrics import queue_growth, summarize
from cost_models.serving.policies import Chunked, Disaggregated, Layered, PrefillFirst
from cost_models.serving.workload import fixed as fixed_workload
from cost_models.serving.workload import make_workload
from ir.errors import UserError

POLICY_NAMES = {PrefillFirst: "prefill_first", Chunked: "chunked", Layered: "layered", Disaggregated: "disaggregated"}


def base_workload(source: str, n: int, seed: int, context: int | None = None):
    """`n` requests of `source` at 1 req/s, none longer than `context` tokens; `.with_rate(r)` gives rate r
    (the same computation in plan and verify)."""
    if source.startswith("fixed:"):
        _, i, o = source.split(":")
        return fixed_workload(n, int(i), int(o), rate=1.0, seed=seed)
    return make_workload(source, n, 1.0, seed=seed, max_total=context)


def policy_of(s: dict):
    name = s.get("policy")
    if name == "prefill_first":
        return PrefillFirst()
    if name == "chunked":
        return Chunked(int(s["chunk_tokens"]))
    if name == "layered":
        return Layered(s.get("layer_groups"))
    if name == "disaggregated":
        g = s["disaggregated"]
        return Disaggregated(g["prefill_instances"], g["decode_instances"], g["prefill_tp"], g.get("prefill_pp", 1),
                             g["decode_tp"], g.get("decode_pp", 1))
    raise UserError(f"unknown serving policy {name!r} in the plan; expected prefill_first, chunked, layered or "
                    f"disaggregated")


def expert_parallel_groups(decision: dict) -> int:
    """Attention groups per wide expert-parallel instance (1: none; `cost_models.serving.expert_parallel`)."""
    return int((decision.get("serving") or {}).get("expert_parallel_groups") or 1)


def deployment_of(decision: dict) -> Deployment:
    policy = policy_of(decision["serving"])
    if isinstance(policy, Disaggregated):
        return Deployment(policy)
    groups = expert_parallel_groups(decision)
    return Deployment(policy, tp=decision["tp"], pp=decision["pp"], replicas=decision["dp"] // groups, ep_dp=groups)


def evaluate_serving(graph, cluster, decision: dict, dtype: str, costs=None, engine_profile: str | None = None) -> dict:
    """Predictions of a serving decision: memory from the estimator at the (decode) layout, latencies,
    throughput, energy and SLO attainment from one simulation of the deployment at `serving.rate_rps`."""
    s = decision["serving"]
    costs = costs or costs_for(graph, cluster, dtype, engine_profile)
    d = deployment_of(decision)
    w = base_workload(s["workload"], s["requests"], s["seed"], s.get("context_tokens")).with_rate(s["rate_rps"])
    res = simulate(costs, d, w)
    m = summarize(res, s.get("slo") or {})
    groups = expert_parallel_groups(decision)
    options = Options(tp=decision["tp"], pp=decision["pp"], dp=decision["dp"], batch=decision["batch"],
                      input_len=decision["input_len"], output_len=decision["output_len"], dtype=dtype,
                      ep=groups, ep_over_dp=groups > 1)
    r = estimate_graph(graph, cluster, "serve", options)
    done = np.isfinite(res.finish_s)
    span = m["makespan_s"]
    tokens = float((w.prompt_tokens[done] + w.output_tokens[done]).sum())
    if isinstance(d.policy, Disaggregated):
        prefill = costs.for_policy(d.policy).get(d.policy.prefill_tp, d.policy.prefill_pp)
        r["fits"] = bool(r["fits"] and prefill.kv_capacity_tokens > 0)
    r.update(
        ttft_s=m["ttft_mean"], tpot_s=m["tpot_mean"], ttft_p50_s=m["ttft_p50"], ttft_p90_s=m["ttft_p90"],
        ttft_p99_s=m["ttft_p99"], tpot_p50_s=m["tpot_p50"], tpot_p90_s=m["tpot_p90"], tpot_p99_s=m["tpot_p99"],
        output_tokens_per_s=m["output_tokens_per_s"], requests_per_s=m["requests_per_s"],
        tokens_per_s=tokens / span if span > 0 else 0.0,
        latency_s=float(np.mean(res.finish_s[done] - w.arrival_s[done])) if done.any() else None,
        step_time_s=m["tpot_p50"], energy_per_token_j=m["energy_per_token_j"], slo_attainment=m["attainment"],
        rate_rps=s["rate_rps"], gpus=d.gpus, preemptions=m["preemptions"], rejected=m["rejected"],
        utilization=m["utilization"], expert_bytes_per_prompt=m["expert_bytes_per_prompt"],
        simulated_requests=len(w), queue_growth=queue_growth(res),
        saturation_rps=saturated_rate(lambda rate: simulate(costs, d, w.with_rate(rate)), s["rate_rps"]),
    )
    if not done.any():
        r["fits"] = False
    return r
