"""Assemble the Graph: split captured ops into prologue, representative blocks and epilogue, then
replicate each representative for every block of the original model and form the layers."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ir.blocks import BlockList
from ir.build import CaptureFacts, CaptureShape, copy_op, make_op, op_signature, rename_op
from ir.graph import Graph, Layer, OpNode
from ir.layer_caches import layer_caches
from ir.op_costs import classify
from ir.raw import RawOp


@dataclass
class _Segments:
    prologue: list[int]
    blocks: dict[str, list[int]]  # representative's original path -> raw op indices
    epilogue: list[int]


def _remap_paths(ops: list[RawOp], path_map: dict[str, str]) -> list[RawOp]:
    keys = sorted(path_map, key=len, reverse=True)
    out = []
    for raw in ops:
        path = raw.module_path
        params = list(raw.input_params)
        for key in keys:
            if path == key or path.startswith(key + "."):
                path = rename_op(path, key, path_map[key])
                break
        for i, p in enumerate(params):
            for key in keys:
                if p and p.startswith(key + "."):
                    params[i] = rename_op(p, key, path_map[key])
                    break
        out.append(replace(raw, module_path=path, input_params=tuple(params)))
    return out


def _segments(ops: list[RawOp], block_paths: set[str]) -> _Segments:
    seg = _Segments([], {}, [])
    pending: list[int] = []
    last_block: str | None = None
    for index, raw in enumerate(ops):
        block = next((b for b in _prefixes(raw.module_path) if b in block_paths), None)
        if block is None:
            pending.append(index)
            continue
        target = seg.prologue if last_block is None else seg.blocks[last_block]
        target.extend(pending)
        pending = []
        seg.blocks.setdefault(block, []).append(index)
        last_block = block
    if last_block is None:
        seg.prologue.extend(pending)
    else:
        seg.epilogue.extend(pending)
    return seg


def _prefixes(path: str):
    parts = path.split(".")
    for n in range(len(parts), 0, -1):
        yield ".".join(parts[:n])


def _full_order(lists: list[BlockList], seg: _Segments) -> list[tuple[str, str]]:
    """(block path, representative path) for every block of the model, in execution order."""
    first_seen = {path: ops[0] for path, ops in seg.blocks.items()}
    order = []
    for block_list in sorted(lists, key=lambda b: min(
            first_seen.get(b.child_path(i), 1 << 60) for i in range(len(b.signatures)))):
        rep_of: dict[str, str] = {}
        for i, sig in enumerate(block_list.signatures):
            rep_of.setdefault(sig, block_list.child_path(i))
            order.append((block_list.child_path(i), rep_of[sig]))
    return [(path, rep) for path, rep in order if rep in seg.blocks]


def _param_sizes(ops: list[RawOp], facts: CaptureFacts) -> dict[str, tuple[int, int, int]]:
    """Parameter name -> (elements, captured bytes, stored bytes) of every parameter ops read."""
    sizes: dict[str, tuple[int, int, int]] = {}
    for raw in ops:
        kind = classify(raw.short_name)
        for spec, name in zip(raw.input_specs, raw.input_params):
            if not name:
                continue
            stored = facts.stored(name, kind, spec)  # a GEMM reading it decides (views come first)
            if name not in sizes or stored < sizes[name][2]:
                sizes[name] = (spec.numel, spec.nbytes, stored)
    return sizes


def _layer(index, name, kind, ops, start, base, owned, sizes, caches) -> Layer:
    body = tuple(ops[start:])
    return Layer(
        index=index, name=name, kind=kind, signature=op_signature(body, base), op_start=start,
        op_end=len(ops), param_count=sum(sizes[p][0] for p in owned),
        param_bytes=sum(sizes[p][1] for p in owned), flops=sum(o.flops for o in body),
        is_moe=any(o.experts is not None for o in body), caches=caches,
        stored_param_bytes=sum(sizes[p][2] for p in owned),
    )


def assemble_graph(raw_ops: list[RawOp], path_map: dict[str, str], lists: list[BlockList],
                   shape: CaptureShape, meta: dict, facts: CaptureFacts | None = None,
                   mixers: dict | None = None) -> Graph:
    """The full Graph from captured ops; `meta` holds model, architecture, method, dtype, inputs;
    `mixers` (module path -> (class name, cache or None)) become each layer's caches (causal
    models only: an encoder keeps no cache)."""
    facts = facts or CaptureFacts()
    mixers = mixers or {}
    raw_ops = _remap_paths(raw_ops, path_map)
    seg = _segments(raw_ops, set(path_map.values()))
    base_ops = [make_op(raw_ops, i, shape, facts) for i in range(len(raw_ops))]
    rep_sizes = _param_sizes(raw_ops, facts)
    ops: list[OpNode] = []
    layers: list[Layer] = []
    owned_all: set[str] = set()
    sizes: dict[str, tuple[int, int, int]] = {}

    prologue_map: dict[int, int] = {}

    def emit(indices, old_path, new_path, fallback, name, kind):
        id_map = dict(prologue_map)  # producers in the prologue keep their ids
        start = len(ops)
        owned = []
        for raw_index in indices:
            op = copy_op(base_ops[raw_index], len(ops), old_path, new_path, id_map, fallback)
            id_map[raw_index] = op.id
            for raw_name, new_name in zip(base_ops[raw_index].params, op.params):
                sizes[new_name] = rep_sizes[raw_name]
                if new_name not in owned_all:
                    owned_all.add(new_name)
                    owned.append(new_name)
            ops.append(replace(op, layer=len(layers)))
        caches = layer_caches(name if kind == "block" else "", ops[start:], mixers if shape.causal else {},
                              meta["model"], causal_only=not shape.causal)
        layers.append(_layer(len(layers), name, kind, ops, start, new_path, owned, sizes, caches))
        return id_map

    if seg.prologue:
        prologue_map.update(emit(seg.prologue, "", "", None, "embedding", "embedding"))
    for path, rep in _full_order(lists, seg):
        # a block's input from outside itself is the previous layer's output (its last op)
        emit(seg.blocks[rep], rep, path, ops[-1].id if ops else None, path, "block")
    if seg.epilogue:
        emit(seg.epilogue, "", "", ops[-1].id if ops else None, "head", "head")
    return Graph(
        model=meta["model"], architecture=meta["architecture"], capture_method=meta["method"],
        batch=shape.batch, seq_len=shape.seq_len, token_kind=shape.token_kind, dtype=meta["dtype"],
        inputs=tuple(meta["inputs"]), ops=tuple(ops), layers=tuple(layers),
        param_count=sum(layer.param_count for layer in layers),
        param_bytes=sum(layer.param_bytes for layer in layers), config=meta.get("config", {}),
    )
