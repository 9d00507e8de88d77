"""Memory tiers and offload: which items (weight layers, KV cache, optimizer states, activations, MoE
experts) leave HBM for host DRAM, CXL or NVMe, chosen by CP-SAT as a placement with transfer cost.

Tiers come from the cluster spec: HBM (the device), host DRAM behind the node's `host_link` (PCIe or
C2C; node memory shared by its devices) and the node's `tiers` (NVMe, CXL; bandwidth shared by the
node's devices and capped by the host link they cross). Achievable PCIe bandwidth is taken as 80% of
line rate (the H100 datasheet's 64 GB/s per direction gives ~50-55 GB/s measured; see the pcie-gen5
link's source in cost_models/hardware/nodes.yaml).

An item placed off HBM moves `overlap_bytes` per step that can hide behind compute (layer-by-layer
prefetch of weights and KV with a double buffer, as in FlexGen, Sheng et al. 2023, and
DeepSpeed ZeRO-Inference; gradients streamed out during backward, as in ZeRO-Offload, Ren et al.
2021, Sec. 4) and `exposed_bytes` per step that cannot (ZeRO-Offload's updated parameters come back
after the CPU Adam step). The cost of a placement is exposed transfer time plus overlappable
transfer time beyond the compute window: step = base step + max(0, sum overlap - window) + exposed.
MoE experts are read only if routed: a step at batch B touches 1 - (1 - k/E)^B of them
(expert offloading as in Eliseev & Mazur 2023, "Fast Inference of MoE Models with Offloading").

Model (OR-Tools CP-SAT): x[i, t] = 1 when item i lives in tier t; each item in one tier; bytes per
tier within capacity; time in integer microseconds. Warm-started with a greedy (move the items with
the least traffic per byte to the fastest tier with room); the greedy answer is returned if the
solver finds nothing better.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from ortools.sat.python import cp_model

from ir.errors import UserError
from passes.cpsat import SolverConfig, solve

log = logging.getLogger(__name__)

PCIE_EFFICIENCY = 0.8
HBM = "hbm"


@dataclass(frozen=True)
class Tier:
    """One memory tier as seen from one device: capacity and bandwidth to/from HBM."""

    name: str
    capacity_bytes: int
    bandwidth_bytes_per_s: float
    source: str = ""


@dataclass(frozen=True)
class OffloadItem:
    """Something that may leave HBM: its bytes and what it moves per step when it does."""

    name: str
    kind: str  # "weights", "kv_cache", "optimizer", "activations", "experts"
    bytes: int
    overlap_bytes: float  # moved per step, hideable behind compute
    exposed_bytes: float = 0.0  # moved per step on the critical path


@dataclass(frozen=True)
class OffloadInstance:
    """Items, tiers (tiers[0] is HBM with the capacity left for offloadable items) and the compute
    time per step that overlappable transfers can hide behind."""

    items: tuple[OffloadItem, ...]
    tiers: tuple[Tier, ...]
    window_s: float


@dataclass(frozen=True)
class OffloadConfig:
    """Solver options: wall-clock limit, seed, worker threads."""

    time_limit_s: float = 5.0
    seed: int = 0
    workers: int = 1  # one worker keeps CP-SAT deterministic, as everywhere in the planner


@dataclass(frozen=True)
class OffloadSolution:
    """Tier name per item, added step time (s) and how it was found."""

    placement: dict[str, str] = field(hash=False)
    added_s: float
    transfer_s: float
    bound_s: float | None  # the proven lower bound on added_s (None: nothing proven)
    status: str
    method: str

    def bytes_by_tier(self, instance: OffloadInstance) -> dict[str, int]:
        out = {t.name: 0 for t in instance.tiers}
        for item in instance.items:
            out[self.placement[item.name]] += item.bytes
        return out


def _us(seconds: float) -> int:
    """Seconds to integer microseconds (rounded up), the solver's time unit."""
    return math.ceil(seconds * 1e6)


