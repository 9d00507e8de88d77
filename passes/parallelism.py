"""Parallelism pass for training: for every layout candidate (`passes.parallel_layouts`) that passes the
memory lower bound, group layers into stages (exact DP, CP-SAT where memory caps or heterogeneity make it a
joint problem), price the pipeline schedule, data-parallel reduction and optimizer step, and rank the
candidates by predicted step time; interleaved 1F1B is tried on the best ones, and the top ones refined.

Proposes only: the result is a ranked list of `TrainCandidate`s with their stage cuts; placement
(`passes.placement`) and the plan (`planner.planning`) apply it. The enumeration's rules are in
`passes.parallel_layouts`.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, replace

from cost_models.estimate_context import make_context
from cost_models.estimate_infer import forward_pass, hidden_size
from cost_models.estimate_train import (
    activation_per_layer,
    dp_comm_s,
    exposed_gradient_reduction_s,
    fp8_weight_cast_s,
    layer_step_times,
    optimizer_s,
    ranges_params,
    stage_p2p_s,
    stage_params,
    state_bytes,
)
from cost_models.parallel_config import Options
from cost_models.pipeline_schedule import (
    chunk_cuts,
    chunk_problem,
    exposed_sends_s,
    in_flight,
    pipeline_time,
    rank_chunks,
    runnable_virtual_stages,
)
from ir.errors import UserError
from ir.graph import Graph
from passes.layer_grouping import GroupingConfig, GroupingInstance, solve_minmax
from passes.layer_grouping_cpsat import solve_cpsat
from passes.parallel_layouts import (
    VIRTUAL_STAGES,
    StageGroup,
    TrainCandidate,
    candidates,
    divisors,
    lower_bound_excess,
    to_us,
    uniform_cuts,
)
from passes.placement import place

log = logging.getLogger(__name__)

EXACT_GROUPING = ("optimal", "equal chunks", "balanced chunks")  # grouping statuses exact for their layout

@dataclass
class SearchResult:
    ranked: list[TrainCandidate]
    evaluated: int
    pruned: int
    tightest: dict | None  # the closest miss when nothing fits: bytes needed vs capacity
    uniform_best: TrainCandidate | None = None  # best even split with one tp for all stages (Megatron-style)
    uniform_per_group_tp: TrainCandidate | None = None  # best even split when tp may differ per node group
    interrupted: bool = False  # Ctrl-C stopped the search: `ranked` holds the best found so far
    warm_start: bool = False  # a previous plan's layout was among the candidates (evaluated first)
    # every candidate's grouping was solved exactly (proven optimal, or interleaved equal chunks, which the rule
    # fixes): then the ranking of the layouts, and the best one, are exact for the cost model
    exact: bool = False


class _Evaluator:
    """Per-layer times and bytes for stage contexts, cached by what they depend on."""

    def __init__(self, graph: Graph, cluster, batch: int, seq: int, dtype: str):
        self.graph, self.cluster, self.batch, self.seq, self.dtype = graph, cluster, batch, seq, dtype
        self.devices = {node.device.name: node.device for node in cluster.nodes}
        self._times: dict[tuple, list[float]] = {}
        self._memory: dict[tuple, tuple] = {}
        self._links: dict[tuple, list] = {}

    def context(self, cand: TrainCandidate, group: StageGroup):
        options = Options(tp=group.tp, pp=cand.pp, dp=cand.dp, batch=self.batch, input_len=self.seq,
                          microbatch_size=cand.microbatch_size, recompute=cand.recompute,
                          zero_stage=cand.zero_stage, dtype=self.dtype, ep=cand.ep, ep_over_dp=True,
                          sequence_parallel=cand.sequence_parallel and group.tp > 1, schedule=cand.schedule,
                          virtual_stages=cand.virtual_stages)
        return make_context(self.graph, self.cluster, options, device=self.devices[group.device])

    def layer_times(self, ctx) -> list[float]:
        o = ctx.options
        key = (ctx.device.name, o.tp, o.microbatch_size, o.recompute, o.pp > 1, o.ep, o.sequence_parallel)
        if key not in self._times:
            fwd = forward_pass(ctx, "prefill", o.microbatch_size, self.seq, training=True)
            self._times[key] = layer_step_times(ctx, fwd)
        return self._times[key]


def _memory_rows(ev: _Evaluator, ctx, cand: TrainCandidate, stage: int) -> tuple[int, ...]:
    """Bytes each layer adds on one rank of `stage` (same terms as `stage_memory`)."""
    state, acts, logits = _memory_terms(ev, ctx, cand)
    flight = in_flight(cand.schedule, cand.pp, stage, cand.microbatches)
    row = [s + a * flight for s, a in zip(state, acts)]
    row[-1] += logits
    return tuple(int(v) for v in row)


def _memory_terms(ev: _Evaluator, ctx, cand: TrainCandidate) -> tuple:
    """Per-layer training state and activations of one microbatch on one rank, and the logits' bytes."""
    o = ctx.options
    key = (ctx.device.name, o.tp, cand.dp, cand.zero_stage, cand.microbatch_size, cand.recompute, cand.ep,
           o.sequence_parallel)
    if key not in ev._memory:
        state = [state_bytes(ctx, *stage_params(ctx, i, i + 1)).total for i in range(len(ev.graph.layers))]
        act = activation_per_layer(ctx, cand.microbatch_size, ev.seq)
        acts = [act if layer.kind == "block" else 0.0 for layer in ev.graph.layers]
        logits = cand.microbatch_size * ev.seq * ev.graph.config.get("vocab_size", 0) * 6 / o.tp
        ev._memory[key] = (state, acts, logits)
    return ev._memory[key]


