"""Layer grouping: split the layer sequence into contiguous stages, balanced by time on each
stage's own devices and bounded by each stage's memory.

The same pass serves pipeline stages and the layer groups of layered prefill. One optimisation
problem, three solvers (STYLE.md, habit 6):
- `solve_minmax`: exact minimum of the slowest stage by dynamic programming over (stage, layer)
  with per-stage memory caps (the linear-partition DP, Alpa's stage DP restricted to one mesh
  shape). With identical stage speeds the sum of stage times is fixed, so this is the exact optimum
  of the full objective: the "homogeneous case" of the design.
- `solve_cpsat`: OR-Tools CP-SAT over cut positions (heterogeneous stages, memory caps), hinted
  with the min-max answer, fixed seed, time limit; status, objective and bound read back.
- brute force lives in the tests (differential check).

Objective (integer microseconds): (m - 1) * max_s T_s + sum_s T_s, the 1F1B / GPipe step time of
m microbatches (Narayanan et al. 2021), where T_s is stage s's per-microbatch forward+backward
time plus its fixed overhead. Runs of identical consecutive layers are compressed into segments,
so a 126-block model is a 3-segment problem: solve time does not grow with depth.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupingInstance:
    """Per-stage costs of every layer (stage s runs on its own device type and tp).

    layer_time_us[s][l]: time of layer l per microbatch (forward + backward) on stage s's devices.
    layer_mem_bytes[s][l]: bytes layer l adds on one rank of stage s (state + activations in flight).
    capacity_bytes[s]: bytes one rank of stage s may use for layers (after reserves).
    stage_overhead_us[s]: fixed time per microbatch of stage s (pipeline sends/receives).
    """

    layer_time_us: tuple[tuple[int, ...], ...]
    layer_mem_bytes: tuple[tuple[int, ...], ...]
    capacity_bytes: tuple[int, ...]
    stage_overhead_us: tuple[int, ...]
    microbatches: int

    @property
    def num_stages(self) -> int:
        return len(self.capacity_bytes)

    @property
    def num_layers(self) -> int:
        return len(self.layer_time_us[0]) if self.layer_time_us else 0

    def stage_time(self, s: int, a: int, b: int) -> int:
        return sum(self.layer_time_us[s][a:b]) + self.stage_overhead_us[s]

    def stage_memory(self, s: int, a: int, b: int) -> int:
        return sum(self.layer_mem_bytes[s][a:b])

    def objective(self, cuts: tuple[int, ...]) -> int | None:
        """Objective of cut positions (0 = c_0 < c_1 < ... < c_S = L), None if memory breaks."""
        times = []
        for s in range(self.num_stages):
            a, b = cuts[s], cuts[s + 1]
            if b <= a or self.stage_memory(s, a, b) > self.capacity_bytes[s]:
                return None
            times.append(self.stage_time(s, a, b))
        return (self.microbatches - 1) * max(times) + sum(times)


@dataclass(frozen=True)
class GroupingConfig:
    time_limit_s: float = 5.0
    seed: int = 0
    workers: int = 1  # one worker keeps CP-SAT deterministic


@dataclass(frozen=True)
class GroupingSolution:
    """Cut positions of the stages, the objective and what the solver proved about it."""

    cuts: tuple[int, ...] | None
    objective_us: int | None
    bound_us: int | None
    status: str  # "optimal", "feasible", "infeasible", "unknown"
    method: str
    solve_time_s: float

    @property
    def ranges(self) -> list[tuple[int, int]]:
        return [] if self.cuts is None else list(zip(self.cuts[:-1], self.cuts[1:]))

    @property
    def gap(self) -> float | None:
        if self.objective_us is None or self.bound_us is None or not self.objective_us:
            return None
        return max(self.objective_us - self.bound_us, 0) / self.objective_us


def segments(inst: GroupingInstance) -> list[tuple[int, int]]:
    """[start, end) runs of consecutive layers identical in time and memory on every stage."""
    out: list[tuple[int, int]] = []
    for layer in range(inst.num_layers):
        column = tuple((inst.layer_time_us[s][layer], inst.layer_mem_bytes[s][layer]) for s in range(inst.num_stages))
        if out and column == _column(inst, out[-1][0]):
            out[-1] = (out[-1][0], layer + 1)
        else:
            out.append((layer, layer + 1))
    return out


def _column(inst: GroupingInstance, layer: int) -> tuple:
    return tuple((inst.layer_time_us[s][layer], inst.layer_mem_bytes[s][layer]) for s in range(inst.num_stages))


def _prefix(row) -> list[int]:
    out = [0]
    for value in row:
        out.append(out[-1] + value)
    return out


def solve_minmax(inst: GroupingInstance) -> GroupingSolution:
    """Exact minimum of the slowest stage by dynamic programming; see the module docstring.

    best[s][j] = min over i of max(best[s-1][i], T_s(i, j)) over ranges [i, j) that fit stage s's
    memory. Scanning i downwards both time and memory only grow, so the scan stops at the first
    range over capacity or no better than the best found: about L/S steps per cell.

    >>> inst = GroupingInstance(((5, 5, 5, 5),) * 2, ((1,) * 4,) * 2, (10, 10), (0, 0), 4)
    >>> solve_minmax(inst).cuts, solve_minmax(inst).objective_us
    ((0, 2, 4), 50)
    """
    started = time.perf_counter()
    L, S = inst.num_layers, inst.num_stages
    if L < S:
        return GroupingSolution(None, None, None, "infeasible", "minmax-dp", time.perf_counter() - started)
    inf = float("inf")
    times = [_prefix(row) for row in inst.layer_time_us]
    mems = [_prefix(row) for row in inst.layer_mem_bytes]
    best = [[inf] * (L + 1) for _ in range(S + 1)]
    back = [[0] * (L + 1) for _ in range(S + 1)]
    best[0][0] = 0
    for s in range(1, S + 1):
        t, m, cap, ov = times[s - 1], mems[s - 1], inst.capacity_bytes[s - 1], inst.stage_overhead_us[s - 1]
        for j in range(s, L - (S - s) + 1):
            for i in range(j - 1, s - 2, -1):
                if m[j] - m[i] > cap:
                    break
                stage = t[j] - t[i] + ov
                if stage >= best[s][j]:
                    break
                value = max(best[s - 1][i], stage)
                if value < best[s][j]:
                    best[s][j], back[s][j] = value, i
    if best[S][L] == inf:
        return GroupingSolution(None, None, None, "infeasible", "minmax-dp", time.perf_counter() - started)
    cuts, j = [L], L
    for s in range(S, 0, -1):
        j = back[s][j]
        cuts.append(j)
    cuts = tuple(reversed(cuts))
    homogeneous = len(set(inst.layer_time_us)) == 1 and len(set(inst.stage_overhead_us)) == 1
    objective = inst.objective(cuts)
    # identical stage speeds: the sum of stage times is fixed, so the min-max cut is optimal
    status = "optimal" if homogeneous else "feasible"
    return GroupingSolution(cuts, objective, objective if homogeneous else None, status, "minmax-dp",
                            time.perf_counter() - started)
