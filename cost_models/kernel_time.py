"""Forward and backward time of the kernels a fused engine launches (`cost_models.kernels`).

Each kernel is a roofline, max(FLOPs / (peak x efficiency), bytes / (bandwidth x `memory`)), plus one
`kernel_overhead_s` (launch and tail). What each kind moves:

- merged GEMM (q/k/v, gate/up): the input once, the weights of all members, the outputs; efficiency
  at the merged shape (m tokens, the members' summed n, k). Backward: one dgrad GEMM (m x k output,
  reduction over n: reads the output gradient and the weights) and one wgrad GEMM (k x n output,
  reduction over the m tokens: reads input and output gradient, accumulates into the float32 main
  gradient, 8 bytes per parameter per microbatch as Megatron's gradient-accumulation fusion does).
- fp8 GEMMs (Transformer Engine; in the blocks only: embedding, LM head and attention stay 16-bit)
  run at the fp8 peak times `fp8_gemm` of the 16-bit efficiency, read 1-byte inputs and weights, and
  pay their casts: the input is written once more in fp8 (the cast fused into the producing kernel),
  and in backward the output gradient is cast and transposed by its own kernel (reads 2 bytes,
  writes 1 + 1). The weights' cast, once per step, is in `cost_models.estimate_train`.
- fused element-wise group: its boundary bytes (read + write); backward reads the output gradient and
  the saved inputs and writes the input gradients: twice the bytes, one more kernel.
- attention, flash: `compute.op_time` (flash efficiency curve; K/V cache reads); backward 2.5x the
  FLOPs (it recomputes QK^T). Unfused (`attention="unfused"`): QK^T and AV batched GEMMs over every
  (query, key) pair (the causal mask does not skip work) at the GEMM efficiency of their shapes, plus
  the score matrix in memory: written by QK^T (2 bytes), read and written by the fused
  scale-mask-softmax (4), dropout in training (mask 1, read 2, write 2) and read by AV (2); backward
  runs four batched GEMMs and moves about twice those bytes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

from cost_models.compute import ExecConfig, gemm_efficiency, is_sharded, op_time, peak_flops
from cost_models.efficiency import Efficiency
from cost_models.kernels import Kernel
from ir.phases import OpWork, PhaseShape, op_work

_SCORE_BYTES_FWD = {"inference": 8.0, "train": 13.0}  # per score element, see the module docstring
_SCORE_BYTES_BWD = 18.0
_MAIN_GRAD_BYTES = 8.0  # float32 main-gradient accumulate: read + write per parameter per microbatch


@dataclass(frozen=True)
class KernelTime:
    forward_s: float
    backward_s: float
    compute_bound_s: float  # the part of forward_s limited by FLOP/s
    category: str  # gemm | attention | other


def _roofline(flops: float, peak: float, e: float, nbytes: float, bandwidth: float, overhead: float) -> tuple[float, bool]:
    compute = flops / (peak * max(e, 1e-6)) if flops else 0.0
    memory = nbytes / bandwidth
    return max(compute, memory) + overhead, compute >= memory


def gemm_kernel(kernel: Kernel, shape: PhaseShape, device, eff: Efficiency, cfg: ExecConfig, kv_bytes: int,
                in_block: bool, backward: bool) -> KernelTime:
    """A merged GEMM's forward (and backward) time on one rank (module docstring)."""
    works = [op_work(op, shape, kv_bytes) for op in kernel.ops]
    split = cfg.tp if (is_sharded(kernel.op) or cfg.sequence_parallel) else 1
    fp8 = cfg.dtype == "fp8" and in_block
    elem = 1.0 if fp8 else 2.0
    weight_scale = (1.0 if fp8 else _weight_bytes(cfg)) / _captured_bytes(kernel.op)
    m, _, k = works[0].gemm_mnk
    n = sum(w.gemm_mnk[1] for w in works) / split
    flops = sum(w.flops for w in works) / split
    weights = sum(w.weight_bytes for w in works) * weight_scale / split
    act_in = works[0].activation_bytes_read * elem / 2
    act_out = sum(w.activation_bytes_written for w in works) * elem / 2 / split
    bandwidth = device.memory_bandwidth_bytes_per_s * eff.memory
    peak = peak_flops(device, "fp8" if fp8 else ("bf16" if cfg.dtype == "fp8" else cfg.dtype))
    ratio = eff.fp8_gemm if fp8 else 1.0
    e = gemm_efficiency(eff, m, n, k, cfg.execution, cfg.streaming_weights) * ratio
    cast = act_in * 0.5 if fp8 else 0.0  # the fp8 copy of the input, written by the producer kernel
    fwd, bound = _roofline(flops, peak, e, weights + act_in + act_out + cast, bandwidth, eff.kernel_overhead_s)
    bwd = 0.0
    if backward:
        grad_out = act_out / elem * 2  # 16-bit output gradient
        e_dgrad = gemm_efficiency(eff, m, k, n, cfg.execution) * ratio
        e_wgrad = gemm_efficiency(eff, k, n, m, cfg.execution) * ratio
        params = sum(w.weight_bytes for w in works) / _captured_bytes(kernel.op) / split
        dgrad, _ = _roofline(flops, peak, e_dgrad, grad_out * elem / 2 + weights + act_in / elem * 2,
                             bandwidth, eff.kernel_overhead_s)
        wgrad, _ = _roofline(flops, peak, e_wgrad, act_in + grad_out * elem / 2 + params * _MAIN_GRAD_BYTES,
                             bandwidth, eff.kernel_overhead_s)
        bwd = dgrad + wgrad
        if fp8:  # cast + transpose of the output gradient: read 2, write 1 + 1 bytes per element
            bwd += grad_out * 2 / bandwidth + eff.kernel_overhead_s
    return KernelTime(fwd, bwd, fwd if bound else 0.0, "gemm")


