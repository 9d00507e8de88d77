"""Mixed-GPU serving fleet at minimum cost (in the spirit of Melange, Griggs et al. 2024): how many
instances of each (GPU type, tp) configuration to buy so that the fleet serves a request rate within
the SLOs, for the lowest price per hour.

Data (`FleetInstance`): configurations c with a price (integer milli-dollars per hour) and GPUs of a
type (an optional limit per type); request-size buckets b with a rate lambda_b (req/s); cap[c][b], the
highest rate of bucket-b requests one instance of c serves within the SLOs (profiled by simulation in
`planner.plan_fleet`; 0: never). Each bucket's load is cut into `slices` equal slices (Melange's load
slices), and a slice of b on c uses load[c][b] = ceil(SCALE x lambda_b / (slices x cap[c][b])) of an
instance's SCALE capacity units (rounded up, so a solution never over-fills an instance).

Model, built in a fixed order (STYLE.md, habit 6):
  variables n[c] in [0, n_max]        instances of configuration c
            y[c][b] in [0, slices]    slices of bucket b served by configuration c
  constraints sum_c y[c][b] = slices                        every slice is served
              sum_b y[c][b] load[c][b] <= SCALE n[c]          instances are not over-loaded
              sum_{c of type g} gpus[c] n[c] <= limit[g]       GPUs available of a type (when limited)
  objective minimise sum_c price[c] n[c] (milli-dollars per hour)
Mixing buckets on one instance adds their load fractions linearly (Melange's assumption too).
The best single configuration (every slice on it) is the warm start and the fallback.
No CP-SAT type leaves this module.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass

from ortools.sat.python import cp_model

from passes.cpsat import SolverConfig, solve

SCALE = 1_000_000  # capacity units per instance: load fractions to 1e-6


@dataclass(frozen=True)
class FleetInstance:
    """Prepared data of one fleet problem (see the module docstring); tuples indexed [config][bucket]."""

    configs: tuple[str, ...]  # names, e.g. "H100-SXM tp2"
    gpu_type: tuple[str, ...]  # per config
    gpus: tuple[int, ...]  # GPUs per instance, per config
    price_milli: tuple[int, ...]  # milli-dollars per hour per instance
    bucket_rate: tuple[float, ...]  # req/s per bucket
    capacity: tuple[tuple[float, ...], ...]  # cap[c][b], req/s; 0 = cannot serve b within the SLO
    gpu_limit: tuple[tuple[str, int], ...] = ()  # (type, GPUs available); absent types are unlimited
    slices: int = 10

    def load(self, c: int, b: int) -> int | None:
        """Capacity units one slice of bucket b takes on configuration c (None: c cannot serve b)."""
        if self.capacity[c][b] <= 0:
            return None
        return math.ceil(SCALE * self.bucket_rate[b] / (self.slices * self.capacity[c][b]) - 1e-9)

    def cost(self, slices_of: tuple[tuple[int, ...], ...]) -> tuple[int, tuple[int, ...]] | None:
        """(cost, instance counts) of an assignment y[c][b], with the fewest instances each; None if invalid."""
        counts = []
        for c, row in enumerate(slices_of):
            units = 0
            for b, y in enumerate(row):
                if y:
                    per = self.load(c, b)
                    if per is None:
                        return None
                    units += y * per
            counts.append(-(-units // SCALE))
        limits = dict(self.gpu_limit)
        for g, limit in limits.items():
            if sum(n * k for n, k, t in zip(counts, self.gpus, self.gpu_type) if t == g) > limit:
                return None
        return sum(n * p for n, p in zip(counts, self.price_milli)), tuple(counts)


@dataclass(frozen=True)
class FleetConfig:
    time_limit_s: float = 10.0
    workers: int = 1  # one worker: deterministic
    seed: int = 0


@dataclass(frozen=True)
class FleetSolution:
    """Instances per configuration, slices per (configuration, bucket), cost and the solver's facts."""

    counts: tuple[int, ...] | None
    slices_of: tuple[tuple[int, ...], ...] | None
    cost_milli: int | None
    bound_milli: int | None
    status: str
    solver: str
    solve_time_s: float

    @property
    def gap(self) -> float | None:
        if self.cost_milli is None or self.bound_milli is None or self.cost_milli == 0:
            return None
        return max(self.cost_milli - self.bound_milli, 0) / self.cost_milli


def restrict(inst: FleetInstance, gpu_type: str) -> FleetInstance:
    """The sub-problem with only the configurations of one GPU type (the single-type baseline).

    >>> inst = FleetInstance(("a", "b"), ("A", "B"), (1, 1), (1000, 3000), (1.0,), ((0.5,), (4.0,)), slices=2)
    >>> restrict(inst, "B").configs
    ('b',)
    """
    keep = [c for c in range(len(inst.configs)) if inst.gpu_type[c] == gpu_type]
    return FleetInstance(tuple(inst.configs[c] for c in keep), tuple(inst.gpu_type[c] for c in keep),
                         tuple(inst.gpus[c] for c in keep), tuple(inst.price_milli[c] for c in keep), inst.bucket_rate,
                         tuple(inst.capacity[c] for c in keep), tuple(x for x in inst.gpu_limit if x[0] == gpu_type),
                         inst.slices)


