"""The kernels a fused engine launches for one layer of a captured graph.

Serving and training engines (vLLM, TensorRT-LLM, Megatron, torch.compile) do not launch one kernel
per aten op. This module groups a layer's ops the way they run:

- GEMMs that read the same input tensor (q/k/v projections, gate/up of a gated MLP) are one merged
  GEMM (vLLM's QKVParallelLinear / MergedColumnParallelLinear, Megatron's fused QKV, gpt-fast's wqkv);
- every maximal connected group of element-wise, normalisation, reduction and routing ops (views are
  transparent, GEMMs and attention are boundaries) is one fused kernel (fused add + RMSNorm, rotary
  embedding, SiLU x mul, bias + GeLU): it reads the tensors that enter the group from outside once
  and writes the tensors that leave it (consumed by another kernel, or the layer's output) once;
  a group of pure copies and casts (`contiguous`, `to`) folds into its neighbours and costs nothing;
- attention, embedding lookups, expert GEMMs and convolutions stay one kernel each.

Bytes are counted at the capture shape (`Region.read_bytes`, `write_bytes`) and scale with the
tokens of a phase like the ops themselves. The grouping depends only on the layer's structure, so
it is computed once per (graph, layer signature).
"""

from __future__ import annotations

from dataclasses import dataclass

from ir.graph import Graph, Layer, OpNode

_GEMM = {"linear"}
_SINGLE = {"attention", "embedding", "matmul", "grouped_matmul", "conv"}
_FUSIBLE = {"elementwise", "norm", "reduction", "softmax", "routing", "copy", "other"}
_COMPUTE = {"elementwise", "norm", "reduction", "softmax", "routing", "other"}
_CACHE: dict[tuple[int, str], tuple[Graph, tuple]] = {}
_CACHE_LIMIT = 64


@dataclass(frozen=True)
class Kernel:
    """One launched kernel: its ops; for a fused element-wise group, its boundary traffic."""

    kind: str  # gemm | attention | region | single
    ops: tuple[OpNode, ...]
    read_bytes: int = 0  # region: bytes entering the group, at the capture shape
    write_bytes: int = 0  # region: bytes leaving it
    # region: the same bytes by how they scale with the phase shape (`ir.graph.OpNode.scaling` of the op
    # reading or writing them: "tokens", "token_pairs" (masks), "fixed"), as sorted (scaling, bytes) pairs
    bytes_by_scaling: tuple[tuple[str, int], ...] = ()

    @property
    def op(self) -> OpNode:
        return self.ops[0]


def layer_kernels(graph: Graph, layer: Layer) -> tuple[Kernel, ...]:
    """The kernels of `layer` in launch order (see the module docstring).

    >>> import planner
    >>> g = planner.capture("tiny-llama", seq_len=16)
    >>> kinds = [k.kind for k in layer_kernels(g, g.layers[1])]
    >>> kinds.count("gemm"), kinds.count("attention"), kinds.count("region")  # qkv, o, gate+up, down
    (4, 1, 6)
    """
    key = (id(graph), layer.signature)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is graph:
        return hit[1]
    kernels = _build(graph, layer)
    if len(_CACHE) >= _CACHE_LIMIT:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = (graph, kernels)
    return kernels


def _build(graph: Graph, layer: Layer) -> tuple[Kernel, ...]:
    ops = graph.layer_ops(layer)
    by_id = {op.id: op for op in ops}
    source = _view_sources(ops, by_id)
    consumers = _consumers(ops, source)
    regions = _regions(ops, by_id, source)
    kernels: list[tuple[int, Kernel]] = []
    gemms: dict[int, list[OpNode]] = {}
    for op in ops:
        if op.kind in _GEMM and op.experts is None:
            gemms.setdefault(_input_of(op, source), []).append(op)
        elif op.kind in _SINGLE or (op.kind in _GEMM and op.experts is not None):
            kernels.append((op.id, Kernel("attention" if op.kind == "attention" else "single", (op,))))
    for members in gemms.values():
        kernels.append((members[0].id, Kernel("gemm", tuple(members))))
    for members in regions:
        if not any(op.kind in _COMPUTE for op in members):
            continue  # casts and layout copies fold into the kernels around them
        read, write, by_scaling = _boundary_bytes(members, by_id, source, consumers, graph)
        kernels.append((members[0].id, Kernel("region", tuple(members), read, write, by_scaling)))
    return tuple(k for _, k in sorted(kernels, key=lambda item: item[0]))


