"""Turn captured `RawOp`s into the Graph: costs per op, layers, and replicated blocks.

Capture traced one representative per distinct block signature; here every block of the original
model gets a copy of its representative's ops (module paths and parameter names rewritten), so the
Graph lists every op of the full model while the tracer ran over only a few blocks.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from ir.graph import AttentionSpec, ExpertSpec, OpNode
from ir.op_costs import classify, op_bytes, op_flops
from ir.raw import RawOp

_PASS_THROUGH = {"view", "copy"}


@dataclass(frozen=True)
class CaptureShape:
    """The shape the graph was captured at and how tokens are counted."""

    batch: int
    seq_len: int
    token_kind: str  # "sequence" or "sample"
    causal: bool

    @property
    def tokens(self) -> int:
        return self.batch * self.seq_len if self.token_kind == "sequence" else self.batch


def rename_op(path: str, old: str, new: str) -> str:
    if path == old or path.startswith(old + "."):
        return new + path[len(old):]
    return path


def _kv_heads(ops: list[RawOp], key_producer: int | None, key_numel: int, heads: int) -> int:
    """Heads stored for K: follow the key back through views/copies to its smallest form."""
    smallest, index = key_numel, key_producer
    for _ in range(8):
        if index is None or classify(ops[index].short_name) not in _PASS_THROUGH:
            break
        smallest = min(smallest, ops[index].outputs[0].numel)
        index = ops[index].input_producers[0] if ops[index].input_producers else None
    if index is not None and ops[index].outputs:
        smallest = min(smallest, ops[index].outputs[0].numel)
    ratio = key_numel // max(smallest, 1)
    return heads // ratio if ratio >= 1 and heads % ratio == 0 else heads


def _attention(ops: list[RawOp], raw: RawOp, causal: bool) -> AttentionSpec | None:
    if len(raw.input_specs) < 3 or len(raw.input_specs[0].shape) != 4:
        return None
    q, k, v = raw.input_specs[:3]
    batch, heads, q_len, head_dim = q.shape
    kv_heads = _kv_heads(ops, raw.input_producers[1], k.numel, heads)
    return AttentionSpec(
        batch=batch, heads=heads, kv_heads=kv_heads, q_len=q_len, kv_len=k.shape[-2],
        head_dim=head_dim, value_dim=v.shape[-1], causal=causal or raw.is_causal,
    )


def _experts(raw: RawOp, shape: CaptureShape) -> ExpertSpec | None:
    if len(raw.input_specs) < 2 or len(raw.input_specs[1].shape) != 3:
        return None
    weight = raw.input_specs[1]
    rows = raw.input_specs[0].shape[0]
    return ExpertSpec(
        num_experts=weight.shape[0], top_k=max(rows // max(shape.tokens, 1), 1),
        expert_param_bytes=weight.nbytes // weight.shape[0],
    )


_ALWAYS_PER_TOKEN = {"linear", "matmul", "grouped_matmul", "conv", "embedding", "norm"}


def _scaling(kind: str, raw: RawOp, shape: CaptureShape) -> str:
    """How the op's work grows with the input; shape-based for light ops (mask building, tables).

    GEMMs, norms and embeddings always scale with tokens, so a model dimension that happens to
    equal the captured sequence length cannot mislabel them.
    """
    if kind == "attention":
        return "attention"
    if shape.token_kind != "sequence" or not raw.outputs or kind in _ALWAYS_PER_TOKEN:
        return "tokens"
    dims = raw.outputs[0].shape
    if shape.seq_len > 1 and sum(1 for d in dims if d == shape.seq_len) >= 2:
        return "token_pairs"
    if raw.outputs[0].numel % shape.seq_len != 0:
        return "fixed"
    return "tokens"


def make_op(ops: list[RawOp], index: int, shape: CaptureShape) -> OpNode:
    """The OpNode of raw op `index` with kind, costs, scaling and attention/expert details."""
    raw = ops[index]
    kind = classify(raw.short_name)
    attention = _attention(ops, raw, shape.causal) if kind == "attention" else None
    if attention is not None:
        flops = attention.flops(attention.batch, attention.q_len, attention.kv_len)
    else:
        flops = op_flops(kind, raw.short_name, raw.input_specs, raw.outputs)
    bytes_read, bytes_written = op_bytes(kind, raw.input_specs, raw.outputs)
    params = tuple(dict.fromkeys(p for p in raw.input_params if p))
    param_bytes = 0 if kind == "view" else sum(
        s.nbytes for s, p in zip(raw.input_specs, raw.input_params) if p)
    if kind == "embedding":
        param_bytes = bytes_written  # gathers rows only
    return OpNode(
        id=index, name=f"{raw.short_name}_{index}", target=raw.target, kind=kind,
        inputs=tuple(p for p in raw.input_producers if p is not None), input_specs=raw.input_specs,
        outputs=raw.outputs, flops=flops, bytes_read=bytes_read, bytes_written=bytes_written,
        param_bytes=param_bytes, params=params, module_path=raw.module_path, layer=-1,
        scaling=_scaling(kind, raw, shape), attention=attention,
        experts=_experts(raw, shape) if kind == "grouped_matmul" else None,
    )


def op_signature(ops: tuple[OpNode, ...], base_path: str) -> str:
    parts = [
        f"{o.kind}:{o.target}:{[s.shape for s in o.outputs]}:{o.module_path.removeprefix(base_path)}"
        for o in ops
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def copy_op(op: OpNode, new_id: int, old_path: str, new_path: str, id_map: dict[int, int],
             fallback: int | None) -> OpNode:
    inputs = tuple(id_map.get(i, fallback if fallback is not None else i) for i in op.inputs)
    return replace(
        op, id=new_id, name=f"{op.name.rsplit('_', 1)[0]}_{new_id}", inputs=inputs,
        module_path=rename_op(op.module_path, old_path, new_path),
        params=tuple(rename_op(p, old_path, new_path) for p in op.params),
    )
