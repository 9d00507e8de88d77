"""Training strategy: search dp x per-group tp x pp (ep, microbatching, recomputation, ZeRO, schedule)
with `passes.parallelism` (layer grouping by exact DP or CP-SAT), place stages on ranks
(`passes.placement`) and price the chosen layouts with `cost_models.estimate_train`.

`evaluate_train` is the independent recomputation `verify` runs on a recorded decision.
"""

from __future__ import annotations

import itertools
import math

from cost_models.estimate_context import make_context
from cost_models.estimate_train import train_step
from cost_models.memory import ADAM_BYTES_PER_PARAM, reserve_bytes
from cost_models.parallel_config import Options
from cost_models.pipeline_schedule import rank_chunks
from cost_models.uncertainty import band_for
from ir.errors import UserError
from passes.memory_mapping import memory_map_for_plan
from passes.parallelism import TrainCandidate, search_training
from passes.placement import place
from passes.strategy import CaptureShape, Outcome, Problem, Request
from passes.training_offload import training_offload


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
    """Predicted metrics of a training decision (used by the search and, independently, by `verify`)."""
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
        "memory_margin_bytes": {k: int(v) for k, v in (r.get("memory_margin") or {}).items()},
        "uncertainty": band_for("train", ctxs[0].device.kind),
    }


def train_decision(graph, cluster, cand: TrainCandidate) -> dict:
    """The plan's decision for a searched candidate: degrees, schedule and each stage's layers and ranks."""
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


class TrainingStrategy:
    """`--workload train` on one cluster (mixed GPU types allowed)."""

    name = "train"
    top_k = 5

    def capture_shape(self, request: Request) -> CaptureShape:
        return CaptureShape(request.seq_len, "bf16" if request.dtype == "fp8" else request.dtype)

    def prepare(self, request: Request, graph) -> Problem:
        from cost_models.cluster import parse_cluster

        if request.engine_profile:
            raise UserError("--engine-profile prices serving iterations; training plans use the cost model")
        cluster = parse_cluster(request.cluster_spec)
        batch, seq = default_train_shape(graph, cluster, request.batch, request.seq_len)
        objective = request.objective or "throughput"
        inputs = {"workload": {"kind": "train", "batch": batch, "seq_len": seq}, "objective": objective,
                  "fixed": request.fixed, "dtype": request.dtype}
        return Problem(request, cluster, objective, inputs, {"batch": batch, "seq": seq})

    def costs(self, graph, problem: Problem):
        return None  # per-layout contexts are built and cached by the search (passes.parallelism._Evaluator)

    def propose(self, graph, problem: Problem, costs) -> list:
        return []  # layouts are enumerated inside the search so that it can prune them by lower bounds

    def search(self, graph, problem: Problem, costs, candidates: list) -> Outcome:
        request, cluster = problem.request, problem.cluster
        batch, seq, dtype = problem.shape["batch"], problem.shape["seq"], request.dtype
        warm = request.warm
        warm_decision = warm.decision.to_json() if warm is not None and warm.inputs.model == request.model \
            and warm.kind == "train" else None
        result = search_training(graph, cluster, batch=batch, seq=seq, dtype=dtype, fixed=request.fixed,
                                 top_k=self.top_k, warm=warm_decision)
        if not result.ranked:
            offload = training_offload(graph, cluster, batch=batch, seq=seq, dtype=dtype) if cluster.is_homogeneous \
                else None
            suffix = f"; {offload['message']}" if offload and offload["fits"] else ""
            raise UserError(_infeasible_message(graph, cluster, result) + suffix)
        evaluated = []
        for cand in result.ranked:
            decision = train_decision(graph, cluster, cand)
            evaluated.append((cand, decision, evaluate_train(graph, cluster, decision, batch, seq, dtype)))
        key = (lambda e: e[2]["dollars_per_million_tokens"] or e[2]["step_time_s"]) if problem.objective == "cost" \
            else (lambda e: e[2]["step_time_s"])
        evaluated.sort(key=lambda e: (key(e), e[0].label()))
        best, decision, predicted = evaluated[0]
        baselines = {}
        for name, cand in (("uniform_split_same_tp", result.uniform_best),
                           ("uniform_split_any_tp", result.uniform_per_group_tp)):
            if cand is not None:
                bpred = evaluate_train(graph, cluster, train_decision(graph, cluster, cand), batch, seq, dtype)
                baselines[name] = {"layout": cand.label(), "tokens_per_s": bpred["tokens_per_s"],
                                   "speedup_of_plan": predicted["tokens_per_s"] / bpred["tokens_per_s"]}
        gap = None if best.bound_us is None or not best.grouping_us else \
            max(best.grouping_us - best.bound_us, 0) / best.grouping_us
        # the plan's status is the weakest of its parts: every layout's grouping exact, and the search complete
        status = "interrupted" if result.interrupted else "optimal" if result.exact else "feasible"
        solver = {"grouping": best.solver, "status": status, "grouping_status": best.status,
                  "objective_us": best.grouping_us,
                  "bound_us": best.bound_us, "gap": gap, "step_objective_us": best.objective_us,
                  "candidates_evaluated": result.evaluated, "interrupted": result.interrupted,
                  "candidates_pruned": result.pruned, "warm_start": result.warm_start}
        return Outcome(decision, predicted, solver, _binding(predicted, decision, batch),
                       alternatives=[{"layout": c.label(), "tokens_per_s": p["tokens_per_s"],
                                      "step_time_s": p["step_time_s"],
                                      "slower_by": p["step_time_s"] / predicted["step_time_s"] - 1}
                                     for c, _, p in evaluated[1:]],
                       baselines=baselines)

    def memory_map(self, graph, problem: Problem, plan_json: dict) -> dict:
        return memory_map_for_plan(plan_json, graph, problem.cluster)

    def evaluate(self, graph, cluster, plan_json: dict) -> dict:
        w = plan_json["inputs"]["workload"]
        return evaluate_train(graph, cluster, plan_json["decision"], w["batch"], w["seq_len"], plan_json["inputs"]["dtype"])

    def check(self, graph, cluster, plan_json: dict) -> list[str]:
        """Training rules: the batch splits into dp x microbatch x microbatches, known recomputation and ZeRO,
        ep divides the experts and dp, and the pipeline schedule can run."""
        from cost_models.pipeline_schedule import schedule_problem

        d, problems = plan_json["decision"], []
        batch = plan_json["inputs"]["workload"]["batch"]
        if d["dp"] * d["microbatch_size"] * d["microbatches"] != batch:
            problems.append(f"dp {d['dp']} x microbatch {d['microbatch_size']} x {d['microbatches']} microbatches "
                            f"!= batch {batch}")
        problems += _expert_parallel(d, graph.config.get("num_experts") or 0)
        blocks = sum(1 for layer in graph.layers if layer.kind == "block")
        problem = schedule_problem(d.get("schedule", "1f1b"), d.get("pp", 1), d["microbatches"],
                                   d.get("virtual_stages", 1), blocks)
        return problems + ([problem] if problem else [])


def _expert_parallel(d: dict, experts: int) -> list[str]:
    """Training ep: a positive integer dividing the experts and dp (ep ranks are dp replicas)."""
    ep = d.get("ep", 1)
    if ep == 1:
        return []
    problems = []
    if not experts or experts % ep:
        problems.append(f"ep={ep} does not divide the {experts} experts of the model")
    if d["dp"] % ep:
        problems.append(f"ep={ep} does not divide dp={d['dp']} (expert-parallel ranks are data-parallel replicas)")
    return problems