def stage_links(cluster, cand: TrainCandidate) -> list[tuple[float, float]]:
    """(bytes/s, latency) of the link between consecutive stages, from their placed ranks."""
    placements = place(cluster, cand.dp, [(g.group, g.device, g.tp) for g in cand.groups for _ in range(g.stages)])
    out = []
    for a, b in itertools.pairwise(placements):
        link = cluster.link_between(a.ranks[0][0], b.ranks[0][0])
        out.append((link.pair_bandwidth_bytes_per_s, link.latency_s))
    return out


def _instance(ev: _Evaluator, cand: TrainCandidate) -> tuple[GroupingInstance, list]:
    ctxs = [ev.context(cand, g) for g in cand.groups for _ in range(g.stages)]
    times, mems, caps, overheads = [], [], [], []
    act_bytes = cand.microbatch_size * ev.seq * hidden_size(ctxs[0]) * 2
    links = stage_links(ev.cluster, cand)
    for s, ctx in enumerate(ctxs):
        times.append(tuple(to_us(t) for t in ev.layer_times(ctx)))
        mems.append(_memory_rows(ev, ctx, cand, s))
        caps.append(int(ctx.capacity_bytes - ctx.reserve))
        overheads.append(to_us(stage_p2p_s(act_bytes / ctx.options.tp, links, s, ctx.eff.comm)))  # 1/tp per rank
    return GroupingInstance(tuple(times), tuple(mems), tuple(caps), tuple(overheads), cand.microbatches), ctxs


def _extra_s(ev: _Evaluator, cand: TrainCandidate, ctxs, inst: GroupingInstance, cuts) -> float:
    """Exposed data-parallel reduction and optimizer step of the slowest stage (as train_step)."""
    stage_s = [inst.stage_time(s, a, b) / 1e6 for s, (a, b) in enumerate(itertools.pairwise(cuts))]
    worst = stage_s.index(max(stage_s))
    ctx, a, b = ctxs[worst], cuts[worst], cuts[worst + 1]
    dense, expert = stage_params(ctx, a, b)
    exposed = exposed_gradient_reduction_s(ctx, dp_comm_s(ctx, dense, expert), max(stage_s) * 2 / 3, dense + expert)
    return exposed + optimizer_s(ctx, dense, expert) + fp8_weight_cast_s(ctx, dense, expert)


