"""Branch and bound over serving candidates by simulated goodput.

Each candidate unit's goodput (the highest rate with >= 90% of requests meeting TTFT and TPOT, and a queue
that does not grow over the run: `metrics.is_sustainable`, so a short trace cannot hide a backlog) comes
from simulated requests of the workload's length distribution (seed `SERVE_SEED`, Poisson arrivals;
at least `SERVE_REQUESTS` and `horizon_s` seconds of arrivals: several request lifetimes, so that an overloaded
queue shows rather than a short burst draining) on one unit, by `cost_models.serving.rate_search.highest_rate`.
Candidates go in order of the bound of what they deliver; one simulation at the rate needed to beat the
incumbent prunes a candidate that cannot. Objective: the cluster's goodput (a unit's goodput times the units
the cluster holds, so that a unit shape leaving GPUs idle pays for them; ties go to the higher goodput per
GPU), or with a target rate the fewest GPUs whose goodput covers it.
"""

from __future__ import annotations

import math

import numpy as np

from cost_models.serving.capacity import MAX_UTILIZATION, saturated_rate
from cost_models.serving.deployment import Deployment, simulate
from cost_models.serving.metrics import ATTAINMENT, attainment, is_sustainable, latencies
from cost_models.serving.rate_search import highest_rate
from passes.serving_candidates import BOUND_SLACK, ServingCandidate
from passes.serving_evaluate import base_workload

SERVE_REQUESTS = 400  # simulated requests per candidate unit at least (fixed seed): milliseconds per simulation
SERVE_HORIZON_S = 30.0  # ... and at least this many seconds of arrivals, so an overloaded queue shows
SERVE_LIFETIMES = 4  # ... and at least this many request lifetimes (TTFT + output x TPOT at the SLO): steady state
SERVE_REQUESTS_MAX = 12000  # ... at most this many per unit
SERVE_SEED = 0
SEARCH_TOLERANCE = 0.04
SEARCH_STEPS = 7
COLOCATED_WIDEN = 3  # doublings of the bracket when even the slack bound meets the SLO
# A disaggregated unit's bound (min of x prefill and y decode instance rates at full batches) is a ceiling on its
# steady-state rate; above it a finite simulation only shows a queue still building (TPOT spreads a decode-queue
# wait over the output tokens), so its goodput is capped there.


def horizon_s(slo: dict, mean_output: float) -> float:
    """Seconds of arrivals a goodput is judged on: SERVE_HORIZON_S, or SERVE_LIFETIMES request lifetimes at the
    SLO if longer. A continuous-batching engine absorbs a burst into its KV cache for about one lifetime before
    a backlog shows in TTFT; a shorter run rates an unsustainable rate as goodput.

    >>> horizon_s({"ttft": 5.0, "tpot": 0.25}, 256.0), horizon_s({"ttft": 0.2, "tpot": 0.01}, 100.0)
    (276.0, 30.0)
    """
    lifetime = slo.get("ttft", 0.0) + mean_output * slo.get("tpot", 0.0)
    return max(SERVE_HORIZON_S, SERVE_LIFETIMES * lifetime)


def requests_at(rate: float, horizon: float = SERVE_HORIZON_S) -> int:
    """Requests simulated per unit at `rate`: `horizon` seconds of arrivals, in steps of SERVE_REQUESTS."""
    steps = math.ceil(rate * horizon / SERVE_REQUESTS)
    return min(max(steps, 1) * SERVE_REQUESTS, SERVE_REQUESTS_MAX)


