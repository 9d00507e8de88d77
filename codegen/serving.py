"""Serving deployments of a plan as engine instances: which instance runs where, on which GPUs, with which
limits; what the engine scripts (`serve_vllm.sh`, `serve_sglang.sh`) and their routers render.

Every instance is its own engine process pinned to its own GPUs (CUDA_VISIBLE_DEVICES), as the plan simulated
it: colocated replicas (`decision.stages[*].ranks` rows; vLLM's --data-parallel-size is not used, since for
MoE models it shards experts over the replicas in lock-step) and disaggregated prefill and decode instances
(`decision.serving.disaggregated.prefill_ranks`, then the decode rows), behind a router that dispatches round
robin (what the simulator does) or pairs prefill and decode instances. The per-role engine numbers are the
plan's `decision.serving.engines` (`cost_models.serving.engine_settings`; prefill and decode batch plans:
`decision.engines`; fleets: each configuration's `engine`): codegen reads them from the plan, it prices nothing.

Every value is type-checked before it reaches a template (`_int`, `_text`); the templates quote them (`sh`).
"""

from __future__ import annotations

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


def engine_record(numbers: dict, role: str) -> dict:
    """Typed engine settings of one role (`cost_models.serving.engine_settings` keys)."""
    if not isinstance(numbers, dict):
        raise UserError(f"plan field decision.serving.engines.{role} must be a mapping; re-run `planner plan`")
    where = f"decision.serving.engines.{role}"
    budget = numbers.get("max_num_batched_tokens")
    out = {key: _int(numbers.get(key), f"{where}.{key}") for key in
           ("max_num_seqs", "kv_cache_tokens", "kv_cache_bytes", "weights_bytes", "device_memory_bytes", "block_size")}
    out["max_num_batched_tokens"] = None if budget is None else _int(budget, f"{where}.max_num_batched_tokens")
    out["attention_groups"] = _int(numbers.get("attention_groups", 1), f"{where}.attention_groups")
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
        groups = _int(serving.get("expert_parallel_groups", 1), "decision.serving.expert_parallel_groups")
        if len(rows) % groups:
            raise UserError(f"plan has {len(rows)} replica rows, not whole wide expert-parallel instances of {groups} "
                            f"attention groups; re-run `planner plan`")
        rows = [[rank for row in rows[j:j + groups] for rank in row] for j in range(0, len(rows), groups)]
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
        groups = int(engines[role].get("attention_groups", 1))
        for j, ranks in enumerate(rank_rows):
            if not isinstance(ranks, list) or len(ranks) != tp * pp * groups:
                raise UserError(f"plan {role} instance {j} has ranks {ranks!r}, expected {tp * pp * groups} (tp={tp} x "
                                f"pp={pp} x {groups} attention group(s)); re-run `planner plan`")
            parts = _place(cluster, ranks, f"{role} rank")
            out.append({"index": len(out), "name": f"{NAMES[role]}-{j}", "role": NAMES[role], "tp": tp, "pp": pp,
                        "groups": groups,
                        "parts": [{"node": node, "gpus": gpus, "node_rank": r} for r, (node, gpus) in enumerate(parts)],
                        "engine": engines[role]})
    return out


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
                "engines": {role: engine_record(numbers, role) for role, numbers in sorted(engines.items())},
                "workload": str(serving.get("workload") or "")}
    input_len = _int(decision.get("input_len"), "decision.input_len")
    output_len = _int(decision.get("output_len") or 1, "decision.output_len")
    engines = decision.get("engines")
    if not isinstance(engines, dict) or not engines:
        raise UserError("batch plan records no engine settings (decision.engines: written by planner versions before "
                        "the engine scripts); re-run `planner plan`")
    return {"longest": input_len + output_len, "policy": "chunked", "prefix_caching": True,
            "engines": {role: engine_record(numbers, role) for role, numbers in sorted(engines.items())}, "workload": ""}


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
