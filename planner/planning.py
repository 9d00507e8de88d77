"""`planner plan`: choose parallelism, layer grouping and placement for a workload, and write the
Plan. Training plans come from `passes.parallelism` (+ `passes.layer_grouping`, `passes.placement`);
inference and serving plans from `planner.plan_infer`.

The pipeline of passes for training, in order:
  1. capture (ir.capture)                      the graph, blocks shared
  2. parallelism (passes.parallelism)          enumerate + prune layouts, group layers per layout
  3. layer grouping (passes.layer_grouping*)   exact DP, CP-SAT for heterogeneous stages
  4. placement (passes.placement)              stages and TP/DP groups onto ranks
  5. evaluation (cost_models.estimate_train)   predicted metrics of the chosen plan
"""

from __future__ import annotations

import itertools
import logging
import math
import time

from cost_models.cluster import DEFAULT_CLUSTER, parse_cluster
from cost_models.estimate_context import make_context
from cost_models.estimate_train import train_step
from cost_models.memory import ADAM_BYTES_PER_PARAM, reserve_bytes
from cost_models.parallel_config import Options
from cost_models.pipeline_schedule import rank_chunks
from cost_models.uncertainty import band_for
from ir.errors import UserError
from passes.memory_mapping import memory_map_for_plan, verify_memory_map
from passes.parallelism import TrainCandidate, search_training
from passes.placement import place
from planner.plan_file import PLAN_FORMAT, Plan, fingerprint

log = logging.getLogger(__name__)

TRAIN_WORKLOADS = ("train",)
VERSION = "0.1.0"


def default_train_shape(graph, cluster, batch: int | None, seq_len: int | None) -> tuple[int, int]:
    """Global batch: 8 sequences per device, a power of two in [32, 2048]; sequence: min(4096, max)."""
    limit = graph.config.get("max_position_embeddings") or 4096
    seq = seq_len or min(4096, limit)
    if batch is None:
        batch = 2 ** round(math.log2(max(32, min(2048, 8 * cluster.num_devices))))
    return batch, seq


def _stage_ctxs(graph, cluster, decision: dict, batch: int, seq: int, dtype: str):
    devices = {node.device.name: node.device for node in cluster.nodes}
    ctxs = []
    for stage in decision["stages"]:
        if stage["device"] not in devices:
            raise UserError(f"plan stage {stage['stage']} uses device {stage['device']} that cluster "
                            f"{cluster.name} does not have")
        options = Options(tp=stage["tp"], pp=decision["pp"], dp=decision["dp"], batch=batch, input_len=seq,
                          microbatch_size=decision["microbatch_size"], recompute=decision["recompute"],
                          zero_stage=decision["zero_stage"], dtype=dtype, ep=int(decision.get("ep", 1)),
                          ep_over_dp=True, schedule=decision.get("schedule", "1f1b"),
                          virtual_stages=int(decision.get("virtual_stages", 1)),
                          sequence_parallel=bool(decision.get("sequence_parallel")) and stage["tp"] > 1)
        ctxs.append(make_context(graph, cluster, options, device=devices[stage["device"]]))
    return ctxs


def evaluate_train(graph, cluster, decision: dict, batch: int, seq: int, dtype: str) -> dict:
    """Predicted metrics of a training decision (used by `plan` and, independently, by `verify`)."""
    ctxs = _stage_ctxs(graph, cluster, decision, batch, seq, dtype)
    stages = [tuple(s["layers"]) for s in decision["stages"]]
    links = []
    for a, b in itertools.pairwise(decision["stages"]):
        link = cluster.link_between(a["ranks"][0][0], b["ranks"][0][0])
        links.append((link.pair_bandwidth_bytes_per_s, link.latency_s))
    chunks = [[tuple(c) for c in s["chunks"]] for s in decision["stages"]] if decision.get("virtual_stages", 1) > 1 else None
    r = train_step(ctxs[0], stages=stages, stage_ctxs=ctxs, links=links, chunks=chunks)
    step = r["step_time_s"]
    devices = decision["dp"] * sum(s["tp"] for s in decision["stages"])
    peak = sum(c.device.peak_flops_for(dtype) * s["tp"] * decision["dp"] for c, s in zip(ctxs, decision["stages"]))
    price = sum((c.device.price_per_hour or 0.0) * s["tp"] * decision["dp"] for c, s in zip(ctxs, decision["stages"]))
    tokens_per_s = batch * seq / step
    return {
        "step_time_s": step, "tokens_per_s": tokens_per_s, "tflops_per_device": r["flops"] / step / devices / 1e12,
        "mfu": r["flops"] / step / peak, "fits": r["fits_all"], "devices": devices,
        "memory_per_device_bytes": int(max(sum(m.values()) for m in r["stage_memory"])),
        "stage_memory_bytes": [int(sum(m.values())) for m in r["stage_memory"]],
        "stage_capacity_bytes": [int(c.capacity_bytes) for c in ctxs],
        "stage_times_s": r["stage_times_s"], "breakdown": r["breakdown"],
        "bubble_fraction": r["bubble_fraction"], "dollars_per_hour": price or None,
        "dollars_per_million_tokens": price / 3600 / tokens_per_s * 1e6 if price else None,
        "memory_breakdown_bytes": {k: int(v) for k, v in r["memory"].items()},
        "uncertainty": band_for("train", ctxs[0].device.kind),
    }


