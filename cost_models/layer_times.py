"""Per-layer time of a phase on one rank, split by kind (GEMM, attention, other), with the
tensor/expert-parallel communication each layer pays. Identical layers are timed once."""

from __future__ import annotations

from dataclasses import dataclass

from cost_models.communication import Group, collective_time
from cost_models.compute import ExecConfig, op_time
from cost_models.efficiency import Efficiency
from ir.graph import Graph
from ir.phases import PhaseShape, op_work


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


def layer_times(graph: Graph, shape: PhaseShape, device, eff: Efficiency, cfg: ExecConfig,
                kv_bytes: int, tp_group: Group, ep_group: Group | None = None) -> list[LayerTime]:
    """Time of every layer at `shape` on one rank of a tp (and ep) group."""
    by_signature: dict[str, LayerTime] = {}
    out = []
    act_bytes = 1 if cfg.dtype == "fp8" else 2
    for layer in graph.layers:
        cached = by_signature.get(layer.signature)
        if cached is None:
            gemm = attention = other = bound = 0.0
            for op in graph.layer_ops(layer):
                t = op_time(op, op_work(op, shape, kv_bytes), device, eff, cfg)
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
