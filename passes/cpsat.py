"""The one way this project runs OR-Tools CP-SAT: a fixed seed, a time limit, a worker count, and the status,
objective, bound and gap always read back. Each optimisation module builds its own model and keeps its
variables; only `solve` touches the solver, and only plain numbers and status names leave it.

Status names (the plan's solver reports use them): optimal (proven), feasible (a solution, not proven),
infeasible (proven none exists), invalid (a bug in the model), unknown (no solution within the time limit).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from ortools.sat.python import cp_model

STATUS = {cp_model.OPTIMAL: "optimal", cp_model.FEASIBLE: "feasible", cp_model.INFEASIBLE: "infeasible",
          cp_model.MODEL_INVALID: "invalid", cp_model.UNKNOWN: "unknown"}


@dataclass(frozen=True)
class SolverConfig:
    """Time limit (seconds), workers and seed: one worker by default, so that results are deterministic."""

    time_limit_s: float = 5.0
    workers: int = 1
    seed: int = 0


@dataclass(frozen=True)
class SolveResult:
    """What a solve found: status, objective and bound (None without an objective or a solution), wall time, and
    `value(var)` for the caller's own variables (None when no solution was found)."""

    status: str
    objective: float | None
    bound: float | None
    wall_s: float
    value: Callable | None

    @property
    def found(self) -> bool:
        return self.status in ("optimal", "feasible")

    @property
    def gap(self) -> float | None:
        """(objective - bound) / objective of a minimisation; 0 when proven optimal, None without both."""
        if self.status == "optimal":
            return 0.0
        if self.objective is None or self.bound is None or not self.objective:
            return None
        return max(self.objective - self.bound, 0.0) / abs(self.objective)


def solve(model: cp_model.CpModel, config: SolverConfig) -> SolveResult:
    """Solve `model` under `config` and read everything back.

    >>> m = cp_model.CpModel(); x = m.new_int_var(0, 10, "x"); _ = m.add(x >= 3); m.minimize(x)
    >>> r = solve(m, SolverConfig(time_limit_s=5))
    >>> r.status, r.objective, r.bound, r.value(x), r.gap
    ('optimal', 3.0, 3.0, 3, 0.0)
    """
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(config.time_limit_s, 0.01)
    solver.parameters.random_seed = config.seed
    solver.parameters.num_workers = config.workers
    started = time.perf_counter()
    code = solver.solve(model)
    wall = time.perf_counter() - started
    status = STATUS.get(code, "unknown")
    found = status in ("optimal", "feasible")
    has_objective = model.has_objective()
    objective = float(solver.objective_value) if found and has_objective else None
    bound = float(solver.best_objective_bound) if has_objective and status != "infeasible" else None
    if bound is not None and not math.isfinite(bound):
        bound = None
    return SolveResult(status, objective, bound, wall, (lambda var: int(solver.value(var))) if found else None)
