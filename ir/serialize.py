"""Exact JSON round trip of the Graph: `graph_to_dict` / `graph_from_dict` and file helpers.

The format is versioned (`format`); reading another major version is a `UserError`.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from ir.cache_spec import CacheSpec
from ir.errors import UserError
from ir.fileio import write_atomic
from ir.graph import AttentionSpec, ExpertSpec, Graph, Layer, OpNode, TensorSpec

GRAPH_FORMAT = "aot-planner.graph/2"  # 2: attention windows and latents, layer caches, stored bytes


def _spec(d) -> TensorSpec:
    return TensorSpec(tuple(d["shape"]), d["dtype"])


def _spec_dict(s: TensorSpec) -> dict:
    return {"shape": list(s.shape), "dtype": s.dtype}


def _op_dict(op: OpNode) -> dict:
    out = {}
    for f in fields(OpNode):
        value = getattr(op, f.name)
        if f.name in ("input_specs", "outputs"):
            value = [_spec_dict(s) for s in value]
        elif f.name in ("inputs", "params"):
            value = list(value)
        elif f.name in ("attention", "experts") and value is not None:
            value = {g.name: getattr(value, g.name) for g in fields(value)}
        out[f.name] = value
    return out


def _op_from(d: dict) -> OpNode:
    return OpNode(**{
        **d, "inputs": tuple(d["inputs"]), "params": tuple(d["params"]),
        "input_specs": tuple(_spec(s) for s in d["input_specs"]),
        "outputs": tuple(_spec(s) for s in d["outputs"]),
        "attention": AttentionSpec(**d["attention"]) if d.get("attention") else None,
        "experts": ExpertSpec(**d["experts"]) if d.get("experts") else None,
    })


def _layer_dict(layer: Layer) -> dict:
    out = {f.name: getattr(layer, f.name) for f in fields(Layer)}
    out["caches"] = [{g.name: getattr(c, g.name) for g in fields(CacheSpec)} for c in layer.caches]
    return out


def _layer_from(d: dict) -> Layer:
    return Layer(**{**d, "caches": tuple(CacheSpec(**c) for c in d["caches"])})


def graph_to_dict(graph: Graph) -> dict:
    """A JSON-able dict holding every field of the graph."""
    return {
        "format": GRAPH_FORMAT,
        **{f.name: getattr(graph, f.name) for f in fields(Graph) if f.name not in ("ops", "layers", "inputs")},
        "inputs": [_spec_dict(s) for s in graph.inputs],
        "layers": [_layer_dict(layer) for layer in graph.layers],
        "ops": [_op_dict(op) for op in graph.ops],
    }


def graph_from_dict(data: dict) -> Graph:
    """Inverse of `graph_to_dict`: ``graph_from_dict(graph_to_dict(g)) == g``."""
    if not isinstance(data, dict) or data.get("format") != GRAPH_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise UserError(f"not a graph file of format {GRAPH_FORMAT} (found {found}); re-run capture")
    scalars = {f.name: data[f.name] for f in fields(Graph) if f.name not in ("ops", "layers", "inputs")}
    return Graph(
        **scalars, inputs=tuple(_spec(s) for s in data["inputs"]),
        ops=tuple(_op_from(op) for op in data["ops"]),
        layers=tuple(_layer_from(layer) for layer in data["layers"]),
    )


def dumps(graph: Graph) -> str:
    return json.dumps(graph_to_dict(graph), sort_keys=True, separators=(",", ":")) + "\n"


def save_graph(graph: Graph, path: str | Path) -> Path:
    """Write the graph as JSON, atomically; byte-identical for equal graphs."""
    return write_atomic(path, dumps(graph))


def load_graph(path: str | Path) -> Graph:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"graph file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    return graph_from_dict(data)
