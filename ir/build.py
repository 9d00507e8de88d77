"""Turn captured `RawOp`s into the Graph: costs per op, layers, and replicated blocks.

Capture traced one representative per distinct block signature; here every block of the original
model gets a copy of its representative's ops (module paths and parameter names rewritten), so the
Graph lists every op of the full model while the tracer ran over only a few blocks.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace

from ir.cache_spec import CacheSpec
from ir.graph import AttentionSpec, ExpertSpec, OpNode, TensorSpec
from ir.op_costs import classify, op_bytes, op_flops
from ir.raw import RawOp
from ir.weight_formats import stored_bytes

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


def _kv_heads(ops: list[RawOp], key_producer: int | None, key_shape: tuple[int, ...], heads: int) -> int:
    """Heads stored for K: follow the key back through views/copies to its smallest form.

    Only forms with the key's head size and sequence length count: a grouped-query repeat
    (unsqueeze, expand, reshape) shrinks the head axis, while a rotary split (GPT-NeoX, GPT-J,
    Phi-2 rotate part of each head, then concatenate) changes the head size and stops the walk.
    """
    key_numel = math.prod(key_shape)
    smallest, index = key_numel, key_producer
    for _ in range(8):
        if index is None or not ops[index].outputs:
            break
        out = ops[index].outputs[0].shape
        if not out or out[-1] != key_shape[-1] or key_shape[-2] not in out:
            break
        smallest = min(smallest, math.prod(out))
        if classify(ops[index].short_name) not in _PASS_THROUGH or not ops[index].input_producers:
            break
        index = ops[index].input_producers[0]
    ratio = key_numel // max(smallest, 1)
    return heads // ratio if ratio >= 1 and heads % ratio == 0 else heads


def _attention(ops: list[RawOp], raw: RawOp, causal: bool, cache: CacheSpec | None) -> AttentionSpec | None:
    if len(raw.input_specs) < 3 or len(raw.input_specs[0].shape) != 4:
        return None
    q, k, v = raw.input_specs[:3]
    batch, heads, q_len, head_dim = q.shape
    kv_heads = _kv_heads(ops, raw.input_producers[1], k.shape, heads)
    facts = {}
    if cache is not None and cache.kind in ("sliding_window", "chunked_local"):
        facts = {"window": cache.window, "chunked": cache.kind == "chunked_local"}
    elif cache is not None and cache.kind == "multi_latent":
        facts = {"latent_dim": cache.latent_dim, "rope_dim": cache.rope_dim}
    return AttentionSpec(
        batch=batch, heads=heads, kv_heads=kv_heads, q_len=q_len, kv_len=k.shape[-2],
        head_dim=head_dim, value_dim=v.shape[-1], causal=causal or raw.is_causal, **facts,
    )


@dataclass(frozen=True)
class CaptureFacts:
    """What capture knows besides the ops: mixing-module caches (path -> cache), the router's
    top-k from the config, and the published weight formats (`ir.weight_formats`)."""

    caches: dict = field(default_factory=dict)
    experts_per_token: int | None = None
    quantization: dict | None = None

    def stored(self, name: str, kind: str, spec: TensorSpec) -> int:
        stored = stored_bytes(self.quantization, name, kind, spec)
        return spec.nbytes if stored is None else stored


def _experts(raw: RawOp, shape: CaptureShape, facts: CaptureFacts, dense_dispatch: bool) -> ExpertSpec | None:
    if len(raw.input_specs) < 2 or len(raw.input_specs[1].shape) != 3:
        return None
    weight = raw.input_specs[1]
    experts = weight.shape[0]
    top_k = facts.experts_per_token if dense_dispatch else max(raw.input_specs[0].shape[0] // max(shape.tokens, 1), 1)
    stored = facts.stored(raw.input_params[1] or "", "grouped_matmul", weight)
    return ExpertSpec(num_experts=experts, top_k=top_k, expert_param_bytes=weight.nbytes // experts,
                      stored_expert_bytes=stored // experts)


def _dense_dispatch(kind: str, raw: RawOp, facts: CaptureFacts) -> bool:
    """A batched GEMM of every token through every expert ([E, T, h] @ [E, h, f], Llama 4 in
    transformers): engines run only the routed top-k, so it counts as a routed expert GEMM."""
    if kind != "matmul" or not facts.experts_per_token or len(raw.input_specs) < 2 or not raw.input_params[1]:
        return False
    x, w = raw.input_specs[:2]
    return len(w.shape) == 3 and len(x.shape) == 3 and x.shape[0] == w.shape[0] > facts.experts_per_token


_ALWAYS_PER_TOKEN = {"linear", "matmul", "grouped_matmul", "conv", "embedding", "norm", "scan"}


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


def mixer_of(path: str, caches: dict[str, CacheSpec]) -> CacheSpec | None:
    """The cache of the mixing module that `path` (an op's module path) lies in, if any."""
    while path:
        if path in caches:
            return caches[path]
        path = path.rpartition(".")[0]
    return None


def make_op(ops: list[RawOp], index: int, shape: CaptureShape, facts: CaptureFacts | None = None) -> OpNode:
    """The OpNode of raw op `index` with kind, costs, scaling and attention/expert details;
    `facts` give attention ops their window or latent and expert GEMMs their routing."""
    raw, facts = ops[index], facts or CaptureFacts()
    kind = classify(raw.short_name)
    cache = mixer_of(raw.module_path, facts.caches) if facts.caches and kind == "attention" else None
    attention = _attention(ops, raw, shape.causal, cache) if kind == "attention" else None
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
    dense_dispatch = _dense_dispatch(kind, raw, facts)
    if dense_dispatch:  # keep the routed share of the all-experts batched GEMM
        kind, share = "grouped_matmul", facts.experts_per_token / raw.input_specs[1].shape[0]
        flops = round(flops * share)
        bytes_read = param_bytes + round((bytes_read - param_bytes) * share)
        bytes_written = round(bytes_written * share)
    return OpNode(
        id=index, name=f"{raw.short_name}_{index}", target=raw.target, kind=kind,
        inputs=tuple(p for p in raw.input_producers if p is not None), input_specs=raw.input_specs,
        outputs=raw.outputs, flops=flops, bytes_read=bytes_read, bytes_written=bytes_written,
        param_bytes=param_bytes, params=params, module_path=raw.module_path, layer=-1,
        scaling=_scaling(kind, raw, shape), attention=attention,
        experts=_experts(raw, shape, facts, dense_dispatch) if kind == "grouped_matmul" else None,
    )


def _attention_variant(op: OpNode) -> str:
    """What sets apart attention ops of equal shapes: a window (sliding, chunked) or a latent."""
    a = op.attention
    if a is None or not (a.window or a.latent_dim):
        return ""
    return f":w{a.window}{'c' if a.chunked else ''}:l{a.latent_dim}+{a.rope_dim}"


def op_signature(ops: tuple[OpNode, ...], base_path: str) -> str:
    parts = [
        f"{o.kind}:{o.target}:{[s.shape for s in o.outputs]}:{o.module_path.removeprefix(base_path)}"
        f"{_attention_variant(o)}"
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
