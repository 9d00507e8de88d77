"""`planner verify`: an independent check of every claim a plan makes, recomputed from its inputs.

In order (each step one line below; a broken structure stops before anything is priced):
1. schema (on reading, `ir.plan`), fingerprint of the inputs, the planner version;
2. the question: the recorded inputs are what the strategy derives from them again (defaults, SLO, pinned
   options), the model is rebuilt from its record (never from the file or code it names) and is the one the
   plan names (preset values, summary, model name), the cluster is the one described;
3. structure (`planner.plan_checks`) and the workload kind's rules (the strategy's `check`);
4. predictions: the whole `predicted` record against a fresh evaluation (the strategy's `evaluate`), with
   serving's derived goodput numbers; memory that fits; SLO attainment at the reported rate;
5. the decision rebuilt where it follows from its layout (inference, serving deployments and their engine
   limits), the solver report (bound <= objective, gap, counts), runners-up and baselines;
6. the memory map recomputed (what is deterministic) and its arenas re-checked.
Fleets: `planner.verify_fleet`.
"""

from __future__ import annotations

from cost_models.cluster import parse_cluster
from ir.errors import UserError
from ir.plan import Plan, fingerprint
from ir.records import to_json
from passes.strategies import strategy_of_plan
from passes.strategy import Request
from planner.model_source import code_refusal
from planner.pipeline import graph_for
from planner.plan_checks import bound_problems, structure_problems
from planner.verify_claims import (
    cluster_problems,
    differences,
    input_problems,
    jsonable,
    memory_map_problems,
    model_problems,
    pinned_problems,
    solver_problems,
    train_report_problems,
    version_problems,
)
from planner.verify_fleet import fleet_problems
from planner.verify_serving import estimate_problems, holds_problems, serving_problems

ATTAINMENT = 0.9  # a serving plan's share of requests meeting the SLO at its reported rate (goodput's definition)


def question(plan: Plan, trust_model_code: bool) -> Request:
    """The question a plan answered, as recorded: the model's record (never the file or code its reference
    names), cluster, workload and its shape, objective, SLO, pinned options, dtype and engine profile. A
    serving plan's lengths are passed only when they were fixed (its workload is `fixed:I:O`)."""
    i, w = plan.inputs, plan.inputs.workload
    serving = getattr(plan.decision, "serving", None)
    named = isinstance(getattr(serving, "workload", None), str) and not serving.workload.startswith("fixed:")
    lengths = {} if named else {"input_len": w.input_len or None, "output_len": w.output_len or None}
    slo = to_json(i.slo) if i.slo else {}
    return Request(i.model, i.cluster, w.kind, objective=i.objective, dtype=i.dtype, slo=slo,
                   fixed=to_json(i.fixed) if i.fixed else {}, batch=w.batch or None, seq_len=w.seq_len or None,
                   rate=w.rate or None, engine_profile=i.engine_profile or None,
                   model_source=to_json(i.model_source), trust_model_code=trust_model_code, **lengths)


def verify_plan(plan: Plan | dict, *, trust_model_code: bool = False) -> list[str]:
    """Problems found in `plan` (a Plan, or its JSON form: a value the schema refuses is the first problem);
    empty when every claim holds. A plan whose model is Python code is recomputed only with `trust_model_code`
    (else a UserError says how).

    >>> import planner
    >>> verify_plan(planner.plan("tiny-llama", "2xcpu", "decode", batch=4, input_len=64).plan)
    []
    """
    if not isinstance(plan, Plan):
        try:
            plan = Plan.from_json(plan)
        except UserError as exc:
            return [str(exc)]
    if plan.inputs.model_source.kind == "module" and not trust_model_code:
        raise UserError(code_refusal(plan.inputs.model_source.ref))
    problems = []
    if plan.fingerprint != fingerprint(plan.inputs):
        problems.append("fingerprint does not match the plan's inputs (edited after planning?)")
    problems += version_problems(plan)
    bounds = bound_problems(plan.to_json())                          # nothing below may run without end
    if bounds:
        return problems + bounds
    try:
        return problems + _claims(plan, trust_model_code)
    except UserError as exc:  # the recorded question cannot be asked again: bad model values, cluster, workload
        return [*problems, f"the plan's inputs cannot be re-planned: {exc}"]


