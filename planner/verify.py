"""`planner verify`: an independent check of a plan, recomputed from its inputs.

Checks: the format and the fingerprint of the inputs; every layer placed exactly once in
contiguous, non-empty stages (pp of them; with interleaved 1F1B, pp x v chunks dealt round-robin:
chunk c of stage s is the (c * pp + s)-th range in model order); a schedule that can run; ranks
exist, each used once, a TP group on one node, on the device its stage names; degrees divide the
model (tp and heads, pp and blocks, ep and experts) and the batch (dp x microbatch size x
microbatches), ep divides dp; memory (experts split ep ways) fits on every stage; the predicted
metrics agree with a fresh evaluation by the cost model.
"""

from __future__ import annotations

import math

from cost_models.cluster import parse_cluster
from ir.errors import UserError
from planner.plan_file import PLAN_FORMAT, fingerprint

_AGREE = ("step_time_s", "tokens_per_s", "memory_per_device_bytes", "latency_s", "tpot_s", "ttft_s",
          "output_tokens_per_s")


def _structure(plan: dict, graph, cluster) -> list[str]:
    problems = []
    d = plan["decision"]
    stages = d.get("stages") or []
    if len(stages) != d.get("pp"):
        problems.append(f"decision has pp={d.get('pp')} but {len(stages)} stages")
    problems += _layer_cover(d, stages, len(graph.layers))
    seen: dict[int, int] = {}
    for s in stages:
        if len(s["ranks"]) != d["dp"]:
            problems.append(f"stage {s['stage']} has {len(s['ranks'])} data-parallel replicas, dp is {d['dp']}")
        for group in s["ranks"]:
            if len(group) != s["tp"]:
                problems.append(f"stage {s['stage']} has a TP group of {len(group)} ranks, tp is {s['tp']}")
            nodes = set()
            for rank in group:
                if not isinstance(rank, int) or not 0 <= rank < cluster.num_devices:
                    problems.append(f"stage {s['stage']} uses rank {rank}, cluster has {cluster.num_devices}")
                    continue
                if rank in seen:
                    problems.append(f"rank {rank} is used by stages {seen[rank]} and {s['stage']}")
                seen[rank] = s["stage"]
                info = cluster.devices[rank]
                nodes.add(info.node)
                if info.device.name != s["device"]:
                    problems.append(f"stage {s['stage']} says {s['device']} but rank {rank} is a {info.device.name}")
            if len(nodes) > 1:
                problems.append(f"stage {s['stage']} has a TP group across nodes {sorted(nodes)}")
    return problems


def _pieces(d: dict, stages: list[dict]) -> tuple[list[tuple[str, list]], list[str]]:
    """The plan's layer ranges in model order with a name each: stages, or with interleaving the
    virtual stages (chunk c of rank s is piece c * pp + s, Megatron-LM's round-robin)."""
    v = d.get("virtual_stages", 1)
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        return [], [f"virtual_stages={v!r} is not a positive integer"]
    if v == 1:
        return [(f"stage {s['stage']}", s["layers"]) for s in stages], []
    problems, pieces = [], {}
    for rank, s in enumerate(stages):
        chunks = s.get("chunks") or []
        if len(chunks) != v:
            problems.append(f"stage {s['stage']} has {len(chunks)} chunks, virtual_stages is {v}")
            continue
        if list(s["layers"]) != list(chunks[0]):
            problems.append(f"stage {s['stage']}: layers {s['layers']} is not its first chunk {chunks[0]}")
        for c, chunk in enumerate(chunks):
            pieces[c * len(stages) + rank] = (f"stage {s['stage']} chunk {c}", chunk)
    return [pieces[k] for k in sorted(pieces)], problems


def _layer_cover(d: dict, stages: list[dict], num_layers: int) -> list[str]:
    """Every layer exactly once: the ranges, in model order, contiguous and non-empty."""
    pieces, problems = _pieces(d, stages)
    if problems:
        return problems
    position = 0
    for name, (a, b) in pieces:
        if a != position:
            problems.append(f"{name} starts at layer {a}, expected {position} (layers must be placed once, "
                            f"contiguously{', chunks round-robin over the stages' if len(pieces) > len(stages) else ''})")
        if b <= a:
            problems.append(f"{name} is empty or reversed: layers [{a}, {b})")
        position = b
    if position != num_layers:
        problems.append(f"stages cover {position} of {num_layers} layers")
    return problems


def _schedule(d: dict, graph) -> list[str]:
    """The pipeline schedule is known and can run (cost_models.pipeline_schedule.schedule_problem)."""
    from cost_models.pipeline_schedule import schedule_problem

    blocks = sum(1 for layer in graph.layers if layer.kind == "block")
    problem = schedule_problem(d.get("schedule", "1f1b"), d.get("pp", 1), d["microbatches"],
                               d.get("virtual_stages", 1), blocks)
    return [problem] if problem else []


