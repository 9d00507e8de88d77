"""Graph IR: immutable ops with shapes, costs, module path and layer, plus the ordered layers.

Everything here is a frozen dataclass with typed fields and units in the names. Costs stored on an
op are the ones at the capture shape (`Graph.batch` x `Graph.seq_len`); `ir.phases` re-evaluates
them for other shapes and phases using each op's `scaling`:

- ``tokens``: linear in the number of tokens (batch x sequence for sequence models, batch for
  vision models): linears, norms, element-wise ops, MoE expert GEMMs;
- ``attention``: fused scaled-dot-product attention, evaluated from its `AttentionSpec`
  (query length x key length pairs; causal masks count only the lower triangle);
- ``token_pairs``: mask-building ops whose output is sequence x sequence;
- ``fixed``: independent of the input size (e.g. a rotary table of static length).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ir.cache_spec import CacheSpec

DTYPE_BYTES = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1, "float8_e5m2": 1,
    "int64": 8, "int32": 4, "int16": 2, "int8": 1, "uint8": 1, "bool": 1,
    "complex64": 8, "complex128": 16,
}

SCALINGS = ("tokens", "attention", "token_pairs", "fixed")


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of a dtype name such as ``"bfloat16"``.

    >>> dtype_bytes("bfloat16")
    2
    """
    return DTYPE_BYTES.get(dtype, 4)


@dataclass(frozen=True)
class TensorSpec:
    """Shape and dtype of one tensor (no data)."""

    shape: tuple[int, ...]
    dtype: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * dtype_bytes(self.dtype)


@dataclass(frozen=True)
class AttentionSpec:
    """A fused attention call: q is [batch, heads, q_len, head_dim]; k/v hold `kv_heads` heads.

    `kv_heads` is the number of heads actually stored in the KV cache (grouped-query attention
    repeats them before the kernel; capture traces the repeat back). `window` > 0 limits each
    query to the `window` most recent keys (sliding window); with `chunked` the keys are those of
    the query's own chunk of `window` tokens (chunked local attention, Llama 4). Multi-latent
    attention (DeepSeek-V2/V3) sets `latent_dim` (the compressed K/V, kv_lora_rank) and `rope_dim`
    (the decoupled rotary key): its decode step can run absorbed, attending over the latent.
    """

    batch: int
    heads: int
    kv_heads: int
    q_len: int
    kv_len: int
    head_dim: int
    value_dim: int
    causal: bool
    window: int = 0
    chunked: bool = False
    latent_dim: int = 0
    rope_dim: int = 0

    def flops(self, batch: int, q_len: int, kv_len: int, absorbed: bool = False) -> int:
        """FLOPs of QK^T and PV (2 per multiply-add); causal counts only visible pairs.

        `absorbed` (multi-latent only): QK^T over latent + rope dims and PV over the latent, the
        form vLLM and SGLang run decode in (DeepSeek-V2 paper, Sec. 2.1.2).
        """
        dims = self.head_dim + self.value_dim
        if absorbed and self.latent_dim:
            dims = 2 * self.latent_dim + self.rope_dim
        return 2 * batch * self.heads * dims * self.pairs(q_len, kv_len)

    def pairs(self, q_len: int, kv_len: int) -> int:
        """Query-key pairs computed per (batch, head): the causal lower triangle when causal.

        With `q_len` new queries appended after `kv_len - q_len` cached tokens, query i sees
        ``kv_len - q_len + i + 1`` keys, or fewer under a window or chunk.
        """
        if not self.causal:
            return q_len * kv_len
        past = max(kv_len - q_len, 0)
        return self._visible_through(past + q_len - 1) - self._visible_through(past - 1)

    def kv_elements_per_token(self) -> int:
        """Cached elements per token of this attention: the latent and rotary key for multi-latent
        attention, else K and V of every K/V head."""
        if self.latent_dim:
            return self.latent_dim + self.rope_dim
        return self.kv_heads * (self.head_dim + self.value_dim)

    def cached_keys_read(self, q_len: int, kv_len: int) -> int:
        """Cached tokens (not among the `q_len` new ones) whose K/V the new queries read."""
        past = max(kv_len - q_len, 0)
        if not self.causal or not self.window:
            return past
        return past % self.window if self.chunked else min(past, self.window)

    def keys_seen(self, kv_len: int) -> int:
        """Keys the newest query of a `kv_len`-token sequence attends to (what decode reads)."""
        if not self.causal or not self.window:
            return kv_len
        if self.chunked:
            return (kv_len - 1) % self.window + 1
        return min(kv_len, self.window)

    def _visible_through(self, last: int) -> int:
        """Sum over query positions 0..last of the keys each sees (causal)."""
        if last < 0:
            return 0
        n, w = last + 1, self.window
        if not w:
            return n * (n + 1) // 2
        if self.chunked:
            full, rest = divmod(n, w)
            return full * w * (w + 1) // 2 + rest * (rest + 1) // 2
        if n <= w:
            return n * (n + 1) // 2
        return w * (w + 1) // 2 + (n - w) * w


