"""Each layer's caches: the mixing modules that ran in it, classified from their attributes and
config (`ir.attention_kinds`), completed from the traced attention ops where those say more.

A mixing module that ran (some op lies in it) counts; one that did not run (a vision tower when
only text was given) does not. A module whose attributes do not tell its kind takes it from its
traced attention op (heads, K/V heads, head sizes: grouped-query or full); when no op tells either,
capture stops with a one-line `UserError` naming the module.
"""

from __future__ import annotations

from dataclasses import replace

from ir.attention_kinds import missing_kind_error
from ir.cache_spec import CacheSpec
from ir.graph import AttentionSpec, OpNode

_SOFTMAX_KINDS = ("full", "grouped_query", "sliding_window", "chunked_local", "cross")


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".")


def from_attention_op(path: str, a: AttentionSpec) -> CacheSpec:
    """The cache a traced attention op implies when nothing else is known."""
    kind = "grouped_query" if a.kv_heads < a.heads else "full"
    return CacheSpec(path, kind, heads=a.heads, kv_heads=a.kv_heads, key_dim=a.head_dim, value_dim=a.value_dim,
                     shards=a.kv_heads)


def _completed(spec: CacheSpec, op: OpNode | None) -> CacheSpec:
    """A softmax-attention cache with the value size the traced op shows (it may differ from K's)."""
    if op is None or spec.kind not in _SOFTMAX_KINDS or op.attention.value_dim == spec.value_dim:
        return spec
    return replace(spec, value_dim=op.attention.value_dim)


def layer_caches(block_path: str, body: list[OpNode], mixers: dict, model: str,
                 causal_only: bool = False) -> tuple[CacheSpec, ...]:
    """Caches of one layer: `block_path` is the block's module path ('' for the embedding, the head,
    or a model captured without repeated blocks); `body` its ops; `mixers` maps module path ->
    (class name, cache or None). Raises UserError for a module that ran but cannot be classified.
    With `causal_only` (a model not known to be a decoder, e.g. a bare nn.Module), only attention
    ops that are themselves causal imply a cache; bidirectional encoders keep none."""
    attention = [op for op in body if op.attention is not None and (op.attention.causal or not causal_only)]
    if not mixers and not attention:
        return ()
    paths = {op.module_path for op in body}
    out: list[CacheSpec] = []
    covered: set[int] = set()
    for path, (class_name, spec) in mixers.items():
        if block_path and not _under(path, block_path):
            continue
        if not any(_under(p, path) for p in paths):
            continue  # the module did not run in this layer
        ops = [op for op in attention if _under(op.module_path, path)]
        covered.update(op.id for op in ops)
        if spec is None and not ops:
            raise missing_kind_error(model, path, class_name)
        out.append(_completed(spec, ops[0] if ops else None) if spec else from_attention_op(path, ops[0].attention))
    for op in attention:  # attention computed outside any recognised module (a custom block)
        if op.id not in covered and not any(c.module_path == op.module_path for c in out):
            out.append(from_attention_op(op.module_path, op.attention))
    return tuple(out)
