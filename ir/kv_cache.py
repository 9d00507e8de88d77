"""KV-cache and recurrent-state bytes of a graph, exact per attention kind and per layer.

Every number the memory model, the serving simulator and memory mapping use for the cache comes
from here, from the layers' `CacheSpec`s (`ir.cache_spec`):

- bytes per sequence of `tokens` tokens = sum over layers and their caches of
  elements per token x min(tokens, window) + constant state elements, times the element bytes;
- on one of `tp` tensor-parallel ranks each cache is split over min(tp, shards) ranks (K/V heads;
  multi-latent caches are replicated on every rank, as vLLM and SGLang keep them under TP);
- `kv_bytes_per_token` is the growth of a sequence's cache per token before any window fills
  (sliding-window layers add nothing once full; recurrent layers never add).

>>> import planner
>>> g = planner.capture("tiny-llama", seq_len=16)
>>> kv_bytes_per_token(g, 2), kv_bytes_per_sequence(g, 100, 2) == 100 * kv_bytes_per_token(g, 2)
(512.0, True)
"""

from __future__ import annotations

from ir.cache_spec import RECURRENT_KINDS
from ir.graph import Graph, Layer


def layer_bytes_per_sequence(layer: Layer, tokens: int, kv_bytes: int, tp: int = 1) -> float:
    """Cache bytes of one layer for one sequence of `tokens` tokens, on one of `tp` ranks."""
    return sum(c.bytes_per_sequence(tokens, kv_bytes, tp) for c in layer.caches)


def kv_bytes_per_sequence(graph: Graph, tokens: int, kv_bytes: int, tp: int = 1,
                          layers: tuple[int, int] | None = None) -> float:
    """Cache bytes of one sequence of `tokens` tokens in layers [a, b) (all by default), one rank."""
    a, b = layers or (0, len(graph.layers))
    return sum(layer_bytes_per_sequence(layer, tokens, kv_bytes, tp) for layer in graph.layers[a:b])


def kv_bytes_per_token(graph: Graph, kv_bytes: int, tp: int = 1) -> float:
    """Cache bytes one more token adds to a sequence whose windows are not yet full."""
    return sum(c.elements_per_token * kv_bytes / min(max(tp, 1), max(c.shards, 1))
               for layer in graph.layers for c in layer.caches)


def kv_bytes_per_token_by_window(graph: Graph, kv_bytes: int, tp: int = 1) -> dict[int, float]:
    """`kv_bytes_per_token` split by the window that bounds each cache (0: unbounded).

    >>> import planner
    >>> kv_bytes_per_token_by_window(planner.capture("tiny-llama", seq_len=16), 2)
    {0: 512.0}
    """
    out: dict[int, float] = {}
    for layer in graph.layers:
        for c in layer.caches:
            if c.elements_per_token:
                out[c.window] = out.get(c.window, 0.0) + c.elements_per_token * kv_bytes / min(max(tp, 1), max(c.shards, 1))
    return dict(sorted(out.items()))


def attention_layers_by_window(graph: Graph) -> dict[int, int]:
    """Layers with a token cache, counted by the window that bounds it (0: unbounded)."""
    out: dict[int, int] = {}
    for layer in graph.layers:
        for c in layer.caches:
            if c.elements_per_token:
                out[c.window] = out.get(c.window, 0) + 1
    return dict(sorted(out.items()))


def state_bytes_per_sequence(graph: Graph, kv_bytes: int, tp: int = 1) -> float:
    """Constant per-sequence bytes of the recurrent (linear-attention and state-space) layers."""
    return sum(c.state_elements * kv_bytes / min(max(tp, 1), max(c.shards, 1))
               for layer in graph.layers for c in layer.caches)


def is_generative(graph: Graph) -> bool:
    """A decoder that generates token by token keeps a cache in some layer (KV or state)."""
    return graph.token_kind == "sequence" and any(layer.caches for layer in graph.layers)


def has_recurrent_layers(graph: Graph) -> bool:
    return any(c.kind in RECURRENT_KINDS for layer in graph.layers for c in layer.caches)


def kv_table(graph: Graph, kv_bytes: int, tokens: int) -> list[dict]:
    """One row per distinct cache of the graph: kind, layers holding it, bytes per token and per
    sequence of `tokens` tokens (all those layers together), for reports and tests."""
    rows: dict[tuple, dict] = {}
    for layer in graph.layers:
        for c in layer.caches:
            key = (c.kind, c.describe())
            row = rows.setdefault(key, {"kind": c.kind, "cache": c.describe(), "layers": 0,
                                        "bytes_per_token": 0, "bytes_per_sequence": 0})
            row["layers"] += 1
            row["bytes_per_token"] += c.elements_per_token * kv_bytes
            row["bytes_per_sequence"] += int(c.bytes_per_sequence(tokens, kv_bytes))
    return list(rows.values())
