"""`planner verify`'s checks of inference decisions: a prefill/decode decision is rebuilt from its layout and
compared whole; a serving deployment's unit must be one the planner considers on that cluster (its engine
limits: tp within a node and dividing the heads, a KV cache that holds a median request, a chunk budget
the search offers), and its decision and `serving` section are rebuilt from that unit and compared whole;
the derived numbers (GPUs used, goodput, goodput per GPU) are recomputed, and the goodput a rate target
relies on is re-simulated on one unit.
"""

from __future__ import annotations

import re

from cost_models.serving.capacity import MAX_UTILIZATION
from cost_models.serving.deployment import costs_for, simulate
from cost_models.serving.metrics import ATTAINMENT, MAX_QUEUE_GROWTH, attainment, is_sustainable
from passes.inference_strategy import batch_engines, evaluate_estimate, inference_decision, inference_layouts
from passes.serving_candidates import serving_candidates
from passes.serving_evaluate import base_workload
from passes.serving_search import SERVE_REQUESTS, SERVE_SEED, GoodputSearch, horizon_s, requests_at
from passes.serving_strategy import FINAL_REQUESTS_MAX, serving_decision, serving_record
from planner.verify_claims import differences, jsonable

_LAYOUT = re.compile(r"^tp=(\d+) pp=(\d+) dp=(\d+)$")


def estimate_problems(graph, cluster, plan_json: dict, problem) -> list[str]:
    """Prefill/decode: the decision is the one its layout gives (stages from the estimator), the search counted
    every layout, and each runner-up's numbers are the estimator's."""
    d, pred, shape = plan_json["decision"], plan_json["predicted"], problem.shape
    stages = [tuple(s) for s in pred.get("stages") or []]
    fresh = inference_decision(graph, cluster, shape["phase"], d["tp"], d["pp"], d["dp"], shape["batch"],
                               shape["input_len"], shape["output_len"], stages)
    fresh["engines"] = batch_engines(graph, cluster, problem.request.dtype, d["tp"], d["pp"], d["dp"], shape["batch"],
                                     shape["input_len"], shape["output_len"])
    problems = differences(d, jsonable(fresh), "decision", "the layout's")
    layouts = list(inference_layouts(graph, cluster, problem.request.fixed))
    solver = plan_json["solver"]
    if solver["candidates_evaluated"] != len(layouts):
        problems.append(f"solver.candidates_evaluated {solver['candidates_evaluated']} is not the {len(layouts)} "
                        f"layouts of {graph.model} on this cluster")
    if not 0 <= solver["candidates_pruned"] < max(solver["candidates_evaluated"], 1):
        problems.append(f"solver.candidates_pruned {solver['candidates_pruned']} is not below the candidates evaluated")
    return problems + _alternatives(graph, cluster, plan_json, layouts)


def _alternatives(graph, cluster, plan_json: dict, layouts) -> list[str]:
    problems, dtype, rate = [], plan_json["inputs"]["dtype"], plan_json["inputs"]["workload"].get("rate")
    d = plan_json["decision"]
    for i, alt in enumerate(plan_json.get("alternatives") or []):
        match = _LAYOUT.match(alt["layout"])
        layout = tuple(int(x) for x in match.groups()) if match else None
        if layout not in layouts or layout == (d["tp"], d["pp"], d["dp"]):
            problems.append(f"alternatives[{i}].layout {alt['layout']!r} is not another layout of this cluster")
            continue
        r = evaluate_estimate(graph, cluster, {**d, "tp": layout[0], "pp": layout[1], "dp": layout[2]}, dtype, rate)
        fresh = {k: r.get(k) for k in ("latency_s", "tpot_s", "output_tokens_per_s", "tokens_per_s")}
        problems += differences({k: alt.get(k) for k in fresh}, jsonable(fresh), f"alternatives[{i}]", "the estimator's")
    return problems


def serving_problems(graph, cluster, plan_json: dict, problem) -> tuple[list[str], dict]:
    """(problems, derived predictions) of a serving decision: its unit is one the planner considers, its decision
    and serving section are what that unit and its count give, and the derived goodput numbers."""
    d, s = plan_json["decision"], plan_json["decision"]["serving"]
    request, shape = problem.request, problem.shape
    costs = costs_for(graph, cluster, request.dtype, request.engine_profile)
    sample = base_workload(shape["source"], SERVE_REQUESTS, SERVE_SEED, shape["context"])
    horizon = horizon_s(shape["slo"], float(sample.output_tokens.mean()))  # seconds of arrivals a goodput is judged on
    candidates = serving_candidates(graph, cluster, costs, request.fixed, sample)
    problems = _search_report(plan_json["solver"], candidates)
    unit = next((c for c in candidates if c.describe() == s["unit"]), None)
    if unit is None:
        return [*problems, f"decision.serving.unit {s['unit']!r} is not a deployment the planner considers for "
                           f"{graph.model} on {cluster.describe()} (tp within a node and dividing the heads, a KV "
                           f"cache holding a median request, the chunk budgets it searches)"], {}
    k, rate = s["units"], s["rate_rps"]
    if k < 1 or unit.ranks_needed(k) > cluster.num_devices:
        return [*problems, f"decision.serving.units {k} x {unit.describe()} does not fit the cluster's "
                           f"{cluster.num_devices} devices"], {}
    fresh = serving_decision(graph, cluster, unit, k, shape["batch"], shape["input_len"], shape["output_len"],
                             request.dtype)
    requests = min(requests_at(rate / k, horizon) * k, FINAL_REQUESTS_MAX)
    fresh["serving"] = serving_record(unit, k, shape, requests, rate, cluster, costs)
    problems += differences(d, jsonable(fresh), "decision", "the deployment's")
    derived, why = _goodput(plan_json, unit, k, GoodputSearch(costs, shape["source"], shape["slo"], shape["context"],
                                                              horizon))
    return problems + why, derived