def memory_tiers(cluster, hbm_bytes: int, node=None) -> tuple[Tier, ...]:
    """HBM (`hbm_bytes` usable) then host DRAM and the node's slower tiers, per device.

    >>> from cost_models.cluster import parse_cluster
    >>> [t.name for t in memory_tiers(parse_cluster("1xH100-SXM"), 10**9)]
    ['hbm', 'host', 'nvme']
    """
    node = node or cluster.nodes[0]
    dev = node.device
    tiers = [Tier(HBM, int(hbm_bytes), dev.memory_bandwidth_bytes_per_s, "device spec")]
    if node.host_link is None or not node.host_memory_bytes:
        return tuple(tiers)
    link = node.host_link.bandwidth_bytes_per_s * PCIE_EFFICIENCY
    share = max(node.devices_per_node, 1)
    tiers.append(Tier("host", node.host_memory_bytes // share, link, node.host_link.source))
    for t in node.tiers:
        tiers.append(Tier(t.name, t.capacity_bytes // share, min(t.bandwidth_bytes_per_s / share, link), t.source))
    return tuple(tiers)


def validate(instance: OffloadInstance) -> None:
    """Raise a one-line UserError for a tier without capacity or an item no tier can hold."""
    for t in instance.tiers[1:]:
        if t.capacity_bytes <= 0 or t.bandwidth_bytes_per_s <= 0:
            raise UserError(f"memory tier '{t.name}' has zero capacity or bandwidth ({t.capacity_bytes} B, "
                            f"{t.bandwidth_bytes_per_s} B/s); give it a positive size in the cluster spec or remove it")
    largest = max((t.capacity_bytes for t in instance.tiers), default=0)
    for item in instance.items:
        if item.bytes > largest:
            raise UserError(f"{item.kind} item '{item.name}' needs {item.bytes / 1e9:.2f} GB, more than any memory "
                            f"tier holds (largest {largest / 1e9:.2f} GB); split it with more tp/pp or add memory")


def _cost_s(instance: OffloadInstance, placement: dict[str, str]) -> tuple[float, float]:
    """(added step time, total transfer time) of a placement."""
    bw = {t.name: t.bandwidth_bytes_per_s for t in instance.tiers}
    overlap = exposed = 0.0
    for item in instance.items:
        tier = placement[item.name]
        if tier != HBM:
            overlap += item.overlap_bytes / bw[tier]
            exposed += item.exposed_bytes / bw[tier]
    return max(overlap - instance.window_s, 0.0) + exposed, overlap + exposed


def greedy_offload(instance: OffloadInstance) -> dict[str, str] | None:
    """Everything in HBM, then move the least-traffic-per-byte items out until HBM fits; None if it cannot."""
    used = {t.name: 0 for t in instance.tiers}
    placement = {}
    for item in instance.items:
        placement[item.name] = HBM
        used[HBM] += item.bytes
    order = sorted(instance.items, key=lambda i: ((i.overlap_bytes + 4 * i.exposed_bytes) / max(i.bytes, 1), i.name))
    for item in order:
        if used[HBM] <= instance.tiers[0].capacity_bytes:
            break
        for tier in sorted(instance.tiers[1:], key=lambda t: (-t.bandwidth_bytes_per_s, t.name)):
            if used[tier.name] + item.bytes <= tier.capacity_bytes:
                placement[item.name], used[HBM], used[tier.name] = tier.name, used[HBM] - item.bytes, used[tier.name] + item.bytes
                break
    return placement if used[HBM] <= instance.tiers[0].capacity_bytes else None


def _classes(items: tuple[OffloadItem, ...]) -> list[list[OffloadItem]]:
    """Items grouped by (kind, bytes, traffic), members sorted by name; classes in first-seen order."""
    groups: dict[tuple, list[OffloadItem]] = {}
    for it in items:
        groups.setdefault((it.kind, it.bytes, it.overlap_bytes, it.exposed_bytes), []).append(it)
    return [sorted(g, key=lambda it: it.name) for g in groups.values()]


def solve_offload(instance: OffloadInstance, config: OffloadConfig | None = None) -> OffloadSolution | None:
    """The placement with the least added step time, or None when the items fit in no combination.

    >>> inst = OffloadInstance((OffloadItem("a", "weights", 6, 6), OffloadItem("b", "weights", 6, 60)),
    ...                        (Tier("hbm", 8, 100.0), Tier("host", 100, 1.0)), window_s=2.0)
    >>> sol = solve_offload(inst)
    >>> sol.placement, sol.added_s, sol.status
    ({'a': 'host', 'b': 'hbm'}, 4.0, 'optimal')
    """
    config = config or OffloadConfig()
    validate(instance)
    tiers, names = instance.tiers, [t.name for t in instance.tiers]
    classes = _classes(instance.items)  # identical items are interchangeable: count them, not each
    greedy = greedy_offload(instance)
    model = cp_model.CpModel()
    # n[c, t]: how many items of class c live in tier t
    n = {(c, t): model.new_int_var(0, len(members), f"n_{c}_{t}")
         for c, members in enumerate(classes) for t in range(len(tiers))}
    for c, members in enumerate(classes):
        model.add(sum(n[c, t] for t in range(len(tiers))) == len(members))
    for t, tier in enumerate(tiers):
        model.add(sum(m[0].bytes * n[c, t] for c, m in enumerate(classes)) <= tier.capacity_bytes)
    overlap = sum(_us(m[0].overlap_bytes / tiers[t].bandwidth_bytes_per_s) * n[c, t]
                  for c, m in enumerate(classes) for t in range(1, len(tiers)))
    exposed = sum(_us(m[0].exposed_bytes / tiers[t].bandwidth_bytes_per_s) * n[c, t]
                  for c, m in enumerate(classes) for t in range(1, len(tiers)))
    slowest = min(t.bandwidth_bytes_per_s for t in tiers)
    horizon = sum(_us((it.overlap_bytes + it.exposed_bytes) / slowest) for it in instance.items)
    beyond = model.new_int_var(0, horizon + 1, "beyond_window_us")  # overlappable time not hidden by compute
    model.add(beyond >= overlap - _us(instance.window_s))
    model.minimize(beyond + exposed)
    if greedy:
        for (c, t), var in n.items():
            model.add_hint(var, sum(1 for it in classes[c] if greedy[it.name] == names[t]))
    result = solve(model, SolverConfig(config.time_limit_s, config.workers, config.seed))
    if result.status == "invalid":
        raise RuntimeError("the offload CP-SAT model is invalid (a planner bug)")
    if result.status == "infeasible":  # proven: no placement fits the tiers' capacities
        log.info("offload: no placement fits (CP-SAT proved it infeasible)")
        return None
    if result.found:
        placement = {}
        for c, members in enumerate(classes):  # the first n[c, 0] members in HBM, the next in tier 1, ...
            slots = [names[t] for t in range(len(tiers)) for _ in range(result.value(n[c, t]))]
            placement.update({it.name: tier for it, tier in zip(members, slots)})
        added, transfer = _cost_s(instance, placement)
        bound = result.bound / 1e6 if result.bound is not None else None
        if greedy is None or added <= _cost_s(instance, greedy)[0]:
            return OffloadSolution(placement, added, transfer, bound, result.status, "cpsat")
        added, transfer = _cost_s(instance, greedy)  # the warm start was better: keep it, with CP-SAT's bound
        return OffloadSolution(greedy, added, transfer, bound, "feasible", "greedy (better than cp-sat's solution)")
    if greedy is None:
        log.info("offload: CP-SAT found no placement in %.1f s and the greedy one does not fit", config.time_limit_s)
        return None
    added, transfer = _cost_s(instance, greedy)  # CP-SAT found nothing in its time limit: the greedy answer, no bound
    return OffloadSolution(greedy, added, transfer, None, "feasible", "greedy (cp-sat found none in its time limit)")


def _decode_items(ctx, graph, batch: int, kv_bytes: float) -> list[OffloadItem]:
    """Per layer: dense weights (streamed every step), experts (only routed ones) and KV cache."""
    items = []
    blocks = [layer for layer in graph.layers if layer.kind == "block"]
    for layer in graph.layers:
        total = ctx.layer_weight_bytes(layer.index)
        spec = next((op.experts for op in graph.layer_ops(layer) if op.experts is not None), None)
        expert = 0.0
        if spec is not None:
            expert = ctx.layer_expert_weight_bytes(layer.index)  # as layer_weight_bytes splits and sizes them
            touched = 1.0 - (1.0 - spec.top_k / spec.num_experts) ** batch
            items.append(OffloadItem(f"experts.{layer.name}", "experts", int(expert), expert * touched))
        dense = total - expert
        if dense > 0:
            items.append(OffloadItem(f"weights.{layer.name}", "weights", int(dense), dense))
        if layer.kind == "block" and kv_bytes > 0:
            per_layer = kv_bytes / len(blocks)
            items.append(OffloadItem(f"kv.{layer.name}", "kv_cache", int(per_layer), per_layer))
    return items


def inference_offload(graph, cluster, *, batch: int, input_len: int, output_len: int, tp: int = 1,
                      dtype: str = "bf16", config: OffloadConfig | None = None) -> dict:
    """Decode on `tp` devices of `cluster` (pp = dp = 1): fits as is, fits with offload (and the
    PCIe-bound TPOT), or cannot fit, with the numbers. A JSON-able dict with a one-line `message`.

    >>> import planner
    >>> from cost_models.cluster import parse_cluster
    >>> r = inference_offload(planner.capture("tiny-llama", seq_len=64), parse_cluster("1xH100-SXM"),
    ...                       batch=1, input_len=64, output_len=16)
    >>> r["fits_without_offload"], r["offloaded_bytes"]
    (True, 0)
    """
    from cost_models.estimate_context import make_context
    from cost_models.estimator import estimate_graph
    from cost_models.parallel_config import Options

    options = Options(tp=tp, pp=1, dp=1, batch=batch, input_len=input_len, output_len=output_len, dtype=dtype)
    base = estimate_graph(graph, cluster, "decode", options)
    ctx = make_context(graph, cluster, options)
    mem = base["memory_breakdown_bytes"]
    capacity = int(ctx.capacity_bytes)
    need = int(sum(mem.values()))
    out = {"model": graph.model, "cluster": cluster.describe(), "tp": tp, "batch": batch,
           "capacity_bytes": capacity, "needed_bytes": need, "base_tpot_s": base["tpot_s"],
           "fits_without_offload": need <= capacity, "fits": need <= capacity, "offloaded_bytes": 0,
           "tpot_s": base["tpot_s"], "slowdown": 1.0, "placement_bytes": None, "solver": None}
    if need <= capacity:
        out["message"] = (f"{graph.model} decode fits in HBM: {need / 1e9:.1f} of {capacity / 1e9:.1f} GB; "
                          f"TPOT {base['tpot_s'] * 1e3:.1f} ms, no offload")
        return out
    items = _decode_items(ctx, graph, batch, mem.get("kv_cache", 0.0))
    staging = 2 * max((i.bytes for i in items), default=0)  # double-buffered prefetch of the largest item
    hbm = capacity - int(mem.get("reserve", 0) + mem.get("activations", 0)) - staging
    tiers = memory_tiers(cluster, max(hbm, 0))
    instance = OffloadInstance(tuple(items), tiers, window_s=base["tpot_s"])
    sol = solve_offload(instance, config) if hbm > 0 else None
    if sol is None:
        room = sum(t.capacity_bytes for t in tiers)
        out["message"] = (f"{graph.model} decode cannot fit on {tp} x {ctx.device.name} even with offload: "
                          f"it needs {need / 1e9:.1f} GB, HBM holds {capacity / 1e9:.1f} GB "
                          f"({max(hbm, 0) / 1e9:.1f} GB left for weights and KV after reserve and "
                          f"{staging / 1e9:.1f} GB prefetch buffers) and all tiers {room / 1e9:.1f} GB")
        return out
    by_tier = sol.bytes_by_tier(instance)
    off = sum(v for k, v in by_tier.items() if k != HBM)
    tpot = base["tpot_s"] + sol.added_s
    link = cluster.nodes[0].host_link
    out.update(fits=True, offloaded_bytes=off, tpot_s=tpot, slowdown=tpot / base["tpot_s"], placement_bytes=by_tier,
               solver={"status": sol.status, "method": sol.method, "bound_s": sol.bound_s,
                       "transfer_s": sol.transfer_s, "staging_bytes": staging})
    out["message"] = (f"{graph.model} decode fits on {tp} x {ctx.device.name} only with offload: "
                      f"{off / 1e9:.1f} GB moved to {', '.join(k for k, v in by_tier.items() if v and k != HBM)}, "
                      f"streamed over {link.name if link else 'the host link'} at "
                      f"{tiers[1].bandwidth_bytes_per_s / 1e9:.0f} GB/s per step: TPOT "
                      f"{tpot * 1e3:.0f} ms instead of {base['tpot_s'] * 1e3:.1f} ms in HBM ({tpot / base['tpot_s']:.0f}x)")
    return out