def _decision(graph, cluster, cand: TrainCandidate) -> dict:
    stage_groups = [(g.group, g.device, g.tp) for g in cand.groups for _ in range(g.stages)]
    placements = place(cluster, cand.dp, stage_groups)
    stages = []
    # interleaved: cuts bound pp x v chunks dealt round-robin; `layers` is a rank's first chunk and
    # `chunks` lists all of its virtual stages in order (Megatron-LM's assignment)
    per_rank = rank_chunks(cand.cuts, cand.pp)
    for p, ranges in zip(placements, per_rank):
        (a, b) = ranges[0]
        stages.append({"stage": p.stage, "layers": [a, b], "first_layer": graph.layers[a].name,
                       "last_layer": graph.layers[b - 1].name, "device": p.device, "tp": p.tp,
                       "node_group": p.group, "ranks": [list(r) for r in p.ranks]})
        if cand.virtual_stages > 1:
            stages[-1]["chunks"] = [list(c) for c in ranges]
    tps = {s["tp"] for s in stages}
    return {"kind": "train", "dp": cand.dp, "tp": tps.pop() if len(tps) == 1 else [s["tp"] for s in stages],
            "pp": cand.pp, "ep": cand.ep, "microbatch_size": cand.microbatch_size, "microbatches": cand.microbatches,
            "schedule": cand.schedule, "virtual_stages": cand.virtual_stages, "recompute": cand.recompute,
            "zero_stage": cand.zero_stage, "sequence_parallel": cand.sequence_parallel, "stages": stages}


def _infeasible_message(graph, cluster, result) -> str:
    capacity = min(node.device.memory_bytes for node in cluster.nodes)
    kind = min(cluster.nodes, key=lambda n: n.device.memory_bytes).device
    usable = capacity - reserve_bytes(capacity, kind.kind)
    state = graph.param_count * (4 + ADAM_BYTES_PER_PARAM)
    per_device = state / cluster.num_devices
    need = math.ceil(state / max(usable, 1))
    line = (f"{graph.model} training does not fit on {cluster.describe()}: weights, gradients and Adam states "
            f"need {state / 1e9:,.0f} GB ({4 + ADAM_BYTES_PER_PARAM} B x {graph.param_count / 1e9:.1f}B params), "
            f"{per_device / 1e9:,.1f} GB per device even fully sharded (ZeRO-3) over {cluster.num_devices}; "
            f"a {kind.name} holds {capacity / 1e9:.0f} GB ({usable / 1e9:.1f} GB usable)")
    if result.tightest and result.tightest["kind"] != "training state":
        line = (f"{graph.model} training does not fit on {cluster.describe()}: the closest layout "
                f"({result.tightest['candidate']}) is {result.tightest['excess_bytes'] / 1e9:.1f} GB over "
                f"a {kind.name}'s {capacity / 1e9:.0f} GB with state and activations")
    return line + f"; smallest change: at least {need} x {kind.name} (or devices with more memory)"


def _binding(pred: dict, decision: dict, batch: int) -> list[str]:
    out = []
    fill = [m / c for m, c in zip(pred["stage_memory_bytes"], pred["stage_capacity_bytes"])]
    k = fill.index(max(fill))
    out.append(f"memory: stage {k} ({decision['stages'][k]['device']}) uses "
               f"{pred['stage_memory_bytes'][k] / 1e9:.1f} of {pred['stage_capacity_bytes'][k] / 1e9:.1f} GB "
               f"({fill[k]:.0%}){' - binding' if fill[k] > 0.9 else ''}")
    times = pred["stage_times_s"]
    s = times.index(max(times))
    out.append(f"time: stage {s} is the slowest at {times[s] * 1e3:.2f} ms per microbatch "
               f"(fastest {min(times) * 1e3:.2f} ms); pipeline bubble {pred['bubble_fraction']:.1%}")
    out.append(f"batch: {batch} sequences = dp {decision['dp']} x microbatch {decision['microbatch_size']} "
               f"x {decision['microbatches']} microbatches")
    return out