def _degrees(plan: dict, graph) -> list[str]:
    problems = []
    d, cfg = plan["decision"], graph.config
    heads, kv = cfg.get("num_heads"), cfg.get("num_kv_heads")
    for s in d.get("stages", []):
        tp = s["tp"]
        if heads and heads % tp:
            problems.append(f"stage {s['stage']}: tp={tp} does not divide {heads} attention heads")
        if kv and tp > 1 and kv % tp and tp % kv:
            problems.append(f"stage {s['stage']}: tp={tp} clashes with {kv} KV heads")
    blocks = sum(1 for layer in graph.layers if layer.kind == "block")
    if d.get("pp", 1) > blocks:
        problems.append(f"pp={d['pp']} exceeds the {blocks} blocks")
    if d["kind"] == "train":
        batch = plan["inputs"]["workload"]["batch"]
        if d["dp"] * d["microbatch_size"] * d["microbatches"] != batch:
            problems.append(f"dp {d['dp']} x microbatch {d['microbatch_size']} x {d['microbatches']} microbatches "
                            f"!= batch {batch}")
        if d.get("recompute") not in ("none", "selective", "full") or d.get("zero_stage") not in (0, 1, 2, 3):
            problems.append(f"unknown recompute {d.get('recompute')!r} or zero stage {d.get('zero_stage')!r}")
        problems += _expert_parallel(d, cfg.get("num_experts") or 0)
        problems += _schedule(d, graph)
    return problems


def _expert_parallel(d: dict, experts: int) -> list[str]:
    """Training ep: a positive integer dividing the experts and dp (ep ranks are dp replicas)."""
    ep = d.get("ep", 1)
    if not isinstance(ep, int) or isinstance(ep, bool) or ep < 1:
        return [f"ep={ep!r} is not a positive integer"]
    if ep == 1:
        return []
    problems = []
    if not experts or experts % ep:
        problems.append(f"ep={ep} does not divide the {experts} experts of the model")
    if d["dp"] % ep:
        problems.append(f"ep={ep} does not divide dp={d['dp']} (expert-parallel ranks are data-parallel replicas)")
    return problems


def _recompute(plan: dict, graph, cluster) -> dict:
    d, inputs = plan["decision"], plan["inputs"]
    if d["kind"] == "train":
        from planner.planning import evaluate_train

        w = inputs["workload"]
        return evaluate_train(graph, cluster, d, w["batch"], w["seq_len"], inputs["dtype"])
    from planner.plan_infer import evaluate_inference

    return evaluate_inference(graph, cluster, d, inputs["dtype"], inputs["workload"].get("rate"),
                              engine_profile=inputs.get("engine_profile"))


def _agreement(plan: dict, fresh: dict) -> list[str]:
    problems = []
    predicted = plan["predicted"]
    for key in _AGREE:
        a, b = predicted.get(key), fresh.get(key)
        if a is None and b is None:
            continue
        if a is None or b is None or not math.isclose(float(a), float(b), rel_tol=1e-6):
            problems.append(f"predicted {key} {a} disagrees with the cost model's {b}")
    if not fresh.get("fits", True):
        problems.append(f"memory does not fit: {fresh.get('memory_per_device_bytes', 0) / 1e9:.1f} GB on the "
                        f"fullest device")
    for i, (m, c) in enumerate(zip(fresh.get("stage_memory_bytes", []), fresh.get("stage_capacity_bytes", []))):
        if m > c:
            problems.append(f"stage {i} needs {m / 1e9:.1f} GB, its devices hold {c / 1e9:.1f} GB")
    return problems


def verify_plan(plan: dict) -> list[str]:
    """Problems found in `plan` (a dict as written by `planner plan`); empty when it holds."""
    import planner

    if plan.get("format") != PLAN_FORMAT:
        return [f"format {plan.get('format')!r} is not {PLAN_FORMAT!r}"]
    problems = []
    if plan.get("fingerprint") != fingerprint(plan["inputs"]):
        problems.append("fingerprint does not match the plan's inputs (edited after planning?)")
    if plan.get("decision", {}).get("kind") == "fleet":
        from planner.plan_fleet import verify_fleet

        return problems + verify_fleet(plan)
    inputs = plan["inputs"]
    cluster = parse_cluster(inputs["cluster"])
    workload = inputs["workload"]
    seq = workload.get("seq_len") or min(workload.get("input_len") or 2048, 8192)
    graph = planner.capture(inputs["model"], seq_len=seq, dtype="bf16" if inputs["dtype"] == "fp8" else inputs["dtype"])
    problems += _structure(plan, graph, cluster)
    problems += _degrees(plan, graph)
    if problems:
        return problems
    try:
        fresh = _recompute(plan, graph, cluster)
    except UserError as exc:
        return [f"the cost model rejects the decision: {exc}"]
    problems = _agreement(plan, fresh)
    if "memory_map" in plan:
        from passes.memory_mapping import verify_memory_map

        problems += verify_memory_map(plan["memory_map"])
    return problems