def search_training(graph: Graph, cluster, *, batch: int, seq: int, dtype: str = "bf16",
                    fixed: dict | None = None, top_k: int = 5, refine_s: float = 2.0,
                    warm: dict | None = None) -> SearchResult:
    """Rank training layouts by predicted step time; see the module docstring for the rules.

    `warm`: a previous training plan's decision (re-targeting): its layout is evaluated first, so an
    interrupted search has it, and its stage cuts seed CP-SAT's refinement of that layout."""
    fixed = fixed or {}
    _check_fixed_ep(graph, fixed.get("ep"))
    _check_fixed_chunks(graph, fixed.get("pp"), fixed.get("virtual_stages"))
    ev = _Evaluator(graph, cluster, batch, seq, dtype)
    ranked: list[TrainCandidate] = []
    evaluated = pruned = 0
    tightest: dict | None = None
    uniform: dict[bool, TrainCandidate] = {}
    interrupted = False
    try:
        evaluated, pruned, tightest = _scan(ev, graph, cluster, batch, fixed, ranked, uniform, warm)
    except KeyboardInterrupt:
        if not ranked:
            raise
        interrupted, evaluated = True, len(ranked)
        log.warning("search interrupted: returning the best of %d layouts evaluated so far", len(ranked))
    if not interrupted and evaluated + pruned == 0:
        raise UserError(f"no training layout of {graph.model} on {cluster.describe()} matches "
                        f"{_describe_fixed(fixed) or 'the batch'}: tp must divide the attention and KV heads and fit a "
                        f"node, dp x tp x pp must not exceed the devices, ep must divide dp, and the batch ({batch}) must split "
                        f"into dp x microbatch x at least pp microbatches; change the fixed degrees or --batch")
    matched = any(_same_layout(c, warm) for c in ranked)
    ranked.sort(key=lambda c: (c.objective_us, c.label()))
    if not interrupted:
        ranked = _refine(ev, ranked, top_k, refine_s, warm)
    exact = not interrupted and all(c.status in EXACT_GROUPING for c in ranked)
    return SearchResult(ranked[:top_k], evaluated, pruned, tightest, uniform.get(True), uniform.get(False), interrupted,
                        matched, exact)


def _same_layout(cand: TrainCandidate, warm: dict | None) -> bool:
    """Whether `cand` has a previous decision's layout (degrees, per-stage tp, microbatching, recompute, ZeRO)."""
    if not warm or warm.get("kind") != "train":
        return False
    stage_tp = tuple(int(s.get("tp", 1)) for s in sorted(warm.get("stages") or [], key=lambda s: s["stage"]))
    return (cand.dp, cand.stage_tp, cand.microbatch_size, cand.recompute, cand.zero_stage, cand.ep) == (
        warm.get("dp"), stage_tp, warm.get("microbatch_size"), warm.get("recompute"), warm.get("zero_stage"),
        warm.get("ep", 1))


def _warm_cuts(warm: dict) -> tuple[int, ...] | None:
    """A previous decision's stage cuts (graph-layer positions), None for interleaved plans."""
    stages = sorted(warm.get("stages") or [], key=lambda s: s["stage"])
    if not stages or warm.get("virtual_stages", 1) > 1:
        return None
    return (*(s["layers"][0] for s in stages), stages[-1]["layers"][1])


def _check_fixed_ep(graph: Graph, ep: int | None) -> None:
    """UserError when a forced ep cannot shard the model's experts."""
    experts = graph.config.get("num_experts") or 0
    if not ep or ep == 1:
        return
    if not experts:
        raise UserError(f"--ep {ep} given but {graph.model} has no experts; drop --ep or use --ep 1")
    if experts % ep:
        raise UserError(f"--ep {ep} does not divide the {experts} experts of {graph.model}; use one of "
                        f"{', '.join(str(d) for d in divisors(experts))}")


def _check_fixed_chunks(graph: Graph, pp: int | None, v: int | None) -> None:
    """UserError when a forced pp and v cannot deal the model's blocks into chunks (`chunk_problem`)."""
    if not pp or pp < 2 or not v or v < 2:
        return
    blocks = sum(1 for layer in graph.layers if layer.kind == "block")
    problem = chunk_problem(blocks, pp, v)
    if problem:
        runs = runnable_virtual_stages(blocks, pp)
        raise UserError(f"{problem}; got --pp {pp} --virtual-stages {v}: "
                        + (f"use --virtual-stages in {runs}" if runs else f"use the 1f1b schedule at pp={pp}"))


