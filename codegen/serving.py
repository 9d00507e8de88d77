"""Serving deployments of a plan as engine instances: which instance runs where, on which GPUs, with which
limits; what the engine scripts (`serve_vllm.sh`, `serve_sglang.sh`) and their routers render.

Every instance is its own engine process pinned to its own GPUs (CUDA_VISIBLE_DEVICES), as the plan simulated
it: colocated replicas (`decision.stages[*].ranks` rows; vLLM's --data-parallel-size is not used, since for
MoE models it shards experts over the replicas in lock-step) and disaggregated prefill and decode instances
(`decision.serving.disaggregated.prefill_ranks`, then the decode rows), behind a router that dispatches round
robin (what the simulator does) or pairs prefill and decode instances. The per-role engine numbers are the
plan's `decision.serving.engines` (`cost_models.serving.engine_settings`); plans that record none (prefill or
decode batch plans, fleets) get them from the same function here.

Every value is type-checked before it reaches a template (`_int`, `_text`); the templates quote them (`sh`).
"""

from __future__ import annotations

import math

from codegen.engine_args import INSTRUCT_WORKLOADS, engine_scripts, instruct_checkpoint
from ir.errors import UserError

NAMES = {"prefill": "prefill", "decode": "decode", "instance": "replica"}


def _int(value, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < minimum:
        raise UserError(f"plan field {what} must be an integer >= {minimum}, got {value!r}; re-run `planner plan`")
    return int(value)


def _text(value, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise UserError(f"plan field {what} must be a non-empty string, got {value!r}; re-run `planner plan`")
    return value


def _engine(numbers: dict, role: str) -> dict:
    """Typed engine settings of one role (`cost_models.serving.engine_settings` keys)."""
    if not isinstance(numbers, dict):
        raise UserError(f"plan field decision.serving.engines.{role} must be a mapping; re-run `planner plan`")
    where = f"decision.serving.engines.{role}"
    budget = numbers.get("max_num_batched_tokens")
    out = {key: _int(numbers.get(key), f"{where}.{key}") for key in
           ("max_num_seqs", "kv_cache_tokens", "kv_cache_bytes", "weights_bytes", "device_memory_bytes", "block_size")}
    out["max_num_batched_tokens"] = None if budget is None else _int(budget, f"{where}.max_num_batched_tokens")
    return out


def _place(cluster, ranks: list, what: str) -> list[tuple[int, str]]:
    """(node, local GPU ids) of an instance's global ranks, node by node in rank order."""
    by_node: dict[int, list[int]] = {}
    for rank in ranks:
        info = cluster.rank_info(_int(rank, what, 0))
        by_node.setdefault(info.node, []).append(info.local_rank)
    return [(node, ",".join(map(str, sorted(gpus)))) for node, gpus in sorted(by_node.items())]


def _instances(plan: dict, cluster, engines: dict) -> list[dict]:
    """Instances in launch order: prefill instances, then decode instances (or the replicas)."""
    decision = plan["decision"]
    serving = decision.get("serving") or {}
    stages = sorted(decision["stages"], key=lambda st: st["stage"])
    rows = [[rank for st in stages for rank in st["ranks"][j]] for j in range(len(stages[0]["ranks"]))]
    disagg = serving.get("disaggregated")
    if not disagg:
        return instances_of(cluster, engines, [("instance", rows, _int(decision["tp"], "decision.tp"),
                                                 _int(decision["pp"], "decision.pp"))])
    prefill_ranks = disagg.get("prefill_ranks")
    if not isinstance(prefill_ranks, list) or not prefill_ranks:
        raise UserError("disaggregated plan has no decision.serving.disaggregated.prefill_ranks; re-run `planner plan`")
    return instances_of(cluster, engines, [
        ("prefill", prefill_ranks, _int(disagg.get("prefill_tp"), "prefill_tp"), _int(disagg.get("prefill_pp", 1), "prefill_pp")),
        ("decode", rows, _int(disagg.get("decode_tp"), "decode_tp"), _int(disagg.get("decode_pp", 1), "decode_pp"))])


def instances_of(cluster, engines: dict, groups: list) -> list[dict]:
    """Instances of (role, rank rows, tp, pp) groups, each placed on the cluster by its global ranks."""
    out = []
    for role, rank_rows, tp, pp in groups:
        if role not in engines:
            raise UserError(f"plan records no engine settings for its {role} instances; re-run `planner plan`")
        for j, ranks in enumerate(rank_rows):
            if not isinstance(ranks, list) or len(ranks) != tp * pp:
                raise UserError(f"plan {role} instance {j} has ranks {ranks!r}, expected {tp * pp} (tp={tp} x pp={pp}); "
                                f"re-run `planner plan`")
            parts = _place(cluster, ranks, f"{role} rank")
            out.append({"index": len(out), "name": f"{NAMES[role]}-{j}", "role": NAMES[role], "tp": tp, "pp": pp,
                        "parts": [{"node": node, "gpus": gpus, "node_rank": r} for r, (node, gpus) in enumerate(parts)],
                        "engine": engines[role]})
    return out


def _computed_engines(plan: dict, tp: int, pp: int, seqs: int, longest: int, budget: int) -> dict:
    """Engine settings of a plan that records none (prefill/decode batch plans): the same function the serving
    planner records them with, on the plan's model, cluster and dtype."""
    import planner
    from cost_models.cluster import parse_cluster
    from cost_models.serving.deployment import costs_for
    from cost_models.serving.engine_settings import engine_settings
    from cost_models.serving.policies import Chunked

    inputs = plan["inputs"]
    dtype = inputs.get("dtype", "bf16")
    graph = planner.capture(inputs["model"], seq_len=min(longest, 8192), dtype="bf16" if dtype == "fp8" else dtype)
    costs = costs_for(graph, parse_cluster(inputs.get("cluster", "1xcpu")), dtype)
    return {"instance": engine_settings(costs.get(tp, pp), Chunked(budget, max_num_seqs=seqs), longest)}


def _facts(plan: dict, runtime: dict) -> dict:
    """Workload limit, policy and per-role engine settings of an inference plan."""
    decision = plan["decision"]
    serving = decision.get("serving")
    if serving:
        engines = serving.get("engines")
        if not isinstance(engines, dict) or not engines:
            raise UserError("serving plan records no engine settings (decision.serving.engines: written by planner "
                            "versions before the engine scripts); re-run `planner plan`")
        return {"longest": _int(serving.get("longest_request_tokens"), "decision.serving.longest_request_tokens"),
                "policy": _text(serving.get("policy"), "decision.serving.policy"),
                "prefix_caching": serving.get("prefix_caching") is not False,
                "engines": {role: _engine(numbers, role) for role, numbers in sorted(engines.items())},
                "workload": str(serving.get("workload") or "")}
    input_len = _int(decision.get("input_len"), "decision.input_len")
    output_len = _int(decision.get("output_len") or 1, "decision.output_len")
    dp = _int(runtime["dp"], "decision.dp")
    seqs = max(math.ceil(_int(decision.get("batch") or 1, "decision.batch") / dp), 1)
    longest = input_len + output_len
    budget = max(2048, seqs, input_len)
    engines = _computed_engines(plan, runtime["tp"], runtime["pp"], seqs, longest, budget)
    return {"longest": longest, "policy": "chunked", "prefix_caching": True,
            "engines": {role: _engine(numbers, role) for role, numbers in engines.items()}, "workload": ""}


def model_checkpoint(plan: dict, spec: dict, workload: str) -> tuple[str, str]:
    """(checkpoint the scripts serve by default, a note on the choice): the preset's Hugging Face id (its instruct
    variant for chat-style workloads), or the plan's local model folder."""
    ref = plan["inputs"]["model"]
    hub = spec.get("hub_id")
    if not hub:
        if spec.get("kind") == "hf_config" and spec.get("config_class"):
            return ref, "a preset without a published checkpoint: set MODEL_PATH to its weights"
        if spec.get("kind") == "factory":
            return ref, "a model factory: set MODEL_PATH to a checkpoint folder of that model"
        if ref.endswith("config.json"):
            ref = ref[:-len("config.json")].rstrip("/") or "."
        return ref, "the plan's model folder"
    kind = (plan["inputs"].get("workload") or {}).get("kind") or workload
    if kind in INSTRUCT_WORKLOADS:
        instruct = instruct_checkpoint(hub)
        if instruct != hub:
            return instruct, f"the instruct checkpoint for the {kind} workload (base model: {hub})"
        return hub, f"{hub} (no separate instruct checkpoint known for it)"
    return hub, f"the base checkpoint ({kind or 'batch'} workload)"


def serving_context(plan: dict, spec: dict, runtime: dict, launch: dict) -> dict | None:
    """Render context of the engine scripts of an inference plan (None for training plans)."""
    from cost_models.cluster import parse_cluster

    decision = plan["decision"]
    if decision.get("kind") != "inference":
        return None
    facts = _facts(plan, runtime)
    instances = _instances(plan, parse_cluster(plan["inputs"].get("cluster", "1xcpu")), facts["engines"])
    model, note = model_checkpoint(plan, spec, facts["workload"])
    common = {"model_path": _text(model, "inputs.model"), "model_note": note, "max_model_len": facts["longest"],
              "policy": facts["policy"], "prefix_caching": facts["prefix_caching"],
              "dtype": _text(plan["inputs"].get("dtype", "bf16"), "inputs.dtype"),
              "kv_dtype": plan["inputs"].get("kv_dtype"), "ep": _int(runtime["ep"], "decision.ep"),
              "chunk_tokens": (decision.get("serving") or {}).get("chunk_tokens"),
              "nodes": 1 + max(p["node"] for inst in instances for p in inst["parts"]),
              "accelerator": bool(launch["accelerator"])}
    return engine_scripts(common, instances)
