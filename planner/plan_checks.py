"""Structural checks of a plan's stages, shared by the pipeline (as a plan is made) and `planner verify`:
every layer placed exactly once in contiguous, non-empty stages (pp of them; with interleaved 1F1B, pp x v
chunks dealt round-robin: chunk c of stage s is the (c * pp + s)-th range in model order); ranks exist,
each used once, a TP group on one node, on the device its stage names; positive degrees that divide the
model (tp and heads, pp and blocks).
"""

from __future__ import annotations

from cost_models.cluster import MAX_DEVICES
from passes.serving_strategy import FINAL_REQUESTS_MAX
from planner.input_bounds import COUNT_LIMITS, MAX_RATE, MAX_VIRTUAL_STAGES


def structure_problems(plan: dict, graph, cluster) -> list[str]:
    """Problems of the plan's (JSON form) stages and degrees against `graph` and `cluster`; empty when they hold."""
    d = plan["decision"]
    problems = _positive(d)
    if problems:
        return problems
    stages = d.get("stages") or []
    if len(stages) != d.get("pp"):
        problems.append(f"decision has pp={d.get('pp')} but {len(stages)} stages")
    problems += _layer_cover(d, stages, len(graph.layers))
    problems += _ranks(d, stages, cluster)
    return problems + _degrees(d, graph)


def bound_problems(plan: dict) -> list[str]:
    """Sizes and counts within the planner's input bounds (`planner.input_bounds`), so that nothing a plan file
    says can make verification run without end: the workload, the decision's degrees and microbatching, the
    number of stages and ranks, a serving section's simulated requests."""
    w, d, problems = plan["inputs"]["workload"], plan["decision"], []
    for key in ("batch", "seq_len", "input_len", "output_len"):
        if isinstance(w.get(key), int) and not 0 <= w[key] <= COUNT_LIMITS[key]:
            problems.append(f"inputs.workload.{key} {w[key]:,} is outside [0, {COUNT_LIMITS[key]:,}]")
    if isinstance(w.get("rate"), (int, float)) and not 0 < w["rate"] <= MAX_RATE:
        problems.append(f"inputs.workload.rate {w['rate']} is outside (0, {MAX_RATE:g}]")
    limits = {"dp": MAX_DEVICES, "pp": MAX_DEVICES, "ep": MAX_DEVICES, "batch": COUNT_LIMITS["batch"],
              "microbatch_size": COUNT_LIMITS["batch"], "microbatches": COUNT_LIMITS["batch"],
              "virtual_stages": MAX_VIRTUAL_STAGES, "input_len": COUNT_LIMITS["input_len"],
              "output_len": COUNT_LIMITS["output_len"]}
    problems += [f"decision.{k} {d[k]:,} is above {limit:,}" for k, limit in limits.items()
                 if isinstance(d.get(k), int) and d[k] > limit]
    tps = d.get("tp") if isinstance(d.get("tp"), (list, tuple)) else [d.get("tp")]
    stages = d.get("stages") or []
    if any(isinstance(t, int) and t > MAX_DEVICES for t in tps) or len(stages) > MAX_DEVICES or \
            any(s.get("tp", 1) > MAX_DEVICES or len(s.get("ranks", [])) > MAX_DEVICES for s in stages):
        problems.append(f"decision has more than {MAX_DEVICES:,} ranks, stages or tp")
    serving = d.get("serving") if isinstance(d.get("serving"), dict) else {}
    if isinstance(serving.get("requests"), int) and not 0 < serving["requests"] <= FINAL_REQUESTS_MAX:
        problems.append(f"decision.serving.requests {serving['requests']:,} is outside (0, {FINAL_REQUESTS_MAX:,}]")
    return problems


def _positive(d: dict) -> list[str]:
    keys = ("dp", "pp", "ep", "microbatch_size", "microbatches", "virtual_stages", "batch", "input_len")
    bad = [f"{k}={d[k]}" for k in keys if isinstance(d.get(k), int) and d[k] < 1]
    tps = d.get("tp") if isinstance(d.get("tp"), (list, tuple)) else [d.get("tp")]
    bad += [f"tp={t}" for t in tps if isinstance(t, int) and t < 1]
    bad += [f"stage {s.get('stage')} tp={s.get('tp')}" for s in d.get("stages") or [] if s.get("tp", 1) < 1]
    return [f"degrees must be positive: {', '.join(bad)}"] if bad else []


def _ranks(d: dict, stages: list[dict], cluster) -> list[str]:
    problems, seen = [], {}
    for s in stages:
        if len(s["ranks"]) != d["dp"]:
            problems.append(f"stage {s['stage']} has {len(s['ranks'])} data-parallel replicas, dp is {d['dp']}")
        for group in s["ranks"]:
            if len(group) != s["tp"]:
                problems.append(f"stage {s['stage']} has a TP group of {len(group)} ranks, tp is {s['tp']}")
            nodes = set()
            for rank in group:
                if not 0 <= rank < cluster.num_devices:
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


def _degrees(d: dict, graph) -> list[str]:
    problems, cfg = [], graph.config
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
    return problems
