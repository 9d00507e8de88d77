"""Parallelism pass for training: enumerate (dp, tp per stage group, pp, expert parallelism,
microbatch size, recomputation, ZeRO stage), prune by memory lower bounds, group layers for each survivor and
rank them by predicted step time.

Proposes only: the result is a ranked list of `TrainCandidate`s with their stage cuts; placement
(`passes.placement`) and the plan (`planner.planning`) apply it.

Rules the enumeration follows:
- tp stays inside a node (tp <= devices per node) and divides the attention heads (and the KV
  heads, or is a multiple of them);
- every device is used: for each node group g, dp x pp_g x tp_g = its devices (heterogeneous
  clusters get per-group tp and stage counts; layer shares follow from the grouping pass);
- the global batch splits into dp x microbatch-size x microbatches exactly, with at least as many
  microbatches as pipeline stages (torch.distributed.pipelining's schedules require it);
- MoE models: ep divides the experts and dp (ep ranks are data-parallel replicas, as in
  Megatron-Core and torchtitan); each rank keeps E/ep experts, expert state is ZeRO-sharded over
  dp / ep, and each MoE layer pays two all-to-alls forward and two backward;
- pipeline schedule (`cost_models.pipeline_schedule`): 1F1B on the layer grouping's cuts, and for
  one homogeneous stage group interleaved 1F1B with v in VIRTUAL_STAGES on equal chunks (Megatron-LM's
  rules: m a multiple of pp, blocks a multiple of pp x v). GPipe has 1F1B's step time and at least
  its activation memory (all m microbatches in flight against pp - s), so it is dominated and only
  evaluated when fixed (`fixed["schedule"]`);
- sequence parallelism (Korthikanti et al. 2022) is on whenever tp > 1 unless fixed off: it
  replaces each tp all-reduce by a reduce-scatter + all-gather of the same volume, splits norms
  and dropouts over tp and divides their activations by tp, so it never costs time or memory here;
- memory lower bound: with the candidate's ZeRO stage and recomputation, the model's training
  state spread evenly over all devices of a replica must fit; candidates failing it are pruned
  before any grouping is solved, and the smallest excess is kept to explain infeasibility.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass, field, replace

from cost_models.estimate_context import layer_expert_bytes, make_context
from cost_models.estimate_infer import forward_pass, hidden_size
from cost_models.estimate_train import (
    _activation_per_layer,
    _dp_comm,
    _layer_step_times,
    optimizer_s,
    ranges_params,
    stage_p2p_s,
    stage_params,
    state_bytes,
)
from cost_models.memory import ADAM_BYTES_PER_PARAM
from cost_models.parallel_config import Options
from cost_models.pipeline_schedule import chunk_cuts, in_flight, pipeline_time, rank_chunks
from ir.errors import UserError
from ir.graph import Graph, dtype_bytes
from passes.layer_grouping import GroupingConfig, GroupingInstance, solve_minmax
from passes.layer_grouping_cpsat import solve_cpsat
from passes.placement import place

log = logging.getLogger(__name__)

MICROBATCH_SIZES = (1, 2, 4, 8)
RECOMPUTE = ("none", "selective", "full")
ZERO_STAGES = (0, 1, 2, 3)
TP_DEGREES = (1, 2, 4, 8)
VIRTUAL_STAGES = (2, 4)  # interleaved 1F1B chunks per rank tried (Narayanan et al. 2021, Sec. 2.2.2)


def to_us(seconds: float) -> int:
    """Seconds to integer microseconds (the solvers' time unit)."""
    return max(round(seconds * 1e6), 0)


@dataclass(frozen=True)
class StageGroup:
    """Stages on one node group: `stages` pipeline stages of `tp` devices of `device` each."""

    group: int
    device: str
    tp: int
    stages: int


@dataclass(frozen=True)
class TrainCandidate:
    dp: int
    groups: tuple[StageGroup, ...]
    microbatch_size: int
    microbatches: int
    recompute: str
    zero_stage: int
    ep: int = 1  # expert-parallel degree, taken from the dp replicas (1 for dense models)
    schedule: str = "1f1b"  # pipeline schedule (cost_models.pipeline_schedule.SCHEDULES)
    virtual_stages: int = 1  # interleaved: chunks per rank; `cuts` then has pp x v + 1 entries, round-robin
    sequence_parallel: bool = False  # on the stages with tp > 1
    cuts: tuple[int, ...] = ()
    objective_us: int = 0  # predicted step time: pipeline + exposed dp reduction + optimizer
    grouping_us: int = 0  # the grouping problem's objective (pipeline time) that bound_us bounds
    bound_us: int | None = None
    status: str = ""
    solver: str = ""
    extras: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def pp(self) -> int:
        return sum(g.stages for g in self.groups)

    @property
    def stage_tp(self) -> tuple[int, ...]:
        return tuple(g.tp for g in self.groups for _ in range(g.stages))

    def label(self) -> str:
        tps = "/".join(f"{g.tp}" for g in self.groups)
        return (f"dp={self.dp} tp={tps} pp={self.pp} mbs={self.microbatch_size} m={self.microbatches} "
                f"recompute={self.recompute} zero={self.zero_stage}" + (f" ep={self.ep}" if self.ep > 1 else "")
                + (f" schedule={self.schedule}" if self.schedule != "1f1b" else "")
                + (f" v={self.virtual_stages}" if self.virtual_stages > 1 else "") + (" sp" if self.sequence_parallel else ""))


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _tp_ok(graph: Graph, tp: int, node_size: int, replicate_kv: bool = False) -> bool:
    """tp fits a node and divides the attention heads and the KV heads; serving engines (vLLM)
    may instead replicate KV heads when tp is a multiple of them (`replicate_kv`)."""
    heads, kv = graph.config.get("num_heads"), graph.config.get("num_kv_heads")
    if tp > node_size:
        return False
    if heads and heads % tp:
        return False
    if not kv or tp == 1 or kv % tp == 0:
        return True
    return replicate_kv and tp % kv == 0


def enumerate_layouts(graph: Graph, cluster, fixed: dict) -> list[tuple[int, tuple[StageGroup, ...]]]:
    """(dp, stage groups) layouts that use every device; `fixed` may pin dp, tp and pp."""
    groups = [(node, count) for node, count in cluster.groups]
    counts = [node.devices_per_node * count for node, count in groups]
    blocks = sum(1 for layer in graph.layers if layer.kind == "block")
    if len(groups) == 1 and all(fixed.get(k) for k in ("dp", "tp", "pp")):
        # every degree given: use that many devices, even if fewer than the cluster has
        node = groups[0][0]
        dp, tp, pp = fixed["dp"], fixed["tp"], fixed["pp"]
        if dp * tp * pp <= counts[0] and pp <= blocks and _tp_ok(graph, tp, node.devices_per_node):
            return [(dp, (StageGroup(0, node.device.name, tp, pp),))]
        return []
    layouts = []
    for dp in _divisors(math.gcd(*counts)):
        if fixed.get("dp") and dp != fixed["dp"]:
            continue
        per_group = []
        for (node, _), devices in zip(groups, counts):
            options = []
            for tp in TP_DEGREES:
                if fixed.get("tp") and tp != fixed["tp"]:
                    continue
                if (devices // dp) % tp or not _tp_ok(graph, tp, node.devices_per_node):
                    continue
                options.append((tp, devices // (dp * tp)))
            per_group.append(options)
        for combo in itertools.product(*per_group):
            pp = sum(stages for _, stages in combo)
            if pp > blocks or (fixed.get("pp") and pp != fixed["pp"]):
                continue
            layouts.append((dp, tuple(StageGroup(g, groups[g][0].device.name, tp, stages)
                                      for g, (tp, stages) in enumerate(combo))))
    return layouts


@dataclass
class SearchResult:
    ranked: list[TrainCandidate]
    evaluated: int
    pruned: int
    tightest: dict | None  # the closest miss when nothing fits: bytes needed vs capacity
    uniform_best: TrainCandidate | None = None  # best even split with one tp for all stages (Megatron-style)
    uniform_per_group_tp: TrainCandidate | None = None  # best even split when tp may differ per node group
    interrupted: bool = False  # Ctrl-C stopped the search: `ranked` holds the best found so far


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
            fwd = forward_pass(ctx, "prefill", o.microbatch_size, self.seq)
            self._times[key] = _layer_step_times(ctx, fwd)
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
        act = _activation_per_layer(ctx, cand.microbatch_size, ev.seq)
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
        overheads.append(to_us(stage_p2p_s(act_bytes, links, s, ctx.eff.comm)))
    return GroupingInstance(tuple(times), tuple(mems), tuple(caps), tuple(overheads), cand.microbatches), ctxs


def _lower_bound_excess(graph: Graph, cluster, cand: TrainCandidate) -> float:
    """Bytes per device over capacity even if the training state spread perfectly (<= 0: may fit)."""
    expert = sum(layer_expert_bytes(graph, i) for i in range(len(graph.layers))) / dtype_bytes(graph.dtype)
    replica = sum(g.stages * g.tp for g in cand.groups)
    need = ((graph.param_count - expert) * _state_per_param(cand.dp, cand.zero_stage)
            + expert / cand.ep * _state_per_param(cand.dp // cand.ep, cand.zero_stage)) / replica
    capacity = min(node.device.memory_bytes for node in cluster.nodes)
    return need - capacity


def _state_per_param(dp: int, zero_stage: int) -> float:
    """Training-state bytes per parameter sharded over `dp` ranks at `zero_stage` (memory.py)."""
    if zero_stage >= 3:
        return (2 + 2 + ADAM_BYTES_PER_PARAM) / dp
    return 2 + 2 + ADAM_BYTES_PER_PARAM / (dp if zero_stage >= 1 else 1)


def ep_degrees(graph: Graph, dp: int, fixed: dict) -> list[int]:
    """Expert-parallel degrees of a layout: divisors of both the experts and dp (1 for dense models)."""
    experts = graph.config.get("num_experts") or 0
    options = _divisors(math.gcd(experts, dp)) if experts else [1]
    return [e for e in options if e == fixed["ep"]] if fixed.get("ep") else options


def _candidates(graph, cluster, batch: int, fixed: dict):
    for dp, groups in enumerate_layouts(graph, cluster, fixed):
        for ep, mbs, recompute, zero in itertools.product(ep_degrees(graph, dp, fixed), MICROBATCH_SIZES, RECOMPUTE,
                                                          ZERO_STAGES):
            if fixed.get("microbatch_size") and mbs != fixed["microbatch_size"]:
                continue
            if fixed.get("recompute") and recompute != fixed["recompute"]:
                continue
            if fixed.get("zero_stage") is not None and zero != fixed["zero_stage"]:
                continue
            if batch % (dp * mbs) or (zero and dp == 1):
                continue
            microbatches = batch // (dp * mbs)
            if sum(g.stages for g in groups) > microbatches:
                continue  # pipeline schedules need at least one microbatch per stage
            sp = fixed.get("sequence_parallel", True) and any(g.tp > 1 for g in groups)
            schedule = fixed.get("schedule") if fixed.get("schedule") == "gpipe" else "1f1b"
            yield TrainCandidate(dp, groups, mbs, microbatches, recompute, zero, ep, schedule, 1, bool(sp))


def uniform_cuts(graph: Graph, stages: int) -> tuple[int, ...]:
    """Blocks split evenly by count (the first stages take the remainder); the embedding stays on
    the first stage and the head on the last: what splitting by layer count or parameters gives."""
    blocks = [i for i, layer in enumerate(graph.layers) if layer.kind == "block"]
    q, r = divmod(len(blocks), stages)
    cuts, taken = [0], 0
    for s in range(stages - 1):
        taken += q + (1 if s < r else 0)
        cuts.append(blocks[taken - 1] + 1)
    cuts.append(len(graph.layers))
    return tuple(cuts)


def _extra_s(ev: _Evaluator, cand: TrainCandidate, ctxs, inst: GroupingInstance, cuts) -> float:
    """Exposed data-parallel reduction and optimizer step of the slowest stage (as train_step)."""
    stage_s = [inst.stage_time(s, a, b) / 1e6 for s, (a, b) in enumerate(itertools.pairwise(cuts))]
    worst = stage_s.index(max(stage_s))
    ctx, a, b = ctxs[worst], cuts[worst], cuts[worst + 1]
    dense, expert = stage_params(ctx, a, b)
    exposed = max(_dp_comm(ctx, dense, expert) - max(stage_s) * 2 / 3, 0.0)
    return exposed + optimizer_s(ctx, dense, expert)


def search_training(graph: Graph, cluster, *, batch: int, seq: int, dtype: str = "bf16",
                    fixed: dict | None = None, top_k: int = 5, refine_s: float = 2.0) -> SearchResult:
    """Rank training layouts by predicted step time; see the module docstring for the rules."""
    fixed = fixed or {}
    _check_fixed_ep(graph, fixed.get("ep"))
    ev = _Evaluator(graph, cluster, batch, seq, dtype)
    ranked: list[TrainCandidate] = []
    evaluated = pruned = 0
    tightest: dict | None = None
    uniform: dict[bool, TrainCandidate] = {}
    interrupted = False
    try:
        evaluated, pruned, tightest = _scan(ev, graph, cluster, batch, fixed, ranked, uniform)
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
    ranked.sort(key=lambda c: (c.objective_us, c.label()))
    if not interrupted:
        ranked = _refine(ev, ranked, top_k, refine_s)
    return SearchResult(ranked[:top_k], evaluated, pruned, tightest, uniform.get(True), uniform.get(False), interrupted)


def _check_fixed_ep(graph: Graph, ep: int | None) -> None:
    """UserError when a forced ep cannot shard the model's experts."""
    experts = graph.config.get("num_experts") or 0
    if not ep or ep == 1:
        return
    if not experts:
        raise UserError(f"--ep {ep} given but {graph.model} has no experts; drop --ep or use --ep 1")
    if experts % ep:
        raise UserError(f"--ep {ep} does not divide the {experts} experts of {graph.model}; use one of "
                        f"{', '.join(str(d) for d in _divisors(experts))}")


def _describe_fixed(fixed: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(fixed.items()))


def _scan(ev: _Evaluator, graph: Graph, cluster, batch: int, fixed: dict, ranked: list, uniform: dict):
    """Evaluate every candidate into `ranked` (appended in place, so an interrupt keeps them)."""
    evaluated = pruned = 0
    tightest: dict | None = None
    for cand in _candidates(graph, cluster, batch, fixed):
        excess = _lower_bound_excess(graph, cluster, cand)
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
    """Virtual stages per rank to try: one stage group, m a multiple of pp, blocks a multiple of pp x v."""
    if len(cand.groups) != 1 or cand.pp < 2 or cand.microbatches % cand.pp or cand.schedule != "1f1b":
        return []
    if fixed.get("schedule") not in (None, "interleaved"):
        return []
    blocks = sum(1 for layer in graph.layers if layer.kind == "block")
    options = (fixed["virtual_stages"],) if fixed.get("virtual_stages") else VIRTUAL_STAGES
    return [v for v in options if v > 1 and blocks % (cand.pp * v) == 0]


def _interleaved(ev: _Evaluator, cand: TrainCandidate, v: int) -> TrainCandidate | None:
    """`cand` under interleaved 1F1B with `v` equal chunks per rank (cost_models.pipeline_schedule);
    None when a rank's state and activations in flight overflow its devices."""
    made = replace(cand, schedule="interleaved", virtual_stages=v)
    ctx = ev.context(made, cand.groups[0])
    times = ev.layer_times(ctx)
    state, acts, logits = _memory_terms(ev, ctx, made)
    num_layers, pp, m = len(ev.graph.layers), cand.pp, cand.microbatches
    cuts = chunk_cuts([i for i, layer in enumerate(ev.graph.layers) if layer.kind == "block"], num_layers, pp * v)
    ranks = rank_chunks(cuts, pp)
    links = ev._links.setdefault((cand.dp, cand.groups), stage_links(ev.cluster, cand))
    act_bytes = cand.microbatch_size * ev.seq * hidden_size(ctx) * 2
    stage_s = []
    for s, ranges in enumerate(ranks):
        layers = [i for a, b in ranges for i in range(a, b)]
        flight = in_flight("interleaved", pp, s, m, v)
        need = sum(state[i] + acts[i] * flight for i in layers) + (logits if ranges[-1][1] == num_layers else 0.0)
        if need > ctx.capacity_bytes - ctx.reserve:
            return None
        stage_s.append(sum(times[i] for i in layers) + v * stage_p2p_s(act_bytes, links, s, ctx.eff.comm))
    pipe = pipeline_time(stage_s, m, v)
    worst = stage_s.index(max(stage_s))
    dense, expert = ranges_params(ctx, ranks[worst])
    exposed = max(_dp_comm(ctx, dense, expert) - max(stage_s) * 2 / 3, 0.0)
    return replace(made, cuts=cuts, objective_us=to_us(pipe + exposed + optimizer_s(ctx, dense, expert)),
                   grouping_us=to_us(pipe), bound_us=None, status="equal chunks", solver="interleaved equal split")


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


def _refine(ev: _Evaluator, ranked: list[TrainCandidate], top_k: int, budget_s: float) -> list[TrainCandidate]:
    """Heterogeneous candidates at the top get the exact CP-SAT grouping (min-max DP is only a
    hint there, since stage speeds differ); homogeneous ones are already optimal."""
    out = []
    for cand in ranked[: max(top_k * 2, top_k)]:
        if len(cand.groups) == 1:
            out.append(cand)
            continue
        inst, ctxs = _instance(ev, cand)
        sol = solve_cpsat(inst, GroupingConfig(time_limit_s=budget_s / max(top_k, 1)))
        score = to_us(sol.objective_us / 1e6 + _extra_s(ev, cand, ctxs, inst, sol.cuts))
        out.append(TrainCandidate(**{**cand.__dict__, "cuts": sol.cuts, "objective_us": score,
                                     "grouping_us": sol.objective_us, "bound_us": sol.bound_us,
                                     "status": sol.status, "solver": sol.method}))
    out.sort(key=lambda c: (c.objective_us, c.label()))
    return out + ranked[len(out):]
