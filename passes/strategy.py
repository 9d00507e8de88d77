"""The interface every workload strategy implements (train, inference, serve, fleet), and the question
and answer types the planning pipeline (`planner.pipeline`) passes between its steps.

A strategy proposes candidates and searches them; it never captures models, reads plan files or
prints. The pipeline calls, in order: `capture_shape` (which graph to capture), `prepare` (defaults
and checks that need the graph), `costs` (the cost tables its candidates are priced with),
`propose`, `search`, `memory_map`; `verify` calls `evaluate` (a recorded decision's predictions,
recomputed independently) and `check` (structural rules of its decisions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ir.graph import Graph


@dataclass(frozen=True)
class Request:
    """A planning question as asked (CLI flags, `planner.plan` arguments), before defaults are filled in.

    `fixed` holds the pinned degrees and options (tp, pp, dp, ep, schedule, virtual_stages,
    sequence_parallel); `warm` a previous plan (`ir.plan.Plan`) to start from; `model_source` a plan's
    record of the model (JSON form of `ir.plan.ModelSource`), which `verify` rebuilds the model from;
    `trust_model_code` allows a `pkg.module:factory` model to be imported and run."""

    model: str
    cluster_spec: str
    workload: str
    objective: str | None = None
    dtype: str = "bf16"
    slo: dict = field(default_factory=dict)
    fixed: dict = field(default_factory=dict)
    batch: int | None = None
    seq_len: int | None = None
    input_len: int | None = None
    output_len: int | None = None
    rate: float | None = None
    engine_profile: str | None = None
    warm: Any = None
    model_source: dict | None = None
    trust_model_code: bool = False


@dataclass(frozen=True)
class CaptureShape:
    """Which graph a strategy prices: sequence length (None: the model's default) and dtype."""

    seq_len: int | None
    dtype: str


@dataclass
class Problem:
    """A request with its defaults filled in and checked: what `propose` and `search` read.

    `cluster` is a `cost_models.cluster.Cluster` (None for fleets: a list of GPU types to buy from);
    `inputs` the plan's inputs record as this strategy writes it (without model, cluster and planner
    version, which the pipeline adds); `shape` strategy-specific sizes and settings."""

    request: Request
    cluster: Any
    objective: str
    inputs: dict
    shape: dict = field(default_factory=dict)


@dataclass
class Outcome:
    """What a search found, in the plan's JSON form (checked against the typed schema on assembly)."""

    decision: dict
    predicted: dict
    solver: dict
    binding_constraints: list[str]
    alternatives: list[dict] | None = None
    baselines: dict | None = None
    profile: dict | None = None
    cluster_description: str | None = None  # default: the problem's cluster.describe()


class Strategy(Protocol):
    """One workload kind's planning rules (see the module docstring for the order of calls)."""

    name: str

    def capture_shape(self, request: Request) -> CaptureShape: ...

    def prepare(self, request: Request, graph: Graph | None) -> Problem: ...

    def costs(self, graph: Graph, problem: Problem) -> Any: ...

    def propose(self, graph: Graph, problem: Problem, costs) -> list: ...

    def search(self, graph: Graph, problem: Problem, costs, candidates: list) -> Outcome: ...

    def memory_map(self, graph: Graph, problem: Problem, plan_json: dict) -> dict | None: ...

    def evaluate(self, graph: Graph, cluster, plan_json: dict) -> dict: ...

    def check(self, graph: Graph, cluster, plan_json: dict) -> list[str]: ...
