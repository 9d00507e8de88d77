"""Structural checks of a Graph, run between passes in tests: `verify_graph` lists problems."""

from __future__ import annotations

from ir.cache_spec import CACHE_KINDS
from ir.graph import SCALINGS, Graph
from ir.op_costs import KINDS


def verify_graph(graph: Graph) -> list[str]:
    """Problems found (empty when the graph is well formed).

    Checks: op ids are positions; inputs refer to earlier ops; layers are contiguous, ordered
    and cover every op; each op's layer matches; costs are non-negative; kinds and scalings are
    known; totals equal the sums over layers; attention specs agree with their inputs; layer
    caches have a known kind, non-negative sizes and lie inside their layer's module.
    """
    problems: list[str] = []
    for i, op in enumerate(graph.ops):
        if op.id != i:
            problems.append(f"op at position {i} has id {op.id}")
        if any(not 0 <= j < i for j in op.inputs):
            problems.append(f"op {i} ({op.name}) reads an op that is not earlier: {op.inputs}")
        if min(op.flops, op.bytes_read, op.bytes_written, op.param_bytes) < 0:
            problems.append(f"op {i} ({op.name}) has a negative cost")
        if op.kind not in KINDS or op.scaling not in SCALINGS:
            problems.append(f"op {i} ({op.name}) has unknown kind {op.kind} or scaling {op.scaling}")
        if op.attention is not None and op.attention.heads % max(op.attention.kv_heads, 1):
            problems.append(f"op {i} attention heads {op.attention.heads} not a multiple of kv heads")
    position = 0
    for k, layer in enumerate(graph.layers):
        if layer.index != k:
            problems.append(f"layer at position {k} has index {layer.index}")
        if layer.op_start != position or layer.op_end < layer.op_start:
            problems.append(f"layer {k} covers [{layer.op_start},{layer.op_end}), expected start {position}")
        position = layer.op_end
        problems += _cache_problems(layer)
        for op in graph.ops[layer.op_start:layer.op_end]:
            if op.layer != k:
                problems.append(f"op {op.id} is in layer {k}'s range but says layer {op.layer}")
                break
    if position != len(graph.ops):
        problems.append(f"layers cover {position} ops of {len(graph.ops)}")
    if graph.param_count != sum(layer.param_count for layer in graph.layers):
        problems.append("graph param_count differs from the sum over layers")
    if sum(layer.flops for layer in graph.layers) != graph.flops:
        problems.append("layer FLOPs do not add up to the graph's")
    return problems


def _cache_problems(layer) -> list[str]:
    problems = []
    for c in layer.caches:
        if c.kind not in CACHE_KINDS:
            problems.append(f"layer {layer.index} cache {c.module_path} has unknown kind {c.kind}")
        if min(c.kv_heads, c.key_dim, c.value_dim, c.window, c.state_elements, c.shards) < 0:
            problems.append(f"layer {layer.index} cache {c.module_path} has a negative size")
        if layer.kind == "block" and not (c.module_path + ".").startswith(layer.name + "."):
            problems.append(f"layer {layer.index} ({layer.name}) lists the cache of {c.module_path}")
    return problems