def _claims(plan: Plan, trust_model_code: bool) -> list[str]:
    data, strategy = plan.to_json(), strategy_of_plan(plan.kind, getattr(plan.decision, "phase", None))
    request = question(plan, trust_model_code)
    cluster = None if plan.kind == "fleet" else parse_cluster(plan.inputs.cluster)
    graph = graph_for(strategy, request)                                  # rebuilt from the plan's record
    problem = strategy.prepare(request, graph)                            # defaults filled in again
    problems = input_problems(data["inputs"], problem.inputs) + solver_problems(data["solver"])
    problems += _text_problems(data)
    if plan.kind == "fleet":
        return problems + model_problems_fleet(data, graph) + fleet_problems(graph, data, problem)
    problems += model_problems(data, graph) + cluster_problems(data, cluster)
    pinned = pinned_problems(data)                                        # reported with whatever else is found
    problems += structure_problems(data, graph, cluster)
    problems += strategy.check(graph, cluster, data) if not problems else []
    if problems:
        return problems + pinned
    return _predictions(strategy, graph, cluster, data, problem) + pinned


def model_problems_fleet(data: dict, graph) -> list[str]:
    """A fleet plan's model record (its name is checked with the fleet)."""
    return [p for p in model_problems(data, graph) if not p.startswith("model_name ")]


def _predictions(strategy, graph, cluster, data: dict, problem) -> list[str]:
    decision, report, derived = data["decision"], [], {}
    if decision["kind"] == "inference" and decision["phase"] == "serve":
        if not isinstance(decision.get("serving"), dict) or "unit" not in decision["serving"]:
            return ["decision.serving records engine settings only (a plan written before the serving simulator "
                    "recorded its deployment); re-run `planner plan`"]
        report, derived = serving_problems(graph, cluster, data, problem)
        if any(p.startswith("decision") for p in report):  # not the planner's deployment: nothing to simulate
            return report
    elif decision["kind"] == "inference":
        report = estimate_problems(graph, cluster, data, problem)
    else:
        report = train_report_problems(data)
    try:
        fresh = jsonable({**strategy.evaluate(graph, cluster, data), **derived})
    except UserError as exc:
        return [f"the cost model rejects the decision: {exc}", *report]
    except ValueError:
        return ["the cost model gives a non-finite prediction for this decision", *report]
    problems = differences(data["predicted"], fresh, "predicted") + _fit(fresh)
    if decision["kind"] == "inference" and decision["phase"] == "serve":
        problems += holds_problems(fresh)
    attained = data["predicted"].get("slo_attainment")
    if attained is not None and attained < ATTAINMENT:
        problems.append(f"SLO attainment {attained:.1%} is below {ATTAINMENT:.0%}: the plan does not meet its SLO "
                        f"at its reported rate")
    return problems + report + memory_map_problems(data, graph, cluster)


def _fit(fresh: dict) -> list[str]:
    problems = []
    if not fresh.get("fits", True):
        problems.append(f"memory does not fit: {(fresh.get('memory_per_device_bytes') or 0) / 1e9:.1f} GB on the "
                        f"fullest device")
    for i, (m, c) in enumerate(zip(fresh.get("stage_memory_bytes", []), fresh.get("stage_capacity_bytes", []))):
        if m > c:
            problems.append(f"stage {i} needs {m / 1e9:.1f} GB, its devices hold {c / 1e9:.1f} GB")
    return problems


def _text_problems(data: dict) -> list[str]:
    """Words a plan carries into explanations and generated files are single lines: no string anywhere in the
    plan holds a control character (newline, escape, NUL)."""
    return [f"{where} holds a control character" for where in control_characters(data)]


def control_characters(value, where: str = "") -> list[str]:
    """Paths (as `differences` names them) of the strings in `value` that hold a control character.

    >>> control_characters({"a": ["ok", "no\\nway"]})
    ['a[1]']
    """
    if isinstance(value, str):
        return [where or "the value"] if any(ord(ch) < 32 or ord(ch) == 127 for ch in value) else []
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in control_characters(v, f"{where}.{k}" if where else str(k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in control_characters(v, f"{where}[{i}]")]
    return []


__all__ = ["ATTAINMENT", "control_characters", "differences", "question", "verify_plan"]
