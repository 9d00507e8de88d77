"""Tensor lifetimes from the IR's op order: the buffers a static arena must hold, as a packing instance.

Time step k is the k-th op of the (sub)graph in execution order. Every non-view op owns one buffer
(the sum of its outputs' `TensorSpec.nbytes`), live from its own step to the last step that reads
it, upper bound exclusive: [producer, last consumer + 1). Views ("view" kind: reshape, transpose,
getitem, ...) own no storage; a read through a view counts as a read of its base buffer (chains of
views are followed). A buffer nobody reads lives one step, except the graph's outputs (unread
buffers of the last layer), which live to the end. Inputs of the graph or sub-graph are not ops and
are not placed (the caller holds them).

Training: `training_lifetimes` appends an analytic backward (reverse-mode AD as in PyTorch's
autograd, Paszke et al. 2017): backward step of forward op p is 2T - 1 - p. A forward buffer that a
consumer saves for backward (GEMMs, attention, norms, softmax, non-additive element-wise ops,
convolutions: the inputs their derivative needs) stays live until that consumer's backward step;
the gradient of a floating-point buffer is created at the backward step of its last reader and
freed after the backward step of its producer. Parameters and parameter gradients are not
activations and are not placed here (the per-device memory map holds them).

`reorder_for_peak` optionally moves ops later, as long as their inputs are ready, to shorten how
long big buffers stay live (a list-scheduling heuristic; Ahn et al. 2020, "Ordering Chaos:
Memory-Aware Scheduling of Irregularly Wired Neural Networks", uses the same objective).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ir.errors import UserError
from ir.graph import Graph, OpNode
from passes.buffer_packing import Buffer, PackingInstance

log = logging.getLogger(__name__)

_SAVES_INPUTS = {"linear", "matmul", "grouped_matmul", "conv", "attention", "norm", "softmax", "embedding",
                 "reduction"}
_ADDITIVE = ("add", "sub", "neg", "__add__", "__sub__", "iadd")
_FLOAT = ("float", "bfloat")


def _is_float(op: OpNode) -> bool:
    return bool(op.outputs) and op.outputs[0].dtype.startswith(_FLOAT)


def _saves_inputs(op: OpNode) -> bool:
    if op.kind in _SAVES_INPUTS:
        return True
    if op.kind != "elementwise":
        return False
    base = op.name.rsplit("_", 1)[0].lower()
    return not base.startswith(_ADDITIVE)


def _owners(ops: Sequence[OpNode]) -> dict[int, int | None]:
    """Op id -> id of the op owning its storage (itself, or a view's base); None for graph inputs."""
    owner: dict[int, int | None] = {}
    for op in ops:
        if op.kind != "view":
            owner[op.id] = op.id
            continue
        base = None
        for src in op.inputs:
            base = owner.get(src)
            if base is not None:
                break
        owner[op.id] = base
    return owner


def _last_reads(ops: Sequence[OpNode], owner: dict[int, int | None]) -> dict[int, int]:
    """Owner id -> the last step (position in `ops`) that reads it directly or through a view."""
    last: dict[int, int] = {}
    for step, op in enumerate(ops):
        if op.kind == "view":
            continue  # a view reads nothing; its readers read its base
        for src in op.inputs:
            base = owner.get(src)
            if base is not None and base != op.id:
                last[base] = step
    return last


def _forward(ops: Sequence[OpNode], outputs: set[int]) -> tuple[dict[int, int], dict[int, int], dict[int, int]]:
    """Start step, end step (exclusive) and size of every owned buffer, keyed by op id."""
    owner = _owners(ops)
    last = _last_reads(ops, owner)
    end_of_graph = len(ops)
    start, end, size = {}, {}, {}
    for step, op in enumerate(ops):
        nbytes = sum(t.nbytes for t in op.outputs)
        if op.kind == "view" or nbytes <= 0:
            continue
        start[op.id], size[op.id] = step, nbytes
        end[op.id] = end_of_graph if op.id in outputs else last.get(op.id, step) + 1
    return start, end, size


def _graph_outputs(graph: Graph, ops: Sequence[OpNode]) -> set[int]:
    """Owners of unread buffers of the last op's layer (the model's outputs)."""
    if not ops:
        return set()
    owner = _owners(ops)
    read = {owner.get(src) for op in ops if op.kind != "view" for src in op.inputs}
    last_layer = ops[-1].layer
    return {owner[op.id] for op in ops if op.layer == last_layer and owner.get(op.id) is not None
            and owner[op.id] not in read and op.id == owner[op.id]}


def _select(graph: Graph, layer: int | None) -> tuple[OpNode, ...]:
    if layer is None:
        return graph.ops
    if not 0 <= layer < len(graph.layers):
        raise UserError(f"layer {layer} does not exist in {graph.model}: it has layers 0..{len(graph.layers) - 1}")
    return graph.layer_ops(graph.layers[layer])


def forward_lifetimes(graph: Graph, layer: int | None = None, order: Sequence[int] | None = None,
                      scale: float = 1.0) -> PackingInstance:
    """Buffers of the forward pass (one layer's ops when `layer` is given), capacity None.

    `order` is a permutation of the selected ops' positions (see `reorder_for_peak`); `scale`
    multiplies every size (e.g. tokens of a plan's microbatch over the capture's tokens).

    >>> import planner
    >>> inst = forward_lifetimes(planner.capture("tiny-llama", seq_len=16), layer=1)
    >>> len(inst.buffers) > 10, inst.liveness_lower_bound() > 0
    (True, True)
    """
    ops = _select(graph, layer)
    if order is not None:
        ops = tuple(ops[i] for i in order)
    outputs = _graph_outputs(graph, ops) if layer is None or layer == len(graph.layers) - 1 else set()
    start, end, size = _forward(ops, outputs)
    names = {op.id: op.name for op in ops}
    buffers = tuple(Buffer(names[i], start[i], end[i], max(int(size[i] * scale), 1)) for i in sorted(start))
    return PackingInstance(buffers)


def training_lifetimes(graph: Graph, layer: int | None = None, scale: float = 1.0) -> PackingInstance:
    """Forward plus analytic backward buffers (see the module docstring), capacity None.

    >>> import planner
    >>> g = planner.capture("tiny-llama", seq_len=16)
    >>> training_lifetimes(g, 1).liveness_lower_bound() > forward_lifetimes(g, 1).liveness_lower_bound()
    True
    """
    ops = _select(graph, layer)
    steps = len(ops)
    owner = _owners(ops)
    start, end, size = _forward(ops, set())
    position = {op.id: p for p, op in enumerate(ops)}
    back = {op.id: 2 * steps - 1 - p for p, op in enumerate(ops)}
    first_reader: dict[int, int] = {}  # owner -> backward step of its earliest saving reader
    last_reader: dict[int, int] = {}  # owner -> forward position of its last reader
    for op in ops:
        if op.kind == "view":
            continue
        for src in op.inputs:
            base = owner.get(src)
            if base is None or base == op.id:
                continue
            last_reader[base] = max(last_reader.get(base, -1), position[op.id])
            if _saves_inputs(op):
                first_reader[base] = max(first_reader.get(base, -1), back[op.id])
    buffers = []
    kinds = {op.id: op for op in ops}
    for i in sorted(start):
        keep = max(end[i], first_reader.get(i, -1) + 1)
        if kinds[i].kind in ("softmax", "attention"):  # their backward reads their own output
            keep = max(keep, back[i] + 1)
        buffers.append(Buffer(kinds[i].name, start[i], keep, max(int(size[i] * scale), 1)))
        if _is_float(kinds[i]):
            born = back[ops[last_reader[i]].id] if i in last_reader else back[i]
            buffers.append(Buffer(f"grad.{kinds[i].name}", born, back[i] + 1, max(int(size[i] * scale), 1)))
    return PackingInstance(tuple(buffers))


def reorder_for_peak(graph: Graph, layer: int | None = None) -> list[int]:
    """A topological order of the selected ops that greedily runs, among ready ops, the one that frees
    the most bytes (then the smallest new buffer); returns positions into the selected ops.

    >>> import planner
    >>> g = planner.capture("tiny-llama", seq_len=16)
    >>> order = reorder_for_peak(g, 1)
    >>> sorted(order) == list(range(len(order)))
    True
    """
    ops = _select(graph, layer)
    position = {op.id: p for p, op in enumerate(ops)}
    owner = _owners(ops)
    preds = [{position[s] for s in op.inputs if s in position} for op in ops]
    succs: list[list[int]] = [[] for _ in ops]
    readers: dict[int, int] = {}
    for p, op in enumerate(ops):
        for s in preds[p]:
            succs[s].append(p)
        if op.kind != "view":
            for base in {owner.get(s) for s in op.inputs} - {None, op.id}:
                readers[base] = readers.get(base, 0) + 1
    waiting = [len(x) for x in preds]
    ready = {p for p, n in enumerate(waiting) if n == 0}
    order: list[int] = []
    while ready:
        def gain(p: int) -> tuple[int, int, int]:
            op = ops[p]
            freed = sum(sum(t.nbytes for t in ops[position[b]].outputs) for b in {owner.get(s) for s in op.inputs}
                        if b in position and b != op.id and readers.get(b) == 1) if op.kind != "view" else 0
            new = 0 if op.kind == "view" else sum(t.nbytes for t in op.outputs)
            return (new - freed, new, p)
        best = min(ready, key=gain)
        ready.discard(best)
        order.append(best)
        if ops[best].kind != "view":
            for base in {owner.get(s) for s in ops[best].inputs} - {None, ops[best].id}:
                readers[base] -= 1
        for nxt in succs[best]:
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                ready.add(nxt)
    log.debug("reordered %d ops", len(order))
    return order
