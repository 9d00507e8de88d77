"""Compute time of ops and layers on one device: a roofline with achievable efficiency.

time(op) = max(flops / (peak x e_compute), bytes / (bandwidth x e_memory)) + kernel overhead,
with e_compute from `cost_models.efficiency` (GEMM shape curve, flash attention curve).

Tensor parallelism: GEMMs of attention/MLP/expert modules are split column- or row-wise, so each
rank does 1/tp of their FLOPs and reads 1/tp of their weights; attention splits by heads; the token
embedding and the LM head are vocab-parallel (Megatron, vLLM); norms and residual adds are replicated
(split by tp with sequence parallelism). `execution="fused"` models serving and training engines (vLLM, Megatron): element-wise
chains are fused, so only norms and activations pay a kernel and a read+write of their output;
`"eager"` models plain PyTorch (every aten op a kernel, views included: each is a dispatcher and
Python call that pays `kernel_overhead_s` while moving no data), which is how CPU runs here are
measured; there weight bytes are scaled from the dtype the graph was captured in, m = 1 GEMMs run
as GEMV (`gemm_efficiency`), and a decode step appends to a KV cache that grows by `torch.cat`
(Hugging Face `DynamicCache`), so it also copies the cached K/V. Eager attention's efficiency
curve takes the query rows of one sequence (torch's CPU flash-attention kernel,
aten/src/ATen/native/cpu/FlashAttentionKernel.cpp, parallelises over (batch, head, query block) and
multiplies one sequence's query block at a time, so a decode step is q = 1 row per product however
large the batch); fused GPU kernels take the batch's query rows.

Weight-only quantisation (int8/int4 weights, bf16 compute) divides weight bytes; fp8 compute uses
the device's fp8 peak and halves the bytes of weights and activations.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from cost_models.efficiency import Efficiency
from ir.errors import UserError
from ir.graph import Graph, OpNode, dtype_bytes
from ir.phases import OpWork, PhaseShape, op_work

WEIGHT_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}
_SHARDED_SCOPES = ("attn", "attention", "mlp", "experts", "feed_forward", "ffn", "fc1", "fc2",
                   "intermediate", "output.dense", "c_fc", "c_proj", "c_attn", "moe", "block_sparse",
                   "lm_head", "embed_tokens", "embed_out", "wte")  # vocab-parallel embedding and LM head
_FUSED_KERNELS = {"norm", "softmax"}
_FREE = {"view"}
_FUSED_KEEP = {"linear", "matmul", "grouped_matmul", "conv", "attention", "embedding"} | _FUSED_KERNELS


@dataclass(frozen=True)
class ExecConfig:
    """How ops run: compute dtype, weight dtype, tensor-parallel degree, fusion, sequence parallel."""

    dtype: str = "bf16"
    weight_dtype: str = "bf16"
    tp: int = 1
    execution: str = "fused"  # "fused" (serving/training engines) or "eager" (plain PyTorch)
    sequence_parallel: bool = False
    streaming_weights: bool = False  # weights per device outgrow the cache (Efficiency.gemm_table_streaming)
    allreduce: str = "nccl"  # tensor-parallel all-reduce implementation (communication.IMPLEMENTATIONS)
    attention: str = "flash"  # attention kernel: flash or unfused (parallel_config.ATTENTION_KERNELS)


@dataclass(frozen=True)
class OpTime:
    compute_s: float
    memory_s: float
    overhead_s: float

    @property
    def total_s(self) -> float:
        return max(self.compute_s, self.memory_s) + self.overhead_s


def is_sharded(op: OpNode) -> bool:
    """Whether tensor parallelism splits this op: attention, and ops inside attention/MLP/expert
    modules (by module-path component); norms are replicated (sequence parallelism splits them,
    see `op_time`), including norms whose names mention attention (`post_attention_layernorm`)."""
    return _sharded(op.kind, op.module_path)


@functools.lru_cache(maxsize=4096)
def _sharded(kind: str, module_path: str) -> bool:
    if kind == "attention":
        return True
    if kind == "norm":
        return False
    parts = module_path.lower().split(".")
    return any(scope in part and "norm" not in part for part in parts for scope in _SHARDED_SCOPES)


def peak_flops(device, dtype: str) -> float:
    try:
        return device.peak_flops_for(dtype)
    except UserError:
        if dtype == "fp8":
            raise UserError(f"{device.name} has no fp8 tensor cores; use --dtype bf16 or a device "
                            f"with fp8 (H100, H200, B200, L4, L40S, MI300X)") from None
        raise


def op_time(op: OpNode, work: OpWork, device, eff: Efficiency, cfg: ExecConfig) -> OpTime:
    """Time of one op's work on one rank."""
    if op.kind in _FREE:
        # eager: a view is still an aten call (dispatch + Python), it only moves no data
        if cfg.execution != "eager":
            return OpTime(0.0, 0.0, 0.0)
        return OpTime(0.0, 0.0, eff.view_overhead_s if eff.view_overhead_s is not None else _overhead(eff, cfg, work))
    split = cfg.tp if (is_sharded(op) or cfg.sequence_parallel) else 1
    act_scale = 0.5 if cfg.dtype == "fp8" and op.kind not in ("attention",) else 1.0
    weight_scale = WEIGHT_BYTES[cfg.weight_dtype] / _captured_bytes(op)
    bandwidth = device.memory_bandwidth_bytes_per_s * eff.memory
    tensor_core = op.kind in ("linear", "matmul", "grouped_matmul", "conv", "attention")  # fp8 flash attention: FA3
    peak = peak_flops(device, cfg.dtype if tensor_core else ("bf16" if cfg.dtype == "fp8" else cfg.dtype))
    if cfg.execution == "fused" and op.kind not in _FUSED_KEEP:
        return OpTime(0.0, 0.0, 0.0)  # folded into a neighbouring fused kernel
    bytes_moved = (work.weight_bytes * weight_scale + (work.activation_bytes_read + work.activation_bytes_written)
                   * act_scale + work.kv_read_bytes + work.kv_write_bytes) / split
    if cfg.execution == "fused" and op.kind in _FUSED_KERNELS:
        # one pass for the statistics, one to normalise, one write (fits the Vidur/LLMCompass norm
        # and softmax rows of the validation set: 2x under-predicts them by 25-30%)
        bytes_moved = 3 * work.activation_bytes_written / split
    if cfg.execution == "eager" and op.kind == "attention":
        bytes_moved += 2 * work.kv_read_bytes / split  # the cache grows by torch.cat: read + write it all
    flops = work.flops / split
    if work.gemm_mnk is not None:
        m, n, k = work.gemm_mnk  # m is rows per expert for MoE GEMMs
        e = gemm_efficiency(eff, m, n / split, k, cfg.execution, cfg.streaming_weights)
    elif op.kind == "attention":
        e = eff.attention(work.query_len if cfg.execution == "eager" and work.query_len else _query_rows(op, work))
    else:
        e = 1.0
    compute = flops / (peak * max(e, 1e-6)) if flops else 0.0
    return OpTime(compute, bytes_moved / bandwidth, _overhead(eff, cfg, work))