def plan_training(model_ref: str, graph, cluster, cluster_spec: str, *, batch: int | None, seq_len: int | None,
                  dtype: str, objective: str, fixed: dict, top_k: int = 5, warm_start: dict | None = None) -> Plan:
    """Search, place and evaluate a training plan (see the module docstring); `warm_start` is a previous
    training plan whose layout the search evaluates first and whose cuts seed CP-SAT."""
    batch, seq = default_train_shape(graph, cluster, batch, seq_len)
    started = time.perf_counter()
    warm = (warm_start or {}).get("decision") if (warm_start or {}).get("inputs", {}).get("model") == model_ref else None
    result = search_training(graph, cluster, batch=batch, seq=seq, dtype=dtype, fixed=fixed, top_k=top_k, warm=warm)
    if not result.ranked:
        from passes.training_offload import training_offload

        offload = training_offload(graph, cluster, batch=batch, seq=seq, dtype=dtype) if cluster.is_homogeneous else None
        suffix = f"; {offload['message']}" if offload and offload["fits"] else ""
        raise UserError(_infeasible_message(graph, cluster, result) + suffix)
    inputs = {"model": model_ref, "cluster": cluster_spec, "workload": {"kind": "train", "batch": batch,
              "seq_len": seq}, "objective": objective, "fixed": fixed, "dtype": dtype, "planner_version": VERSION}
    evaluated = []
    for cand in result.ranked:
        decision = _decision(graph, cluster, cand)
        evaluated.append((cand, decision, evaluate_train(graph, cluster, decision, batch, seq, dtype)))
    key = (lambda e: e[2]["dollars_per_million_tokens"] or e[2]["step_time_s"]) if objective == "cost" else (
        lambda e: e[2]["step_time_s"])
    evaluated.sort(key=lambda e: (key(e), e[0].label()))
    best, decision, predicted = evaluated[0]
    baselines = {}
    for name, cand in (("uniform_split_same_tp", result.uniform_best), ("uniform_split_any_tp", result.uniform_per_group_tp)):
        if cand is not None:
            bpred = evaluate_train(graph, cluster, _decision(graph, cluster, cand), batch, seq, dtype)
            baselines[name] = {"layout": cand.label(), "tokens_per_s": bpred["tokens_per_s"],
                               "speedup_of_plan": predicted["tokens_per_s"] / bpred["tokens_per_s"]}
    gap = None if best.bound_us is None or not best.grouping_us else max(best.grouping_us - best.bound_us, 0) / best.grouping_us
    data = {
        "format": PLAN_FORMAT, "inputs": inputs, "fingerprint": fingerprint(inputs), "model_name": graph.model,
        "cluster_description": cluster.describe(), "decision": decision, "predicted": predicted,
        "solver": {"grouping": best.solver, "status": best.status, "objective_us": best.grouping_us,
                   "bound_us": best.bound_us, "gap": gap, "step_objective_us": best.objective_us,
                   "candidates_evaluated": result.evaluated, "interrupted": result.interrupted,
                   "candidates_pruned": result.pruned, "warm_start": result.warm_start},
        "alternatives": [{"layout": c.label(), "tokens_per_s": p["tokens_per_s"], "step_time_s": p["step_time_s"],
                          "slower_by": p["step_time_s"] / predicted["step_time_s"] - 1} for c, _, p in evaluated[1:]],
        "baselines": baselines, "binding_constraints": _binding(predicted, decision, batch),
    }
    data["memory_map"] = memory_map_for_plan(data, graph, cluster)
    broken = verify_memory_map(data["memory_map"])
    if broken:  # every plan's arenas are checked as it is made; a failure here is a planner bug
        raise RuntimeError(f"memory map of the plan does not verify: {broken[0]}")
    return Plan(data, search_time_s=time.perf_counter() - started)


def _plan_dict(plan) -> dict | None:
    return plan.to_dict() if hasattr(plan, "to_dict") else plan


