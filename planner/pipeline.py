"""The planning pipeline: one question in, one typed Plan out. Read this file first.

    capture -> phase costs -> propose candidates -> evaluate and solve -> memory map -> assemble -> verify

Every workload kind (train, inference, serve, fleet) is a strategy behind one interface
(`passes.strategy.Strategy`, chosen by `passes.strategies.strategy_for`); the steps below are the same
for all of them. Nothing here decides anything: decisions are the strategies' (in `passes/`), costs the
cost models' (in `cost_models/`), and the Plan's shape is `ir.plan`'s.
"""

from __future__ import annotations

import json
import time

from cost_models.cluster import DEFAULT_CLUSTER
from ir.graph import Graph
from ir.plan import PLAN_FORMAT, PLANNER_VERSION, Plan, fingerprint
from passes.memory_mapping import verify_memory_map
from passes.strategies import strategy_for
from passes.strategy import Outcome, Problem, Request, Strategy
from planner.api import capture, capture_recorded
from planner.model_source import model_record
from planner.plan_checks import structure_problems


def run(request: Request) -> tuple[Plan, float]:
    """Plan `request`; returns the Plan and the search's wall time in seconds (not part of the plan).

    >>> plan, _ = run(Request("tiny-llama", "4xcpu", "train", batch=8, seq_len=64))
    >>> plan.decision.dp * plan.decision.pp * plan.decision.tp
    4
    """
    started = time.perf_counter()
    strategy = strategy_for(request.workload, request.cluster_spec)      # train | inference | serve | fleet
    graph = graph_for(strategy, request)                                  # ir.capture on meta, cached
    problem = strategy.prepare(request, graph)                            # defaults filled in, inputs checked
    costs = strategy.costs(graph, problem)                                # cost tables the candidates are priced by
    candidates = strategy.propose(graph, problem, costs)                  # layouts / deployments to consider
    outcome = strategy.search(graph, problem, costs, candidates)          # evaluate and solve (DP, CP-SAT, B&B)
    data = assemble(request, graph, problem, outcome)                     # the plan's JSON form
    memory_map = strategy.memory_map(graph, problem, data)                # per-device memory (passes.memory_mapping)
    if memory_map is not None:
        data["memory_map"] = memory_map
    plan = Plan.from_json(json.loads(json.dumps(data, allow_nan=False)))  # typed, schema-checked (ir.plan)
    _check(strategy, plan, graph, problem)                                # structure, rules, memory map hold
    return plan, time.perf_counter() - started


def graph_for(strategy: Strategy, request: Request) -> Graph:
    """The one rule for which graph a question is priced on: the strategy's capture shape (planning and
    verification both ask through here)."""
    shape = strategy.capture_shape(request)
    if request.model_source is not None:
        return capture_recorded(request.model_source, seq_len=shape.seq_len, dtype=shape.dtype,
                                trust_model_code=request.trust_model_code)
    return capture(request.model, seq_len=shape.seq_len, dtype=shape.dtype, trust_model_code=request.trust_model_code)


def assemble(request: Request, graph: Graph, problem: Problem, outcome: Outcome) -> dict:
    """The plan document (JSON form) of an outcome: inputs and their fingerprint, decision, predictions,
    solver report, runners-up and the binding constraints in words."""
    record = {**request.model_source, "summary": dict(graph.config)} if request.model_source else \
        model_record(request.model, dict(graph.config))
    inputs = {"model": request.model, "model_source": record,
              "cluster": request.cluster_spec, **problem.inputs, "planner_version": PLANNER_VERSION}
    data = {"format": PLAN_FORMAT, "inputs": inputs, "fingerprint": fingerprint(inputs), "model_name": graph.model,
            "cluster_description": outcome.cluster_description or problem.cluster.describe(),
            "decision": outcome.decision, "predicted": outcome.predicted, "solver": outcome.solver,
            "binding_constraints": outcome.binding_constraints}
    for key, value in (("alternatives", outcome.alternatives), ("baselines", outcome.baselines),
                       ("profile", outcome.profile)):
        if value is not None:
            data[key] = value
    return data


def _check(strategy: Strategy, plan: Plan, graph: Graph, problem: Problem) -> None:
    """Every plan is checked as it is made (cheap checks; `planner verify` also recomputes every claim).
    A failure here is a planner bug, not a user error."""
    data = plan.to_json()
    broken = structure_problems(data, graph, problem.cluster) if problem.cluster is not None else []
    broken += strategy.check(graph, problem.cluster, data) if not broken else []
    if "memory_map" in data:
        broken += verify_memory_map(data["memory_map"])
    if broken:
        raise RuntimeError(f"the plan does not verify: {broken[0]}")


def request_of(model, cluster, workload: str, **options) -> Request:
    """A Request from `planner.plan`'s arguments (cluster None: the embedded default)."""
    spec = str(cluster) if cluster is not None else DEFAULT_CLUSTER
    return Request(str(model), spec, workload, **options)