def _overhead(eff: Efficiency, cfg: ExecConfig, work: OpWork) -> float:
    if cfg.execution == "eager" and work.decode_step and eff.decode_overhead_s is not None:
        return eff.decode_overhead_s
    return eff.kernel_overhead_s


def gemm_efficiency(eff: Efficiency, m: float, n: float, k: float, execution: str = "fused",
                    streaming: bool = False) -> float:
    """Fraction of peak of an m x k @ k x n GEMM; eager single-row products (m = 1) run as BLAS
    GEMV, which streams the weights without the small-m GEMM penalty (they end up memory-bound).

    >>> e = Efficiency(gemm_max=0.5, gemm_half_m=15.0, gemm_half_nk=0.0)
    >>> gemm_efficiency(e, 1, 768, 768, "eager"), round(gemm_efficiency(e, 1, 768, 768), 4)
    (0.5, 0.0312)
    """
    if execution == "eager" and m <= 1 and not eff.gemm_table:  # a measured table holds m = 1 itself
        return eff.gemm(m, n, k) * (m + eff.gemm_half_m) / max(m, 1e-9)
    return eff.gemm(m, n, k, streaming)


def _captured_bytes(op: OpNode) -> float:
    """Bytes per element of the dtype the op was captured in (its weights' dtype)."""
    return float(dtype_bytes(op.outputs[0].dtype)) if op.outputs else 2.0


def _query_rows(op: OpNode, work: OpWork) -> float:
    """Query rows one tile of a fused attention kernel multiplies against a K/V block: the new tokens
    of one sequence times the query heads sharing a K/V head (FlashAttention-3, FlashInfer and
    TensorRT-LLM's XQA pack grouped-query heads together). Decode steps are 1 x group rows whatever
    the batch: more sequences add tiles, not rows."""
    a = op.attention
    if a is None:
        return 1.0
    group = max(a.heads // max(a.kv_heads, 1), 1)
    return max(float(work.query_len or a.q_len) * group, 1.0)


def layer_time(graph: Graph, layer_index: int, shape: PhaseShape, device, eff: Efficiency,
               cfg: ExecConfig, kv_bytes: int) -> tuple[float, float, float]:
    """(total, compute-bound part, memory-bound part) seconds of one layer's ops on one rank."""
    total = compute = memory = 0.0
    for op in graph.layer_ops(graph.layers[layer_index]):
        t = op_time(op, op_work(op, shape, kv_bytes), device, eff, cfg)
        total += t.total_s
        if t.compute_s >= t.memory_s:
            compute += t.compute_s + t.overhead_s
        else:
            memory += t.memory_s + t.overhead_s
    return total, compute, memory