def region_kernel(kernel: Kernel, shape: PhaseShape, device, eff: Efficiency, cfg: ExecConfig,
                  backward: bool) -> KernelTime:
    """A fused element-wise group: boundary bytes at the phase's tokens (module docstring)."""
    split = cfg.tp if (cfg.sequence_parallel or any(is_sharded(op) for op in kernel.ops if op.kind != "copy")) else 1
    scaled = sum(nbytes * _scale(scaling, shape) for scaling, nbytes in kernel.bytes_by_scaling)
    nbytes = scaled * _act_scale(kernel, cfg) / split
    bandwidth = device.memory_bandwidth_bytes_per_s * eff.memory
    fwd = nbytes / bandwidth + eff.kernel_overhead_s
    bwd = 2 * nbytes / bandwidth + eff.kernel_overhead_s if backward else 0.0
    return KernelTime(fwd, bwd, 0.0, "other")


def _scale(scaling: str, shape: PhaseShape) -> float:
    """How bytes captured at the reference shape scale to `shape` (as `ir.phases.op_work` scales ops)."""
    if scaling == "fixed":
        return 1.0
    if scaling == "token_pairs":
        return shape.batch * shape.q_len * shape.kv_len / max(shape.ref_pairs, 1)
    return shape.tokens / max(shape.ref_tokens, 1)


def _act_scale(kernel: Kernel, cfg: ExecConfig) -> float:
    """Element-wise kernels move 16-bit activations (fp8 engines keep them in bf16 between GEMMs)."""
    return 2.0 / _captured_bytes(kernel.op)