def _fixed_pipeline(schedule: str | None, virtual_stages: int | None, sequence_parallel: bool | None) -> dict:
    """Pinned pipeline schedule, virtual stages and sequence parallelism (training), checked."""
    from cost_models.pipeline_schedule import SCHEDULES

    if schedule is not None and schedule not in SCHEDULES:
        raise UserError(f"unknown pipeline schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")
    if virtual_stages is not None and (not isinstance(virtual_stages, int) or virtual_stages < 1):
        raise UserError(f"--virtual-stages must be a positive integer, got {virtual_stages!r}")
    if virtual_stages not in (None, 1) and schedule not in (None, "interleaved"):
        raise UserError(f"virtual stages ({virtual_stages}) need the interleaved schedule, not {schedule}")
    fixed = {"schedule": "interleaved" if virtual_stages not in (None, 1) else schedule,
             "virtual_stages": virtual_stages, "sequence_parallel": sequence_parallel}
    return {k: v for k, v in fixed.items() if v is not None}


def plan(model, cluster=None, workload: str = "chat", *, objective: str | None = None, batch: int | None = None,
         seq_len: int | None = None, rate: float | None = None, slo: dict | None = None, tp: int | None = None,
         pp: int | None = None, dp: int | None = None, ep: int | None = None, dtype: str = "bf16",
         input_len: int | None = None, output_len: int | None = None, warm_start=None, schedule: str | None = None,
         virtual_stages: int | None = None, sequence_parallel: bool | None = None,
         engine_profile: str | None = None) -> Plan:
    """Plan `model` on `cluster` for `workload` (train, prefill, decode, chat, summarize, code).

    `warm_start`: a previous Plan (or plan dict) whose layout the search evaluates first (`Plan.retarget`).
    `engine_profile`: serving only, a measured engine profile (name or YAML, `cost_models.serving.engine_profile`)
    that prices every iteration instead of the cost model, e.g. "vllm-0.2-a100-80gb"; or one per kind of
    deployment, "colocated=vllm-0.2-a100-80gb,disaggregated=distserve-a100-80gb" (a kind left out: the cost model).

    >>> p = plan("tiny-llama", "4xcpu", "train", batch=8, seq_len=64)
    >>> p.decision["dp"] * p.decision["pp"] * p.decision["tp"] == 4, p.verify()
    (True, [])
    """
    import planner

    cluster_spec = str(cluster) if cluster is not None else DEFAULT_CLUSTER
    if "," in cluster_spec:  # a list of GPU types to buy from: the cheapest serving fleet (planner.plan_fleet)
        from planner.plan_fleet import plan_fleet

        if workload in TRAIN_WORKLOADS or workload in ("prefill", "decode") or any((tp, pp, dp, ep)):
            raise UserError(f"a list of GPU types (--cluster {cluster_spec!r}) plans a serving fleet: use a serving "
                            "--workload (chat, summarize, code or a trace .csv) with --rate, without --tp/--pp/--dp/--ep")
        return plan_fleet(str(model), cluster_spec, workload, rate=rate, slo=slo or {}, dtype=dtype, objective=objective)
    cluster_obj = parse_cluster(cluster_spec)
    fixed = {k: v for k, v in (("tp", tp), ("pp", pp), ("dp", dp), ("ep", ep)) if v is not None}
    for name, value in fixed.items():
        if not isinstance(value, int) or value < 1:
            raise UserError(f"--{name} must be a positive integer, got {value!r}")
    if workload in TRAIN_WORKLOADS:
        if engine_profile:
            raise UserError("--engine-profile prices serving iterations; training plans use the cost model")
        fixed.update(_fixed_pipeline(schedule, virtual_stages, sequence_parallel))
        graph = planner.capture(model, seq_len=seq_len, dtype="bf16" if dtype == "fp8" else dtype)
        return plan_training(str(model), graph, cluster_obj, cluster_spec, batch=batch, seq_len=seq_len,
                             dtype=dtype, objective=objective or "throughput", fixed=fixed,
                             warm_start=_plan_dict(warm_start))
    from planner.plan_infer import plan_inference

    return plan_inference(str(model), cluster_obj, cluster_spec, workload, objective=objective, batch=batch,
                          seq_len=seq_len, rate=rate, slo=slo or {}, fixed=fixed, dtype=dtype,
                          input_len=input_len, output_len=output_len, warm_start=_plan_dict(warm_start),
                          engine_profile=engine_profile)
