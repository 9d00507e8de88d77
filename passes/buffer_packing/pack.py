"""`pack`: the one entry point that turns a packing instance into offsets, whatever its size.

With a capacity: the best greedy packing if it fits, else the exact search until the time limit, else
(small instances only) CP-SAT for the remaining time. Without one (capacity None): the best greedy
packing, then exact searches at capacities between the liveness lower bound and that peak
(bisection, each with a slice of the time limit), and CP-SAT minimisation on small instances.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from passes.buffer_packing.cpsat import solve_cpsat
from passes.buffer_packing.heuristics import best_heuristic
from passes.buffer_packing.model import PackingConfig, PackingInstance, PackingSolution, Status, peak_of
from passes.buffer_packing.search import solve_within

log = logging.getLogger(__name__)


def _solution(instance: PackingInstance, offsets: dict[str, int], status: Status, method: str,
              start: float, lower_bound: int, peak: int | None = None) -> PackingSolution:
    peak_bytes = peak_of(instance, offsets) if peak is None else peak
    return PackingSolution(dict(offsets), peak_bytes, lower_bound, status, time.monotonic() - start, method)


def pack(instance: PackingInstance, config: PackingConfig | None = None) -> PackingSolution:
    """Offsets for every buffer within `instance.capacity`, or with the smallest peak found if it is None.

    A solution that was not found (status "infeasible" or "unknown") has no offsets; its `peak_bytes`
    is the peak of the best over-capacity greedy packing.

    >>> from passes.buffer_packing.model import Buffer
    >>> inst = PackingInstance((Buffer("a", 0, 2, 4), Buffer("b", 1, 3, 4), Buffer("c", 2, 4, 4)), 8)
    >>> sol = pack(inst, PackingConfig(time_limit_s=5))
    >>> sol.status, sol.peak_bytes, sol.lower_bound_bytes
    ('optimal', 8, 8)
    """
    config = config or PackingConfig()
    start = time.monotonic()
    if instance.capacity is None:
        return _minimise_peak(instance, config, start)
    cap, lb = instance.capacity, instance.liveness_lower_bound()
    method, greedy = best_heuristic(instance, deadline=start + config.time_limit_s / 4)
    greedy_peak = peak_of(instance, greedy)
    if greedy_peak <= cap:
        return _solution(instance, greedy, "optimal" if greedy_peak == lb else "feasible", method, start, lb)
    if lb > cap:
        return _solution(instance, {}, "infeasible", "lower_bound", start, lb, greedy_peak)
    deadline = start + config.time_limit_s
    status, offsets = solve_within(list(instance.buffers), cap, deadline)
    if status == "feasible":
        peak = peak_of(instance, offsets)
        return _solution(instance, offsets, "optimal" if peak == lb else "feasible", "search", start, lb)
    if status == "unknown" and config.use_cpsat and len(instance.buffers) <= config.cpsat_max_buffers:
        left = dataclasses.replace(config, time_limit_s=max(deadline - time.monotonic(), 0.5))
        status, offsets, _ = solve_cpsat(instance, left, hint=greedy)
        if status in ("optimal", "feasible"):
            peak = peak_of(instance, offsets)
            return _solution(instance, offsets, "optimal" if peak == lb else "feasible", "cpsat", start, lb)
    return _solution(instance, {}, status, "search", start, lb, greedy_peak)


def _minimise_peak(instance: PackingInstance, config: PackingConfig, start: float) -> PackingSolution:
    """Smallest peak found: greedy, then bisection with the exact search, then CP-SAT on small ones."""
    lb = instance.liveness_lower_bound()
    method, best = best_heuristic(instance, deadline=start + config.time_limit_s / 4)
    best_peak = peak_of(instance, best)
    deadline = start + config.time_limit_s
    lo, proven = lb, True  # every capacity below `lo` is proven infeasible while `proven` holds
    buffers = list(instance.buffers)
    while best_peak - lo > (0 if proven else best_peak // 1000) and time.monotonic() < deadline:
        steps = max((best_peak - lo).bit_length(), 2)
        probe = lo if lo == lb else (lo + best_peak - 1) // 2
        slice_end = min(deadline, time.monotonic() + (deadline - time.monotonic()) / steps)
        status, offsets = solve_within(buffers, probe, slice_end)
        log.debug("min-peak probe at %d bytes: %s", probe, status)
        if status == "feasible":
            best, best_peak, method = offsets, peak_of(instance, offsets), "search"
        else:
            proven = proven and status == "infeasible"
            lo = probe + 1
    if best_peak > lb and config.use_cpsat and len(buffers) <= config.cpsat_max_buffers:
        left = dataclasses.replace(config, time_limit_s=max(deadline - time.monotonic(), 0.5))
        status, offsets, bound = solve_cpsat(instance, left, hint=best)
        if offsets and peak_of(instance, offsets) <= best_peak:
            best, best_peak, method = offsets, peak_of(instance, offsets), "cpsat"
        if status == "optimal" and best_peak == peak_of(instance, offsets):
            lo, proven = best_peak, True  # CP-SAT proved this peak optimal
        elif bound is not None and bound >= lo:
            lo, proven = bound, True  # CP-SAT's bound proves no packing below it (a bisection's proof is kept too)
    optimal = best_peak == lb or (proven and lo >= best_peak)
    return _solution(instance, best, "optimal" if optimal else "feasible", method, start, lb)
