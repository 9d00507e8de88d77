"""CP-SAT model of the layer-grouping problem (see `passes.layer_grouping` for the problem).

Model, built in a fixed order (STYLE.md, habit 6):
  data      segments r = [st_r, en_r) of identical layers, per-stage times t[r][s] and bytes m[r][s]
  variables cut[s] in [0, L]       stage s covers layers [cut[s], cut[s+1])
            n[r][s] in [0, len_r]  layers of segment r in stage s = max(0, min(cut[s+1], en_r) - max(cut[s], st_r))
            t_max                  the slowest stage's time
  constraints cut[0] = 0, cut[S] = L, cut[s+1] >= cut[s] + 1;  sum_r n[r][s] m[r][s] <= cap[s];
            T[s] = ov[s] + sum_r n[r][s] t[r][s] <= t_max
  objective minimise (m - 1) t_max + sum_s T[s]
No CP-SAT type leaves this module.
"""

from __future__ import annotations

import time
from dataclasses import replace

from ortools.sat.python import cp_model

from passes.cpsat import SolverConfig, solve
from passes.layer_grouping import GroupingConfig, GroupingInstance, GroupingSolution, segments, solve_minmax


def _build(inst: GroupingInstance, segs: list[tuple[int, int]]):
    model = cp_model.CpModel()
    S, L = inst.num_stages, inst.num_layers
    cut = [model.new_int_var(0, L, f"cut{s}") for s in range(S + 1)]  # cut[s]: first layer of stage s
    model.add(cut[0] == 0)
    model.add(cut[S] == L)
    for s in range(S):
        model.add(cut[s + 1] >= cut[s] + 1)
    horizon = max(sum(row) + ov for row, ov in zip(inst.layer_time_us, inst.stage_overhead_us))
    t_max = model.new_int_var(0, horizon, "t_max")  # slowest stage time (us)
    stage_time = []
    for s in range(S):
        terms, mem_terms = [], []
        for r, (st, en) in enumerate(segs):
            lo = model.new_int_var(0, L, f"lo{r}_{s}")
            hi = model.new_int_var(0, L, f"hi{r}_{s}")
            n = model.new_int_var(0, en - st, f"n{r}_{s}")  # layers of segment r in stage s
            model.add_max_equality(lo, [cut[s], st])
            model.add_min_equality(hi, [cut[s + 1], en])
            diff = model.new_int_var(-L, L, f"d{r}_{s}")
            model.add(diff == hi - lo)
            model.add_max_equality(n, [diff, 0])
            terms.append(n * inst.layer_time_us[s][st])
            mem_terms.append(n * inst.layer_mem_bytes[s][st])
        model.add(sum(mem_terms) <= inst.capacity_bytes[s])
        t = model.new_int_var(0, horizon, f"T{s}")
        model.add(t == inst.stage_overhead_us[s] + sum(terms))
        model.add(t <= t_max)
        stage_time.append(t)
    model.minimize((inst.microbatches - 1) * t_max + sum(stage_time))
    return model, cut


def solve_cpsat(inst: GroupingInstance, config: GroupingConfig | None = None,
                prior_cuts: tuple[int, ...] | None = None) -> GroupingSolution:
    """Optimal grouping by CP-SAT, warm-started (and backed) by the exact min-max answer, or by
    `prior_cuts` (a previous plan's grouping) when those are feasible here and score better.

    >>> inst = GroupingInstance(((4, 4, 4, 4), (1, 1, 1, 1)), ((1,) * 4,) * 2, (10, 10), (0, 0), 8)
    >>> s = solve_cpsat(inst)
    >>> s.cuts, s.objective_us, s.status
    ((0, 1, 4), 35, 'optimal')
    """
    config = config or GroupingConfig()
    started = time.perf_counter()
    hint = solve_minmax(inst)
    prior = inst.objective(prior_cuts) if prior_cuts and len(prior_cuts) == inst.num_stages + 1 \
        and prior_cuts[0] == 0 and prior_cuts[-1] == inst.num_layers else None
    if prior is not None and (hint.objective_us is None or prior < hint.objective_us):
        hint = replace(hint, cuts=tuple(prior_cuts), objective_us=prior)
    if inst.num_layers < inst.num_stages:
        return GroupingSolution(None, None, None, "infeasible", "cp-sat", time.perf_counter() - started)
    model, cut = _build(inst, segments(inst))
    if hint.cuts is not None:
        for var, value in zip(cut, hint.cuts):
            model.add_hint(var, value)
    result = solve(model, SolverConfig(config.time_limit_s, config.workers, config.seed))
    name = result.status
    elapsed = time.perf_counter() - started
    if name == "invalid":
        raise RuntimeError("the layer-grouping CP-SAT model is invalid (a planner bug)")
    if result.found:
        cuts = tuple(result.value(c) for c in cut)
        objective = inst.objective(cuts)
        if hint.objective_us is not None and (objective is None or hint.objective_us < objective):
            cuts, objective = hint.cuts, hint.objective_us  # never worse than the warm start
        return GroupingSolution(cuts, objective, int(result.bound), name, "cp-sat", elapsed)
    if name == "infeasible":
        return GroupingSolution(None, None, None, "infeasible", "cp-sat", elapsed)
    return GroupingSolution(hint.cuts, hint.objective_us, None, "feasible" if hint.cuts else "unknown",
                            "minmax (cp-sat found nothing better in its time limit)", elapsed)
