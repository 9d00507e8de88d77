"""Per-layer time of a phase on one rank, split by kind (GEMM, attention, other), with the
tensor/expert-parallel communication each layer pays. Identical layers are timed once.

Expert parallelism over data-parallel ranks (`ep_tokens` = ep, training): a rank holds E/ep experts
and receives the tokens its ep - 1 peers route to them, so with uniform routing it runs the expert
GEMMs of ep x its own tokens restricted to E/ep experts: the work at ep x the tokens, divided by ep
(same FLOPs as without ep, ep times the rows per expert, 1/ep of the expert weights read).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cost_models.communication import Group, collective_time
from cost_models.compute import ExecConfig, op_time
from cost_models.efficiency import Efficiency
from ir.graph import Graph
from ir.phases import OpWork, PhaseShape, op_work


@dataclass(frozen=True)
class LayerTime:
    gemm_s: float
    attention_s: float
    other_s: float
    comm_s: float  # TP all-reduces and EP all-to-alls (not overlapped with compute)
    compute_bound_s: float  # part of the op time limited by FLOP/s (the rest is memory-bound)

    @property
    def compute_s(self) -> float:
        return self.gemm_s + self.attention_s + self.other_s

    @property
    def total_s(self) -> float:
        return self.compute_s + self.comm_s


def _hidden_bytes(graph: Graph, layer_index: int, tokens: int, act_bytes: int) -> float:
    hidden = graph.config.get("hidden_size")
    if hidden is None:
        ops = graph.layer_ops(graph.layers[layer_index])
        hidden = ops[-1].outputs[0].shape[-1] if ops and ops[-1].outputs else 0
    return float(tokens) * hidden * act_bytes


def _expert_work(op, shape: PhaseShape, kv_bytes: int, ep: int) -> OpWork:
    """Work of an expert GEMM on one of `ep` ranks that share their tokens (module docstring)."""
    gathered = op_work(op, replace(shape, tokens=shape.tokens * ep, batch=shape.batch * ep), kv_bytes)
    return replace(gathered, flops=gathered.flops // ep, weight_bytes=gathered.weight_bytes // ep,
                   activation_bytes_read=gathered.activation_bytes_read // ep,
                   activation_bytes_written=gathered.activation_bytes_written // ep)


def layer_times(graph: Graph, shape: PhaseShape, device, eff: Efficiency, cfg: ExecConfig,
                kv_bytes: int, tp_group: Group, ep_group: Group | None = None, ep_tokens: int = 1) -> list[LayerTime]:
    """Time of every layer at `shape` on one rank of a tp (and ep) group; `ep_tokens` > 1: expert
    GEMMs see the tokens of that many ranks (expert parallelism over dp, module docstring)."""
    by_signature: dict[str, LayerTime] = {}
    out = []
    act_bytes = 1 if cfg.dtype == "fp8" else 2
    for layer in graph.layers:
        cached = by_signature.get(layer.signature)
        if cached is None:
            gemm = attention = other = bound = 0.0
            for op in graph.layer_ops(layer):
                work = _expert_work(op, shape, kv_bytes, ep_tokens) if op.experts is not None and ep_tokens > 1 \
                    else op_work(op, shape, kv_bytes)
                t = op_time(op, work, device, eff, cfg)
                if op.kind == "attention":
                    attention += t.total_s
                elif op.kind in ("linear", "matmul", "grouped_matmul", "conv"):
                    gemm += t.total_s
                else:
                    other += t.total_s
                if t.compute_s >= t.memory_s:
                    bound += t.total_s
            comm = 0.0
            if layer.kind == "block" and cfg.tp > 1:
                # two all-reduces per block (after attention and after the MLP); with sequence
                # parallelism a reduce-scatter + all-gather pair of the same total volume
                comm += 2 * collective_time("all_reduce", _hidden_bytes(graph, layer.index, shape.tokens,
                                                                        act_bytes), tp_group, eff)
            if layer.is_moe and ep_group is not None and ep_group.size > 1:
                k = graph.config.get("experts_per_token", 2)
                volume = _hidden_bytes(graph, layer.index, shape.tokens, act_bytes) * k / max(cfg.tp, 1)
                comm += 2 * collective_time("all_to_all", volume, ep_group, eff)  # dispatch + combine
            cached = by_signature[layer.signature] = LayerTime(gemm, attention, other, comm, bound)
        out.append(cached)
    return out