class GoodputSearch:
    """Goodput of candidates (one simulation per probed rate), remembering the best light-load latencies."""

    def __init__(self, costs, source: str, slo: dict, context: int | None = None, horizon: float = SERVE_HORIZON_S):
        self.costs, self.source, self.slo, self.context, self.horizon = costs, source, slo, context, horizon
        self.workloads: dict = {}
        self.simulations = 0
        self.best_ttft = self.best_tpot = math.inf  # at light load, over all candidates (for the error)

    def _ok(self, d: Deployment, rate: float, light: bool = False) -> bool:
        n = requests_at(rate, self.horizon)
        if n not in self.workloads:
            self.workloads[n] = base_workload(self.source, n, SERVE_SEED, self.context)
        r = simulate(self.costs, d, self.workloads[n].with_rate(rate))
        self.simulations += 1
        if light:
            ttft, tpot = latencies(r)
            if np.isfinite(ttft).any():
                self.best_ttft = min(self.best_ttft, float(np.nanmean(ttft)))
            if np.isfinite(tpot).any():
                self.best_tpot = min(self.best_tpot, float(np.nanmean(tpot)))
        # a goodput must hold in steady state: the SLO met, and a queue that does not grow over the run
        return attainment(r, self.slo) >= ATTAINMENT and is_sustainable(r)

    def saturation(self, d: Deployment, estimate: float) -> float:
        """The unit's saturated service rate (`cost_models.serving.capacity`), on the search's requests."""
        n = max(requests_at(estimate, self.horizon), 4 * SERVE_REQUESTS)
        if n not in self.workloads:
            self.workloads[n] = base_workload(self.source, n, SERVE_SEED, self.context)
        self.simulations += 1
        return saturated_rate(lambda rate: simulate(self.costs, d, self.workloads[n].with_rate(rate)), estimate)

    def goodput(self, c: ServingCandidate, need: float) -> float | None:
        """The unit's goodput (req/s); 0 when it misses the SLO at light load; None when it cannot reach `need`.
        Never above MAX_UTILIZATION of its saturated service rate (`c.saturation`, measured here first)."""
        d, hi = c.unit(), c.bound * (1.0 if c.disaggregated else BOUND_SLACK)
        if need >= hi:
            return None
        c.saturation = self.saturation(d, c.bound)
        cap = MAX_UTILIZATION * c.saturation
        lo = min(hi, cap) / 64
        return highest_rate(lambda rate: rate <= cap * (1 + 1e-12) and self._ok(d, rate, light=rate == lo), lo,
                            min(hi, cap), widen=1 if c.disaggregated else COLOCATED_WIDEN, steps=SEARCH_STEPS,
                            tolerance=SEARCH_TOLERANCE, need=need)


def units_for(c: ServingCandidate, cluster, fixed: dict, rate: float | None) -> int:
    """How many units the deployment replicates: enough for `rate`, else as many as the cluster holds."""
    if rate is not None:
        return max(math.ceil(rate / c.goodput - 1e-9), 1)
    if fixed.get("dp") and not c.disaggregated:
        return fixed["dp"]
    k = max(cluster.num_devices // c.gpus, 1)
    while k > 1 and c.ranks_needed(k) > cluster.num_devices:
        k -= 1
    return k


def search_serving(cluster, costs, source: str, cands: list[ServingCandidate], slo: dict, rate: float | None,
                   fixed: dict, warm: str | None = None, context: int | None = None, horizon: float = SERVE_HORIZON_S):
    """Branch and bound over the candidates, most promising first; `warm` (a previous plan's unit) goes first, so
    its goodput prunes the rest from the start (a warm start: fewer simulations, an answer as good within the
    goodput search's tolerance; a candidate must beat the incumbent strictly, so exact ties keep it).
    Returns (best candidate or None, the search with its counters)."""
    search = GoodputSearch(costs, source, slo, context, horizon)
    n = cluster.num_devices
    best, best_gpus, best_total = None, n, 0.0
    units = {id(c): units_for(c, cluster, fixed, None) for c in cands}
    order = (lambda c: -c.bound * units[id(c)]) if rate is None else (lambda c: -c.bound / c.gpus)
    cands = sorted(cands, key=lambda c: (c.describe() != warm, order(c), c.key()))
    for c in cands:
        if rate is None:
            need = best_total / units[id(c)] if best else 0.0
        else:
            limit = best_gpus if best else n
            k_max = limit // c.gpus
            while k_max > 0 and c.ranks_needed(k_max) > n:
                k_max -= 1
            if k_max < 1:
                continue
            need = rate / k_max
        g = search.goodput(c, need)
        if not g:
            continue
        c.goodput = g
        if rate is None:
            total = g * units[id(c)]
            better = best is None or total > best_total * (1 + 1e-9) or (
                total >= best_total * (1 - 1e-9) and g / c.gpus > best.goodput / best.gpus * (1 + 1e-9))
            if better:
                best_total = total
        else:
            gpus = units_for(c, cluster, fixed, rate) * c.gpus
            better = best is None or (gpus, -g / c.gpus) < (best_gpus, -best.goodput / best.gpus)
            if better:
                best_gpus = gpus
        if better:
            best = c
    return best, search