def _view_sources(ops: tuple[OpNode, ...], by_id: dict[int, OpNode]) -> dict[int, int]:
    """For every view op, the non-view op whose output it aliases (within the layer, or outside)."""
    source: dict[int, int] = {}
    for op in ops:
        if op.kind == "view":
            first = op.inputs[0] if op.inputs else op.id
            source[op.id] = source.get(first, first) if first in by_id and by_id[first].kind == "view" else first
    return source


def _resolve(op_id: int, source: dict[int, int]) -> int:
    return source.get(op_id, op_id)


def _input_of(op: OpNode, source: dict[int, int]) -> int:
    return _resolve(op.inputs[0], source) if op.inputs else -op.id


def _consumers(ops: tuple[OpNode, ...], source: dict[int, int]) -> dict[int, set[int]]:
    """Producer id -> ids of the non-view ops of the layer that read it (views resolved)."""
    out: dict[int, set[int]] = {}
    for op in ops:
        if op.kind == "view":
            continue
        for producer in op.inputs:
            out.setdefault(_resolve(producer, source), set()).add(op.id)
    return out


def _regions(ops: tuple[OpNode, ...], by_id: dict[int, OpNode], source: dict[int, int]) -> list[list[OpNode]]:
    """Connected groups of fusible ops (union-find over producer -> consumer edges, views resolved)
    between the same two heavy kernels: an edge that crosses a GEMM or attention in launch order (the
    residual stream from one sub-layer to the next) is a tensor in memory, not a fused value."""
    parent = {op.id: op.id for op in ops if op.kind in _FUSIBLE}
    segment, heavy, merged = {}, 0, set()
    for op in ops:
        if op.kind in _GEMM and op.experts is None:
            key = _input_of(op, source)
            heavy += key not in merged  # a merged GEMM is one kernel: its first member starts it
            merged.add(key)
        elif op.kind in _GEMM or op.kind in _SINGLE:
            heavy += 1
        segment[op.id] = heavy

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for op in ops:
        if op.id not in parent:
            continue
        for producer in op.inputs:
            p = _resolve(producer, source)
            if p in parent and segment[p] == segment[op.id]:
                parent[find(p)] = find(op.id)
    groups: dict[int, list[OpNode]] = {}
    for op in ops:
        if op.id in parent:
            groups.setdefault(find(op.id), []).append(op)
    return list(groups.values())


def _boundary_bytes(members: list[OpNode], by_id: dict[int, OpNode], source: dict[int, int],
                    consumers: dict[int, set[int]], graph: Graph) -> tuple[int, int, tuple]:
    """(bytes read from outside the group, bytes written for readers outside it, both by scaling),
    at the capture shape."""
    inside = {op.id for op in members}
    read_from: dict[int, tuple[int, str]] = {}
    for op in members:
        for producer, spec in zip(op.inputs, op.input_specs):
            p = _resolve(producer, source)
            if p not in inside and spec.nbytes > read_from.get(p, (0, ""))[0]:
                read_from[p] = (spec.nbytes, op.scaling)
    written = 0
    by_scaling: dict[str, int] = {}
    for nbytes, scaling in read_from.values():
        by_scaling[scaling] = by_scaling.get(scaling, 0) + nbytes
    for op in members:
        readers = consumers.get(op.id, set())
        if not readers or readers - inside:
            out = sum(spec.nbytes for spec in op.outputs)
            written += out
            by_scaling[op.scaling] = by_scaling.get(op.scaling, 0) + out
    return sum(b for b, _ in read_from.values()), written, tuple(sorted(by_scaling.items()))