def holds_problems(fresh: dict) -> list[str]:
    """A serving deployment holds at its rate (what the planner settles it to): 90% of requests within the SLO,
    a queue that does not grow, and the rate at most MAX_UTILIZATION of the saturated service rate."""
    problems = []
    if fresh.get("queue_growth") is not None and fresh["queue_growth"] > MAX_QUEUE_GROWTH:
        problems.append(f"the deployment's queue grows {fresh['queue_growth']:.3f} s per s at its reported rate (at most "
                        f"{MAX_QUEUE_GROWTH}): not a steady state")
    if fresh.get("saturation_rps") is not None and \
            fresh["rate_rps"] > MAX_UTILIZATION * fresh["saturation_rps"] * (1 + 1e-9):
        problems.append(f"the reported rate {fresh['rate_rps']:.4g} req/s is above {MAX_UTILIZATION:.0%} of the "
                        f"deployment's saturated rate {fresh['saturation_rps']:.4g} req/s")
    return problems


def _search_report(solver: dict, candidates) -> list[str]:
    """The search's size as recorded: its candidates, policies and layouts are the ones the planner proposes."""
    from passes.serving_evaluate import POLICY_NAMES

    fresh = {"candidates": len(candidates),
             "policies_considered": sorted({POLICY_NAMES[type(c.policy)] for c in candidates}),
             "layouts_considered": [list(t) for t in sorted({(c.tp, c.pp) for c in candidates if not c.disaggregated})]}
    problems = differences({k: solver.get(k) for k in fresh}, fresh, "solver", "the candidates':")
    if solver.get("candidates_evaluated", 0) + solver.get("candidates_pruned", 0) != solver.get("candidates"):
        problems.append("solver.candidates_evaluated + solver.candidates_pruned is not solver.candidates")
    if solver.get("simulations", 0) < solver.get("candidates_evaluated", 0):
        problems.append("solver.simulations is below the candidates evaluated (each takes at least one)")
    return problems


def _goodput(plan_json: dict, unit, k: int, search: GoodputSearch) -> tuple[dict, list[str]]:
    """GPUs used and goodput: without a rate target the deployment's goodput is the rate it was simulated at
    (re-simulated by `evaluate`); with one, the unit's goodput is re-checked as the search judged it: one unit at
    that rate keeps 90% of its requests within the SLO with a stable queue, at most MAX_UTILIZATION of its
    saturated service rate."""
    pred, rate = plan_json["predicted"], plan_json["inputs"]["workload"].get("rate")
    gpus = k * unit.gpus
    claimed = pred.get("goodput_rps")
    goodput = plan_json["decision"]["serving"]["rate_rps"] if rate is None else claimed
    derived = {"gpus_used": gpus, "goodput_rps": goodput}
    if isinstance(goodput, (int, float)) and goodput > 0:
        derived["goodput_per_gpu"] = goodput / gpus
    if rate is None or not isinstance(claimed, (int, float)):
        return derived, []
    if claimed < rate * (1 - 1e-9):
        return derived, [f"predicted.goodput_rps {claimed} is below the target rate {rate}"]
    per_unit, d = claimed / k, unit.unit()
    where = f"predicted.goodput_rps {claimed:.4g}: one unit ({unit.describe()}) at {per_unit:.4g} req/s"
    saturation = search.saturation(d, unit.bound)
    if per_unit > MAX_UTILIZATION * saturation * (1 + 1e-9):
        return derived, [f"{where} is above {MAX_UTILIZATION:.0%} of its saturated rate {saturation:.4g} req/s"]
    w = base_workload(search.source, requests_at(per_unit, search.horizon), SERVE_SEED, search.context)
    result = simulate(search.costs, d, w.with_rate(per_unit))
    held = attainment(result, search.slo)
    if held < ATTAINMENT or not is_sustainable(result):
        return derived, [f"{where} keeps only {held:.1%} of requests within the SLO ({ATTAINMENT:.0%} needed) or "
                         f"its queue grows"]
    return derived, []