def _describe_fixed(fixed: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(fixed.items()))


def _scan(ev: _Evaluator, graph: Graph, cluster, batch: int, fixed: dict, ranked: list, uniform: dict,
          warm: dict | None = None):
    """Evaluate every candidate into `ranked` (appended in place, so an interrupt keeps them); a warm
    start's layout first."""
    evaluated = pruned = 0
    tightest: dict | None = None
    cands = sorted(candidates(graph, cluster, batch, fixed), key=lambda c: not _same_layout(c, warm))
    for cand in cands:
        excess = lower_bound_excess(graph, cluster, cand)
        if excess > 0:
            pruned += 1
            if tightest is None or excess < tightest["excess_bytes"]:
                tightest = {"excess_bytes": excess, "candidate": cand.label(), "kind": "training state"}
            continue
        inst, ctxs = _instance(ev, cand)
        sol = solve_minmax(inst)
        only_interleaved = fixed.get("schedule") == "interleaved"
        if sol.cuts is None and not only_interleaved:
            pruned += 1  # interleaving keeps more in flight than 1F1B: it cannot fit either
            over = _memory_excess(inst)
            if tightest is None or over < tightest["excess_bytes"]:
                tightest = {"excess_bytes": over, "candidate": cand.label(), "kind": "state + activations"}
            continue
        if not only_interleaved:
            evaluated += 1
            score = to_us(sol.objective_us / 1e6 + _extra_s(ev, cand, ctxs, inst, sol.cuts))
            ranked.append(TrainCandidate(**{**cand.__dict__, "cuts": sol.cuts, "objective_us": score,
                                            "grouping_us": sol.objective_us, "bound_us": sol.bound_us,
                                            "status": sol.status, "solver": sol.method}))
            _track_uniform(ev, cand, ctxs, inst, uniform)
        for v in _virtual_options(graph, cand, fixed):
            made = _interleaved(ev, cand, v)
            evaluated, pruned = (evaluated + 1, pruned) if made else (evaluated, pruned + 1)
            if made:
                ranked.append(made)
    return evaluated, pruned, tightest


def _virtual_options(graph: Graph, cand: TrainCandidate, fixed: dict) -> list[int]:
    """Virtual stages per rank to try: one stage group, m a multiple of pp, the blocks dealt into pp x v chunks
    (`pipeline_schedule.chunk_sizes`: equal, or equal but for fewer on the first and last chunk)."""
    if len(cand.groups) != 1 or cand.pp < 2 or cand.microbatches % cand.pp or cand.schedule != "1f1b":
        return []
    if fixed.get("schedule") not in (None, "interleaved"):
        return []
    blocks = sum(1 for layer in graph.layers if layer.kind == "block")
    options = (fixed["virtual_stages"],) if fixed.get("virtual_stages") else VIRTUAL_STAGES
    return [v for v in options if v > 1 and chunk_problem(blocks, cand.pp, v) is None]