def attention_kernel(kernel: Kernel, work: OpWork, shape: PhaseShape, device, eff: Efficiency, cfg: ExecConfig,
                     backward: bool, training: bool) -> KernelTime:
    """Flash or unfused attention on one rank (module docstring)."""
    attention_cfg = cfg if cfg.dtype != "fp8" else ExecConfig(**{**cfg.__dict__, "dtype": "bf16"})
    if cfg.attention != "unfused" or kernel.op.attention is None:
        t = op_time(kernel.op, work, device, eff, attention_cfg)
        bound = t.compute_s >= t.memory_s
        bwd = 0.0
        if backward:
            bwd = 2.5 * t.compute_s + t.memory_s * 2 + eff.kernel_overhead_s
        return KernelTime(t.total_s, bwd, t.total_s if bound else 0.0, "attention")
    return _unfused(kernel, shape, device, eff, cfg, backward, training)


def _unfused(kernel: Kernel, shape: PhaseShape, device, eff: Efficiency, cfg: ExecConfig, backward: bool,
             training: bool) -> KernelTime:
    a = kernel.op.attention
    heads = a.heads / cfg.tp
    batches = shape.batch * heads
    q, kv = shape.q_len, shape.kv_len
    scores = batches * q * kv
    peak = peak_flops(device, "bf16" if cfg.dtype == "fp8" else cfg.dtype)
    bandwidth = device.memory_bandwidth_bytes_per_s * eff.memory
    qk_flops = 2 * scores * a.head_dim
    av_flops = 2 * scores * a.value_dim
    e_qk = gemm_efficiency(eff, q, kv, a.head_dim, cfg.execution)
    e_av = gemm_efficiency(eff, q, a.value_dim, kv, cfg.execution)
    gemms = qk_flops / (peak * max(e_qk, 1e-6)) + av_flops / (peak * max(e_av, 1e-6))
    score_bytes = scores * _SCORE_BYTES_FWD["train" if training else "inference"]
    fwd = gemms + score_bytes / bandwidth + (4 if training else 3) * eff.kernel_overhead_s
    bwd = 2 * gemms + scores * _SCORE_BYTES_BWD / bandwidth + 6 * eff.kernel_overhead_s if backward else 0.0
    return KernelTime(fwd, bwd, gemms, "attention")


def single_kernel(op, work: OpWork, device, eff: Efficiency, cfg: ExecConfig, backward: bool) -> KernelTime:
    """Embedding, convolution, expert GEMMs and the rest: `compute.op_time`; backward 2x a GEMM's FLOPs.
    Expert GEMMs run as grouped GEMMs (one kernel over all experts, rows gathered by routing), which reach
    `Efficiency.grouped_gemm` of a dense GEMM's efficiency at the same per-expert shape, and take the fp8
    share (`fp8_gemm`) like dense GEMMs when the run is fp8."""
    t = op_time(op, work, device, _kernel_efficiency(eff, op.kind == "grouped_matmul", cfg.dtype == "fp8"), cfg)
    gemm_like = op.kind in ("matmul", "grouped_matmul", "conv", "linear")
    bwd = 0.0
    if backward:
        bwd = (2 * t.compute_s + 2 * t.memory_s if gemm_like else 2 * t.memory_s) + 2 * t.overhead_s
    category = "gemm" if gemm_like else "other"
    return KernelTime(t.total_s, bwd, t.total_s if t.compute_s >= t.memory_s else 0.0, category)


def _weight_bytes(cfg: ExecConfig) -> float:
    from cost_models.compute import WEIGHT_BYTES

    return WEIGHT_BYTES[cfg.weight_dtype]


def _captured_bytes(op) -> float:
    from ir.graph import dtype_bytes

    return float(dtype_bytes(op.outputs[0].dtype)) if op.outputs else 2.0


@functools.lru_cache(maxsize=64)
def _kernel_efficiency(eff: Efficiency, grouped: bool, fp8: bool) -> Efficiency:
    scale = (eff.grouped_gemm if grouped else 1.0) * (eff.fp8_gemm if fp8 and grouped else 1.0)
    if scale == 1.0:
        return eff
    return replace(eff, gemm_max=eff.gemm_max * scale,
                   gemm_table=tuple((m, n, k, e * scale) for m, n, k, e in eff.gemm_table))
