"""Memory formulas: weights, gradients, optimizer states, activations, KV cache, reserves.

Training state per parameter (mixed-precision Adam, Rajbhandari et al. 2020 "ZeRO", Sec. 3):
2 bytes bf16 weights + 2 bytes bf16 gradients + 12 bytes optimizer (fp32 master weights, Adam m
and v): 16 bytes. ZeRO-1 shards the 12 optimizer bytes over dp, ZeRO-2 also the gradients,
ZeRO-3 (= FSDP full sharding) also the weights.

Activations per transformer layer (Korthikanti et al. 2022, "Reducing Activation Recomputation in
Large Transformer Models", Sec. 4, with s tokens per sequence, b sequences, h hidden, a heads,
t tensor parallel, bytes at 16-bit):
  no recomputation, no parallelism:   s*b*h*(34 + 5*a*s/h)
  tensor parallel:                    s*b*h*(10 + 24/t + 5*a*s/(h*t))
  tensor + sequence parallel:         s*b*h*(34/t + 5*a*s/(h*t))
  selective recomputation (t, sp):    s*b*h*34/t
  full recomputation:                 2*s*b*h (the layer input only)
`activation_bytes_per_layer` generalises the 34 to any MLP width f and gated MLPs (SwiGLU) and to
grouped-query attention, and drops the 5as/h term when flash attention keeps no score matrix
(its output and log-sum-exp are kept instead). The derivation is in the function's docstring.
"""

from __future__ import annotations

from dataclasses import dataclass

ADAM_BYTES_PER_PARAM = 12  # fp32 master + m + v
RECOMPUTE = ("none", "selective", "full")


@dataclass(frozen=True)
class TrainingState:
    weights: float
    gradients: float
    optimizer: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer


def training_state_bytes(params: float, dp: int, zero_stage: int, weight_bytes: float = 2.0,
                         grad_bytes: float = 2.0) -> TrainingState:
    """Bytes of weights, gradients and Adam states on one rank holding `params` parameters.

    >>> training_state_bytes(1e9, 1, 0).total / 1e9
    16.0
    >>> training_state_bytes(1e9, 8, 3).total / 1e9
    2.0
    """
    opt = params * ADAM_BYTES_PER_PARAM / (dp if zero_stage >= 1 else 1)
    grads = params * grad_bytes / (dp if zero_stage >= 2 else 1)
    weights = params * weight_bytes / (dp if zero_stage >= 3 else 1)
    return TrainingState(weights, grads, opt)


def activation_bytes_per_layer(s: int, b: int, h: int, a: int, *, ffn: int | None = None,
                               gated: bool = False, kv_heads: int | None = None, t: int = 1,
                               sequence_parallel: bool = False, recompute: str = "none",
                               flash: bool = False, dropout: bool = True) -> float:
    """Activation bytes one transformer layer keeps for backward (16-bit activations).

    Derivation (Korthikanti et al. 2022, Sec. 4.1, bytes with 2 per element, masks 1 per element):
    attention keeps its input for QKV (2sbh), Q and K for the scores (2sbh + 2sbh*kv/a), the
    softmax output (2as^2b) and its dropout mask (as^2b), V (2sbh*kv/a) and the dropout output
    (2as^2b), the projection input (2sbh) and the residual dropout mask (sbh): 11sbh + 5as^2b for
    kv = a. The MLP keeps its input (2sbh), the first GEMM output for the activation (2sbf), the
    activation output (2sbf) and a dropout mask (sbh): 19sbh for f = 4h; a gated MLP keeps gate
    and up outputs, the activation output and the product (8sbf). Two layer norms keep 4sbh.
    With tensor parallelism the parts inside the parallel regions are divided by t; norms,
    dropouts and the inputs of the first GEMMs (10sbh) are divided only with sequence
    parallelism. Flash attention keeps Q, K, V, output and log-sum-exp instead of the s^2 terms.

    >>> s, b, h, a = 2048, 1, 12288, 96
    >>> activation_bytes_per_layer(s, b, h, a) == s * b * h * (34 + 5 * a * s / h)
    True
    >>> activation_bytes_per_layer(s, b, h, a, t=8) == s * b * h * (10 + 24 / 8 + 5 * a * s / (h * 8))
    True
    >>> activation_bytes_per_layer(s, b, h, a, t=8, sequence_parallel=True, recompute="selective") == s * b * h * 34 / 8
    True
    """
    sbh = float(s) * b * h
    if recompute == "full":
        return 2 * sbh / (t if sequence_parallel else 1)
    ffn = ffn or 4 * h
    kv = (kv_heads or a) / a
    mask = 1.0 if dropout else 0.0
    attn_parallel = 2 * sbh + 2 * sbh * kv + 2 * sbh * kv + 2 * sbh  # Q, K, V, projection input
    mlp_parallel = (8.0 if gated else 4.0) * s * b * ffn
    replicated = 2 * sbh + 2 * sbh + 4 * sbh + 2 * mask * sbh  # QKV input, MLP input, 2 norms, 2 dropout masks
    if recompute == "selective" or flash:
        scores = 0.0  # recomputed in backward
        lse = 4.0 * s * b * a if flash else 0.0  # flash keeps a float32 log-sum-exp per query and head
    else:
        scores = (2 + mask + 2 * mask) * a * float(s) * s * b  # softmax out, dropout mask, dropout out
        lse = 0.0
    parallel = attn_parallel + mlp_parallel + scores + lse
    split_replicated = t if sequence_parallel else 1
    return parallel / t + replicated / split_replicated