def single_config(inst: FleetInstance) -> list[tuple[int, int, tuple[int, ...]]]:
    """Every configuration that serves all buckets alone: (cost, config, counts), cheapest first.

    >>> inst = FleetInstance(("a", "b"), ("A", "B"), (1, 1), (1000, 3000), (1.0,), ((0.5,), (4.0,)), slices=2)
    >>> single_config(inst)
    [(2000, 0, (2, 0)), (3000, 1, (0, 1))]
    """
    out = []
    for c in range(len(inst.configs)):
        y = tuple(tuple(inst.slices if k == c else 0 for _ in inst.bucket_rate) for k in range(len(inst.configs)))
        got = inst.cost(y)
        if got is not None:
            out.append((got[0], c, got[1]))
    return sorted(out)


def _upper_counts(inst: FleetInstance) -> list[int]:
    """Per configuration, instances enough to carry every slice it can serve (a safe variable bound)."""
    out = []
    for c in range(len(inst.configs)):
        units = sum(inst.slices * per for b in range(len(inst.bucket_rate)) if (per := inst.load(c, b)) is not None)
        out.append(max(-(-units // SCALE), 0))
    return out


def _build(inst: FleetInstance):
    model = cp_model.CpModel()
    C, B = len(inst.configs), len(inst.bucket_rate)
    n_max = _upper_counts(inst)
    n = {c: model.new_int_var(0, n_max[c], f"n{c}") for c in range(C)}  # instances of configuration c
    y = {(c, b): model.new_int_var(0, inst.slices if inst.load(c, b) is not None else 0, f"y{c}_{b}")
         for c in range(C) for b in range(B)}  # slices of bucket b on configuration c
    for b in range(B):
        model.add(sum(y[c, b] for c in range(C)) == inst.slices)
    for c in range(C):
        model.add(sum(y[c, b] * (inst.load(c, b) or 0) for b in range(B)) <= SCALE * n[c])
    for g, limit in inst.gpu_limit:
        model.add(sum(inst.gpus[c] * n[c] for c in range(C) if inst.gpu_type[c] == g) <= limit)
    model.minimize(sum(inst.price_milli[c] * n[c] for c in range(C)))
    return model, n, y


def solve_fleet(inst: FleetInstance, config: FleetConfig | None = None) -> FleetSolution:
    """The cheapest fleet by CP-SAT, warm-started (and backed) by the best single configuration.

    >>> inst = FleetInstance(("big", "small"), ("H", "L"), (1, 1), (5000, 1200), (3.0, 1.0),
    ...                      ((4.0, 1.2), (1.5, 0.2)), slices=4)
    >>> s = solve_fleet(inst)  # the big type takes the second bucket, two small ones the first
    >>> s.counts, s.slices_of, s.cost_milli, s.status, single_config(inst)[0][0]
    ((1, 2), ((0, 4), (4, 0)), 7400, 'optimal', 8400)
    """
    config = config or FleetConfig()
    started = time.perf_counter()
    singles = single_config(inst)
    hint = singles[0] if singles else None
    model, n, y = _build(inst)
    if hint is not None:
        _, c0, counts = hint
        for c, var in n.items():
            model.add_hint(var, counts[c])
        for (c, _b), var in y.items():
            model.add_hint(var, inst.slices if c == c0 else 0)
    result = solve(model, SolverConfig(config.time_limit_s, config.workers, config.seed))
    status = result.status
    elapsed = time.perf_counter() - started
    C, B = len(inst.configs), len(inst.bucket_rate)
    if status == "invalid":
        raise RuntimeError("the fleet CP-SAT model is invalid (a planner bug)")
    if result.found:
        slices_of = tuple(tuple(result.value(y[c, b]) for b in range(B)) for c in range(C))
        cost, counts = inst.cost(slices_of)  # the fewest instances for the solver's assignment
        bound = math.ceil(result.bound - 1e-9)
        if hint is not None and hint[0] < cost:  # never worse than the warm start
            cost, counts = hint[0], hint[2]
            slices_of = tuple(tuple(inst.slices if c == hint[1] else 0 for _ in range(B)) for c in range(C))
        return FleetSolution(counts, slices_of, cost, min(bound, cost), status, "cp-sat", elapsed)
    if status == "infeasible":
        return FleetSolution(None, None, None, None, "infeasible", "cp-sat", elapsed)
    if hint is None:
        return FleetSolution(None, None, None, None, "unknown", "cp-sat (nothing found in its time limit)", elapsed)
    slices_of = tuple(tuple(inst.slices if c == hint[1] else 0 for _ in range(B)) for c in range(C))
    return FleetSolution(hint[2], slices_of, hint[0], None, "feasible",
                         "best single configuration (cp-sat found nothing better in its time limit)", elapsed)


def brute_force(inst: FleetInstance) -> int | None:
    """The optimal cost by enumerating every assignment of slices (small instances only: tests).

    >>> brute_force(FleetInstance(("big", "small"), ("H", "L"), (1, 1), (5000, 1200), (3.0, 1.0),
    ...                           ((4.0, 1.2), (1.5, 0.2)), slices=4))
    7400
    """
    C, B = len(inst.configs), len(inst.bucket_rate)
    splits = [s for s in itertools.product(range(inst.slices + 1), repeat=C) if sum(s) == inst.slices]
    best = None
    for choice in itertools.product(splits, repeat=B):
        slices_of = tuple(tuple(choice[b][c] for b in range(B)) for c in range(C))
        got = inst.cost(slices_of)
        if got is not None and (best is None or got[0] < best):
            best = got[0]
    return best