@dataclass(frozen=True)
class ExpertSpec:
    """A mixture-of-experts GEMM: `num_experts` weight slices, each token routed to `top_k`."""

    num_experts: int
    top_k: int
    expert_param_bytes: int  # bytes of ONE expert's slice of this op's weight (captured dtype)
    stored_expert_bytes: int = 0  # the same slice as the checkpoint stores it (MXFP4, fp8 blocks); 0: as captured


@dataclass(frozen=True)
class OpNode:
    """One operation of the captured graph, with its cost at the capture shape."""

    id: int
    name: str
    target: str  # e.g. "aten.linear.default" or "torch.nn.Linear"
    kind: str  # canonical kind, see ir.op_costs.KINDS
    inputs: tuple[int, ...]  # ids of producing ops (graph inputs and parameters are not ops)
    input_specs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    flops: int
    bytes_read: int  # activations + parameters read
    bytes_written: int
    param_bytes: int  # bytes of parameters this op reads
    params: tuple[str, ...]  # fully qualified parameter names it reads
    module_path: str
    layer: int
    scaling: str = "tokens"
    attention: AttentionSpec | None = None
    experts: ExpertSpec | None = None


@dataclass(frozen=True)
class Layer:
    """A contiguous run of ops: an embedding, one repeated block, or the head.

    Layers with equal `signature` are structurally identical (same module classes, parameter
    shapes and attributes) and are analysed once. `caches` describe what the block's attention
    or recurrent modules keep per sequence (`ir.cache_spec`); `stored_param_bytes` are its
    parameters as the checkpoint stores them (published per-tensor formats such as MXFP4 experts
    or fp8 block-scaled linears; equal to `param_bytes` when the model publishes none).
    """

    index: int
    name: str  # module path of the block, or "embedding" / "head"
    kind: str  # "embedding", "block", "head"
    signature: str
    op_start: int
    op_end: int  # exclusive
    param_count: int
    param_bytes: int
    flops: int
    is_moe: bool = False
    caches: tuple[CacheSpec, ...] = ()
    stored_param_bytes: int = 0


@dataclass(frozen=True)
class Graph:
    """A captured model: ops in execution order and their grouping into layers."""

    model: str
    architecture: str  # the module class captured, e.g. "LlamaForCausalLM"
    capture_method: str  # "torch.fx" or "torch.export"
    batch: int
    seq_len: int
    token_kind: str  # "sequence" (tokens = batch x seq) or "sample" (tokens = batch)
    dtype: str
    inputs: tuple[TensorSpec, ...]
    ops: tuple[OpNode, ...]
    layers: tuple[Layer, ...]
    param_count: int
    param_bytes: int
    config: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def capture_tokens(self) -> int:
        return self.batch * self.seq_len if self.token_kind == "sequence" else self.batch

    @property
    def flops(self) -> int:
        return sum(op.flops for op in self.ops)

    def layer_ops(self, layer: Layer) -> tuple[OpNode, ...]:
        return self.ops[layer.op_start:layer.op_end]

    def distinct_signatures(self) -> tuple[str, ...]:
        """Signatures in first-seen order; repeated blocks appear once."""
        seen: dict[str, None] = {}
        for layer in self.layers:
            seen.setdefault(layer.signature, None)
        return tuple(seen)