def kv_cache_bytes_per_token(layers: int, kv_heads: int, head_dim: int, kv_bytes: float = 2.0) -> float:
    """K and V of one token across all layers.

    >>> kv_cache_bytes_per_token(80, 8, 128)  # llama-3.1-70b at bf16: 320 KiB
    327680.0
    """
    return 2.0 * layers * kv_heads * head_dim * kv_bytes


# Margins real frameworks need beyond the model's tensors, as named items of every memory breakdown
# (`training_margin`, `inference_margin`; their sum is the breakdown's "reserve"):
# - runtime: CUDA context and cuBLAS/cuDNN/NCCL workspaces, outside the caching allocator (vLLM
#   profiles ~1.5 GB of "non-torch" memory on an H100); 0.2 GB for the CPU runtime;
# - nccl_buffers: each NCCL communicator in use (tp, pp, dp, ep groups) allocates its channel buffers,
#   NCCL_BUFFSIZE = 4 MiB per channel per peer and direction, up to 32 channels on NVSwitch: ~0.25 GB;
# - allocator_fragmentation: PyTorch's caching allocator rounds and splits blocks (2 MiB / 20 MiB
#   segments); reserved exceeds allocated by 5-15% of the dynamic allocations (activations,
#   gradients of activations), 10% here;
# - fp32_grad_accumulation: mixed-precision training accumulates gradients in float32 (Megatron's
#   main_grad, torch AMP's fp32 gradients): 2 bytes per parameter beyond the 16-bit gradient (ZeRO-2+
#   shards it over dp);
# - prefetch_buffers: ZeRO-3 / FSDP gathers the full 16-bit weights of the layer it runs and prefetches
#   the next one (2 layers unsharded);
# - backward_workspace: during a layer's backward pass its activation gradients (about the size of the
#   activations it saved) live beside the saved activations of the layers still to run;
# - logits: float32 logits of the tokens sampled (engines) or of every prompt token (eager Hugging Face).
RUNTIME_BYTES = {"gpu": 1.5e9, "cpu": 0.2e9}
NCCL_COMMUNICATOR_BYTES = 0.25e9
ALLOCATOR_FRAGMENTATION = 0.10
FRAGMENTATION = 0.05  # share of capacity `passes.memory_mapping` labels fragmentation inside the reserve
WORKSPACE_BYTES_GPU = RUNTIME_BYTES["gpu"]
WORKSPACE_BYTES_CPU = RUNTIME_BYTES["cpu"]
MARGIN_ITEMS = ("runtime", "nccl_buffers", "allocator_fragmentation", "fp32_grad_accumulation", "prefetch_buffers",
                "backward_workspace", "logits")


def reserve_bytes(capacity: float, kind: str) -> float:
    """The device-level part of the margin: the runtime's memory outside the allocator (CUDA context
    and library workspaces); `capacity` is accepted for callers that size it per device.

    >>> reserve_bytes(80e9, "gpu") / 1e9
    1.5
    """
    return RUNTIME_BYTES["gpu" if kind == "gpu" else "cpu"]


def device_margin(kind: str, communicators: int) -> dict[str, float]:
    """Runtime and NCCL buffers of one rank (`communicators`: groups of more than one rank it is in).

    >>> device_margin("gpu", 2)
    {'runtime': 1500000000.0, 'nccl_buffers': 500000000.0}
    """
    return {"runtime": reserve_bytes(0.0, kind),
            "nccl_buffers": NCCL_COMMUNICATOR_BYTES * communicators if kind == "gpu" else 0.0}


def training_margin(kind: str, communicators: int, params: float, dp: int, zero_stage: int,
                    mixed_precision: bool, largest_layer_params: float, layer_activations: float,
                    dynamic_bytes: float) -> dict[str, float]:
    """Named margin items of one training rank (see the comment above `RUNTIME_BYTES`).

    >>> m = training_margin("gpu", 1, 1e9, 8, 1, True, 5e7, 1e9, 10e9)
    >>> m["fp32_grad_accumulation"] / 1e9, m["prefetch_buffers"], m["allocator_fragmentation"] / 1e9
    (2.0, 0.0, 1.1)
    """
    out = device_margin(kind, communicators)
    out["fp32_grad_accumulation"] = params * 2.0 / (dp if zero_stage >= 2 else 1) if mixed_precision else 0.0
    out["prefetch_buffers"] = 2 * largest_layer_params * 2.0 if zero_stage >= 3 else 0.0
    out["backward_workspace"] = layer_activations
    out["allocator_fragmentation"] = ALLOCATOR_FRAGMENTATION * (dynamic_bytes + layer_activations)
    return out


def inference_margin(kind: str, communicators: int, activations: float, logits: float) -> dict[str, float]:
    """Named margin items of one serving rank: runtime, NCCL buffers, logits, fragmentation of the
    dynamic allocations (the KV cache and weights are allocated once, as one pool each).

    >>> inference_margin("gpu", 0, 1e9, 1e8)["allocator_fragmentation"] / 1e9
    0.11
    """
    out = device_margin(kind, communicators)
    out["logits"] = logits
    out["allocator_fragmentation"] = ALLOCATOR_FRAGMENTATION * (activations + logits)
    return out
