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
from cost_models.kernel_time import attention_kernel, gemm_kernel, region_kernel, single_kernel
from cost_models.kernels import layer_kernels
from ir.graph import Graph
from ir.phases import OpWork, PhaseShape, op_work


@dataclass(frozen=True)
class LayerTime:
    gemm_s: float
    attention_s: float
    other_s: float
    comm_s: float  # TP all-reduces and EP all-to-alls (not overlapped with compute)
    compute_bound_s: float  # part of the op time limited by FLOP/s (the rest is memory-bound)
    backward_s: float = 0.0  # fused execution with backward=True: the layer's backward kernels (no comm)

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
                kv_bytes: int, tp_group: Group, ep_group: Group | None = None, ep_tokens: int = 1,
                backward: bool = False, head_tokens: int | None = None, engine: bool = False) -> list[LayerTime]:
    """Time of every layer at `shape` on one rank of a tp (and ep) group; `ep_tokens` > 1: expert
    GEMMs see the tokens of that many ranks (expert parallelism over dp, module docstring).
    `backward`: also price the backward pass (fused execution: `LayerTime.backward_s`);
    `head_tokens`: tokens the LM head runs on (inference computes logits only for sampled tokens);
    `engine`: an inference engine's iteration (compute at `Efficiency.engine_sustained_compute`; a training
    step's backward at `sustained_compute`; otherwise the kernel benchmarks' burst clocks)."""
    by_signature: dict[str, LayerTime] = {}
    out = []
    act_bytes = 4 if cfg.dtype == "fp32" else 2  # fp8 engines keep the residual stream in 16 bits
    if cfg.execution == "fused" and (backward or engine):  # the clocks the board's power limit allows under load
        eff = eff.under_sustained_load(training=backward)
    for layer in graph.layers:
        cached = by_signature.get(layer.signature)
        if cached is None:
            at = shape if head_tokens is None or layer.kind != "head" else _with_tokens(shape, head_tokens)
            if cfg.execution == "fused":
                gemm, attention, other, bound, bwd = _fused_layer(graph, layer, at, device, eff, cfg, kv_bytes,
                                                                  ep_tokens, backward)
            else:
                gemm, attention, other, bound = _eager_layer(graph, layer, at, device, eff, cfg, kv_bytes, ep_tokens)
                bwd = 0.0
            comm = _layer_comm(graph, layer, shape, cfg, eff, tp_group, ep_group, act_bytes)
            cached = by_signature[layer.signature] = LayerTime(gemm, attention, other, comm, bound, bwd)
        out.append(cached)
    return out


def _with_tokens(shape: PhaseShape, tokens: int) -> PhaseShape:
    return replace(shape, tokens=min(tokens, shape.tokens))


def _layer_comm(graph: Graph, layer, shape: PhaseShape, cfg: ExecConfig, eff: Efficiency, tp_group: Group,
                ep_group: Group | None, act_bytes: int) -> float:
    comm = 0.0
    if layer.kind == "block" and cfg.tp > 1:
        # two all-reduces per block (after attention and after the MLP); with sequence
        # parallelism a reduce-scatter + all-gather pair of the same total volume
        volume = _hidden_bytes(graph, layer.index, shape.tokens, act_bytes)
        comm += 2 * collective_time("all_reduce", volume, tp_group, eff, cfg.allreduce)
    if layer.is_moe and ep_group is not None and ep_group.size > 1:
        k = graph.config.get("experts_per_token", 2)
        volume = _hidden_bytes(graph, layer.index, shape.tokens, act_bytes) * k / max(cfg.tp, 1)
        comm += 2 * collective_time("all_to_all", volume, ep_group, eff)  # dispatch + combine
    return comm


def _work(op, shape: PhaseShape, kv_bytes: int, ep_tokens: int) -> OpWork:
    if op.experts is not None and ep_tokens > 1:
        return _expert_work(op, shape, kv_bytes, ep_tokens)
    return op_work(op, shape, kv_bytes)


def _eager_layer(graph: Graph, layer, shape: PhaseShape, device, eff: Efficiency, cfg: ExecConfig, kv_bytes: int,
                 ep_tokens: int) -> tuple[float, float, float, float]:
    """Plain PyTorch: every aten op is a kernel (`compute.op_time`)."""
    gemm = attention = other = bound = 0.0
    for op in graph.layer_ops(layer):
        t = op_time(op, _work(op, shape, kv_bytes, ep_tokens), device, eff, cfg)
        if op.kind == "attention":
            attention += t.total_s
        elif op.kind in ("linear", "matmul", "grouped_matmul", "conv"):
            gemm += t.total_s
        else:
            other += t.total_s
        if t.compute_s >= t.memory_s:
            bound += t.total_s
    return gemm, attention, other, bound


def _fused_layer(graph: Graph, layer, shape: PhaseShape, device, eff: Efficiency, cfg: ExecConfig, kv_bytes: int,
                 ep_tokens: int, backward: bool) -> tuple[float, float, float, float, float]:
    """Engines: the layer's kernels (`cost_models.kernels`) priced by `cost_models.kernel_time`."""
    sums = {"gemm": 0.0, "attention": 0.0, "other": 0.0}
    bound = bwd = 0.0
    in_block = layer.kind == "block"
    for kernel in layer_kernels(graph, layer):
        if kernel.kind == "gemm":
            t = gemm_kernel(kernel, shape, device, eff, cfg, kv_bytes, in_block, backward)
        elif kernel.kind == "region":
            t = region_kernel(kernel, shape, device, eff, cfg, backward)
        elif kernel.kind == "attention":
            t = attention_kernel(kernel, op_work(kernel.op, shape, kv_bytes), shape, device, eff, cfg, backward,
                                 training=backward)
        else:
            t = single_kernel(kernel.op, _work(kernel.op, shape, kv_bytes, ep_tokens), device, eff, cfg, backward)
        sums[t.category] += t.forward_s
        bound += t.compute_bound_s
        bwd += t.backward_s
    if backward and layer.kind == "head":
        loss = _loss_kernel(graph, shape, device, eff, cfg)
        sums["other"] += loss
        bwd += 2 * loss
    return sums["gemm"], sums["attention"], sums["other"], bound, bwd


def _loss_kernel(graph: Graph, shape: PhaseShape, device, eff: Efficiency, cfg: ExecConfig) -> float:
    """Cross-entropy over the vocabulary (vocab-parallel over tp, Megatron's fused kernel): forward
    reads the 16-bit logits once (max, sum of exponentials, target logit in float32 registers),
    backward reads them again and writes their gradient (counted as twice the forward)."""
    vocab = float(graph.config.get("vocab_size") or 0)
    nbytes = shape.tokens * vocab / max(cfg.tp, 1) * 2
    return nbytes / (device.memory_bandwidth_bytes_per_s * eff.memory) + eff.kernel_overhead_s
