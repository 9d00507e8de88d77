"""Training layouts the parallelism search considers: (dp, tp per stage group, pp, expert parallelism,
microbatch size, recomputation, ZeRO stage, schedule) candidates and the memory lower bound that prunes
them before any layer grouping is solved. `passes.parallelism` searches over them.

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
  one homogeneous stage group interleaved 1F1B with v in VIRTUAL_STAGES on equal chunks, or equal but
  for fewer blocks on the first and last (m a multiple of pp; `pipeline_schedule.chunk_sizes`). GPipe
  has 1F1B's step time and at least its activation memory (all m microbatches in flight against
  pp - s), so it is dominated and only evaluated when fixed (`fixed["schedule"]`);
- sequence parallelism (Korthikanti et al. 2022) is on whenever tp > 1 unless fixed off: it
  replaces each tp all-reduce by a reduce-scatter + all-gather of the same volume, splits norms
  and dropouts over tp and divides their activations by tp, so it never costs time or memory here;
- memory lower bound: with the candidate's ZeRO stage and recomputation, the model's training
  state spread evenly over all devices of a replica must fit; candidates failing it are pruned
  before any grouping is solved, and the smallest excess is kept to explain infeasibility.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from cost_models.estimate_context import layer_expert_bytes
from cost_models.memory import ADAM_BYTES_PER_PARAM
from ir.graph import Graph, dtype_bytes

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


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def tp_ok(graph: Graph, tp: int, node_size: int, replicate_kv: bool = False) -> bool:
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
        if dp * tp * pp <= counts[0] and pp <= blocks and tp_ok(graph, tp, node.devices_per_node):
            return [(dp, (StageGroup(0, node.device.name, tp, pp),))]
        return []
    layouts = []
    for dp in divisors(math.gcd(*counts)):
        if fixed.get("dp") and dp != fixed["dp"]:
            continue
        per_group = []
        for (node, _), devices in zip(groups, counts):
            options = []
            for tp in TP_DEGREES:
                if fixed.get("tp") and tp != fixed["tp"]:
                    continue
                if (devices // dp) % tp or not tp_ok(graph, tp, node.devices_per_node):
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


def lower_bound_excess(graph: Graph, cluster, cand: TrainCandidate) -> float:
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
    options = divisors(math.gcd(experts, dp)) if experts else [1]
    return [e for e in options if e == fixed["ep"]] if fixed.get("ep") else options


def candidates(graph, cluster, batch: int, fixed: dict):
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
