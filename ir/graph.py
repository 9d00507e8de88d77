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
    repeats them before the kernel; capture traces the repeat back).
    """

    batch: int
    heads: int
    kv_heads: int
    q_len: int
    kv_len: int
    head_dim: int
    value_dim: int
    causal: bool

    def flops(self, batch: int, q_len: int, kv_len: int) -> int:
        """FLOPs of QK^T and PV (2 per multiply-add); causal counts only visible pairs."""
        return 2 * batch * self.heads * (self.head_dim + self.value_dim) * self.pairs(q_len, kv_len)

    def pairs(self, q_len: int, kv_len: int) -> int:
        """Query-key pairs computed per (batch, head): the causal lower triangle when causal.

        With `q_len` new queries appended after `kv_len - q_len` cached tokens, query i sees
        ``kv_len - q_len + i + 1`` keys.
        """
        if not self.causal:
            return q_len * kv_len
        past = max(kv_len - q_len, 0)
        return q_len * past + q_len * (q_len + 1) // 2


@dataclass(frozen=True)
class ExpertSpec:
    """A mixture-of-experts GEMM: `num_experts` weight slices, each token routed to `top_k`."""

    num_experts: int
    top_k: int
    expert_param_bytes: int  # bytes of ONE expert's slice of this op's weight


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
    shapes and attributes) and are analysed once.
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
