"""`planner verify`: an independent check of a plan, recomputed from its inputs.

Checks: the schema (on reading, `ir.plan`) and the fingerprint of the inputs; the stages' structure
(`planner.plan_checks`); the rules of its workload kind (the strategy's `check`: batch split, expert
parallelism and pipeline schedule for training; a fleet's solution against its recorded profile);
memory that fits on every stage; the predicted metrics against a fresh evaluation by the cost model
(the strategy's `evaluate`, on a freshly captured graph); the memory map's arenas.
"""

from __future__ import annotations

import math

from cost_models.cluster import parse_cluster
from ir.errors import UserError
from ir.plan import Plan, fingerprint
from ir.records import to_json
from passes.memory_mapping import verify_memory_map
from passes.strategies import strategy_of_plan
from passes.strategy import Request
from planner.pipeline import graph_for
from planner.plan_checks import structure_problems

_AGREE = ("step_time_s", "tokens_per_s", "memory_per_device_bytes", "latency_s", "tpot_s", "ttft_s",
          "output_tokens_per_s", "slo_attainment", "ttft_p90_s", "tpot_p90_s", "mfu", "tflops_per_device",
          "max_batch", "energy_per_token_j", "dollars_per_hour", "bubble_fraction")
ATTAINMENT = 0.9  # a serving plan's share of requests meeting the SLO at its reported rate (goodput's definition)


def _request(plan: Plan, trust_model_code: bool) -> Request:
    """The question a plan answered, as far as capture needs it: the recorded model (never the file or code
    its reference names), workload kind and lengths, dtype."""
    i, w = plan.inputs, plan.inputs.workload
    return Request(i.model, i.cluster, w.kind, dtype=i.dtype, seq_len=w.seq_len or None,
                   input_len=w.input_len or None, output_len=w.output_len or None,
                   model_source=to_json(i.model_source), trust_model_code=trust_model_code)


def _agreement(predicted: dict, fresh: dict) -> list[str]:
    problems = []
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


def verify_plan(plan: Plan | dict, *, trust_model_code: bool = False) -> list[str]:
    """Problems found in `plan` (a Plan, or its JSON form: a value the schema refuses is the first problem);
    empty when it holds. A plan whose model is Python code is recomputed only with `trust_model_code`
    (else a UserError says how)."""
    if not isinstance(plan, Plan):
        try:
            plan = Plan.from_json(plan)
        except UserError as exc:
            return [str(exc)]
    data = plan.to_json()
    problems = []
    if plan.fingerprint != fingerprint(plan.inputs):
        problems.append("fingerprint does not match the plan's inputs (edited after planning?)")
    strategy = strategy_of_plan(plan.kind, getattr(plan.decision, "phase", None))
    if plan.kind == "fleet":
        return problems + strategy.check(None, None, data)
    cluster = parse_cluster(plan.inputs.cluster)
    graph = graph_for(strategy, _request(plan, trust_model_code))
    problems += structure_problems(data, graph, cluster)
    problems += strategy.check(graph, cluster, data) if not problems else []
    if problems:
        return problems
    try:
        fresh = strategy.evaluate(graph, cluster, data)
    except UserError as exc:
        return [f"the cost model rejects the decision: {exc}"]
    problems = _agreement(data["predicted"], fresh)
    attained = data["predicted"].get("slo_attainment")
    if attained is not None and attained < ATTAINMENT:
        problems.append(f"SLO attainment {attained:.1%} is below {ATTAINMENT:.0%}: the plan does not meet its SLO "
                        f"at its reported rate")
    if "memory_map" in data:
        problems += verify_memory_map(data["memory_map"])
    return problems
