"""CP-SAT model of buffer packing: a fallback for small instances and a reference for tests.

Model (built in this order): data; variables `offset[i]` in [0, capacity - size_i] and one fixed-size
interval per buffer in address (time intervals are constants); constraints: `add_no_overlap_2d` over
(time, address) plus one redundant `add_no_overlap` on the address intervals of each maximal set of
buffers live together (it lets the solver reason per time step); objective: none with a capacity,
otherwise minimise `peak` >= offset + size; hints from a heuristic packing; solve with fixed seed,
workers and time limit; read the status back. No OR-Tools type leaves this module.
"""

from __future__ import annotations

import logging
import math

from ortools.sat.python import cp_model

from passes.buffer_packing.model import PackingConfig, PackingInstance, Status, sections_of
from passes.cpsat import SolverConfig, solve

log = logging.getLogger(__name__)



def _live_sets(instance: PackingInstance) -> list[list[int]]:
    """Maximal sets of buffer positions live together (one per time section, subsets dropped)."""
    secs = sections_of(instance.buffers)
    per_section = [frozenset(i for i, (a, b) in enumerate(secs.ranges) if a <= s < b) for s in range(secs.count)]
    distinct = sorted(set(per_section), key=lambda s: sorted(s))
    return [sorted(s) for s in distinct if len(s) > 1 and not any(s < other for other in distinct)]


def solve_cpsat(
    instance: PackingInstance,
    config: PackingConfig,
    hint: dict[str, int] | None = None,
    capacity: int | None = None,
) -> tuple[Status, dict[str, int], int | None]:
    """Pack with CP-SAT below `capacity` (default: the instance's), or minimise the peak when both are None.
    Returns (status, offsets by buffer id, the proven lower bound on the peak when minimising; else None).

    >>> from passes.buffer_packing.model import Buffer
    >>> inst = PackingInstance((Buffer("a", 0, 2, 4), Buffer("b", 1, 3, 4)), capacity=8)
    >>> status, offsets, _ = solve_cpsat(inst, PackingConfig(time_limit_s=5, workers=1))
    >>> status, sorted(offsets.values())
    ('optimal', [0, 4])
    >>> solve_cpsat(inst, PackingConfig(time_limit_s=5, workers=1), capacity=7)
    ('infeasible', {}, None)
    """
    bufs = instance.buffers
    cap = capacity if capacity is not None else instance.capacity
    minimise = cap is None
    upper = cap if cap is not None else sum(b.size for b in bufs)
    if any(b.size > upper for b in bufs):
        return "infeasible", {}, None
    model = cp_model.CpModel()
    # offset[i]: first byte of buffer i; address[i]: its address interval; span[i]: its (fixed) lifetime
    offset = [model.new_int_var(0, upper - b.size, f"offset_{b.id}") for b in bufs]
    address = [model.new_fixed_size_interval_var(offset[i], b.size, f"addr_{b.id}") for i, b in enumerate(bufs)]
    span = [model.new_fixed_size_interval_var(b.lower, b.upper - b.lower, f"time_{b.id}") for b in bufs]
    model.add_no_overlap_2d(span, address)
    for live in _live_sets(instance):
        model.add_no_overlap([address[i] for i in live])
    if minimise:
        peak = model.new_int_var(instance.liveness_lower_bound(), upper, "peak")
        for i, b in enumerate(bufs):
            model.add(peak >= offset[i] + b.size)
        model.minimize(peak)
    if hint:
        for i, b in enumerate(bufs):
            if b.id in hint:
                model.add_hint(offset[i], hint[b.id])
    result = solve(model, SolverConfig(config.time_limit_s, config.workers, config.seed))
    log.debug("CP-SAT on %d buffers: %s in %.2f s", len(bufs), result.status, result.wall_s)
    if result.status == "invalid":
        raise RuntimeError("the buffer-packing CP-SAT model is invalid (a planner bug)")
    bound = math.ceil(result.bound - 1e-9) if minimise and result.bound is not None else None
    if not result.found:
        return result.status, {}, bound
    return result.status, {b.id: result.value(offset[i]) for i, b in enumerate(bufs)}, bound