def _interleaved(ev: _Evaluator, cand: TrainCandidate, v: int) -> TrainCandidate | None:
    """`cand` under interleaved 1F1B with `v` chunks per rank (`pipeline_schedule.chunk_cuts`);
    None when a rank's state and activations in flight overflow its devices."""
    made = replace(cand, schedule="interleaved", virtual_stages=v)
    ctx = ev.context(made, cand.groups[0])
    times = ev.layer_times(ctx)
    state, acts, logits = _memory_terms(ev, ctx, made)
    num_layers, pp, m = len(ev.graph.layers), cand.pp, cand.microbatches
    blocks = [i for i, layer in enumerate(ev.graph.layers) if layer.kind == "block"]
    cuts = chunk_cuts(blocks, num_layers, pp * v)
    ranks = rank_chunks(cuts, pp)
    links = ev._links.setdefault((cand.dp, cand.groups), stage_links(ev.cluster, cand))
    act_bytes, pp_tp = cand.microbatch_size * ev.seq * hidden_size(ctx) * 2, ctx.options.tp  # 1/tp per rank
    stage_s = []
    for s, ranges in enumerate(ranks):
        layers = [i for a, b in ranges for i in range(a, b)]
        flight = in_flight("interleaved", pp, s, m, v)
        need = sum(state[i] + acts[i] * flight for i in layers) + (logits if ranges[-1][1] == num_layers else 0.0)
        if need > ctx.capacity_bytes - ctx.reserve:
            return None
        work = sum(times[i] for i in layers)
        stage_s.append(work + exposed_sends_s(work, stage_p2p_s(act_bytes / pp_tp, links, s, ctx.eff.comm), v,
                                              ctx.options.p2p_overlap))
    pipe = pipeline_time(stage_s, m, v)
    worst = stage_s.index(max(stage_s))
    dense, expert = ranges_params(ctx, ranks[worst])
    exposed = exposed_gradient_reduction_s(ctx, dp_comm_s(ctx, dense, expert), max(stage_s) * 2 / 3, dense + expert)
    extra = exposed + optimizer_s(ctx, dense, expert) + fp8_weight_cast_s(ctx, dense, expert)
    even = len(blocks) % (pp * v) == 0
    return replace(made, cuts=cuts, objective_us=to_us(pipe + extra), grouping_us=to_us(pipe), bound_us=None,
                   status="equal chunks" if even else "balanced chunks",
                   solver="interleaved equal split" if even else "interleaved split, short end chunks")


def _track_uniform(ev: _Evaluator, cand: TrainCandidate, ctxs, inst: GroupingInstance, best: dict) -> None:
    """Keep the best even-split plans: key True for one tp everywhere, False for any tp per group."""
    ucuts = uniform_cuts(ev.graph, cand.pp)
    uobj = inst.objective(ucuts)
    if uobj is None:
        return
    score = to_us(uobj / 1e6 + _extra_s(ev, cand, ctxs, inst, ucuts))
    made = TrainCandidate(**{**cand.__dict__, "cuts": ucuts, "objective_us": score, "status": "uniform",
                             "solver": "uniform split"})
    keys = [False] + ([True] if len({g.tp for g in cand.groups}) == 1 else [])
    for key in keys:
        if key not in best or score < best[key].objective_us:
            best[key] = made


def _memory_excess(inst: GroupingInstance) -> int:
    """How far the lightest even split is over the tightest stage's capacity (bytes)."""
    n, s = inst.num_layers, inst.num_stages
    cuts = [round(i * n / s) for i in range(s + 1)]
    return max(inst.stage_memory(k, cuts[k], cuts[k + 1]) - inst.capacity_bytes[k] for k in range(s))


def _refine(ev: _Evaluator, ranked: list[TrainCandidate], top_k: int, budget_s: float,
            warm: dict | None = None) -> list[TrainCandidate]:
    """Heterogeneous candidates at the top get the exact CP-SAT grouping (min-max DP is only a
    hint there, since stage speeds differ; a warm start's cuts are another); homogeneous ones are
    already optimal."""
    out = []
    for cand in ranked[: max(top_k * 2, top_k)]:
        if len(cand.groups) == 1:
            out.append(cand)
            continue
        inst, ctxs = _instance(ev, cand)
        prior = _warm_cuts(warm) if _same_layout(cand, warm) and cand.virtual_stages == 1 else None
        sol = solve_cpsat(inst, GroupingConfig(time_limit_s=budget_s / max(top_k, 1)), prior)
        score = to_us(sol.objective_us / 1e6 + _extra_s(ev, cand, ctxs, inst, sol.cuts))
        out.append(TrainCandidate(**{**cand.__dict__, "cuts": sol.cuts, "objective_us": score,
                                     "grouping_us": sol.objective_us, "bound_us": sol.bound_us,
                                     "status": sol.status, "solver": sol.method}))
    out.sort(key=lambda c: (c.objective_us, c.label()))
    return out + ranked[len(out):]
