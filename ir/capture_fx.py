"""Capture with torch.fx.symbolic_trace plus shape propagation on meta tensors into `RawOp`s.

Leaf modules (nn.Linear, nn.Conv2d, ...) become one op each, with their parameters listed in the
order the aten op would take them, so `ir.op_costs` counts both paths alike.
"""

from __future__ import annotations

import torch
from torch.fx.passes.shape_prop import ShapeProp

from ir.graph import TensorSpec
from ir.raw import RawOp


def _spec_of(node) -> TensorSpec | None:
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        return None
    return TensorSpec(tuple(int(d) for d in meta.shape), str(meta.dtype).removeprefix("torch."))


def _outputs_of(node) -> tuple[TensorSpec, ...]:
    meta = node.meta.get("tensor_meta")
    if meta is None:
        return ()
    if hasattr(meta, "shape"):
        return (_spec_of(node),)
    if isinstance(meta, (list, tuple)):
        return tuple(
            TensorSpec(tuple(int(d) for d in m.shape), str(m.dtype).removeprefix("torch."))
            for m in meta if hasattr(m, "shape")
        )
    return ()


def _module_param_specs(module: torch.nn.Module, prefix: str) -> list[tuple[str, TensorSpec]]:
    out = []
    for name, param in module.named_parameters(recurse=True):
        spec = TensorSpec(tuple(int(d) for d in param.shape), str(param.dtype).removeprefix("torch."))
        out.append((f"{prefix}.{name}" if prefix else name, spec))
    return out


def _name_of(node) -> str:
    if node.op == "call_method":
        return str(node.target)
    return getattr(node.target, "__name__", str(node.target)).split(".")[-1]


def _node_module_path(node) -> str:
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


class _LeafTracer(torch.fx.Tracer):
    """The default tracer, plus user-named leaf modules (by path or class name)."""

    def __init__(self, leaves: tuple[str, ...]):
        super().__init__()
        self.leaves = set(leaves)

    def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
        if qualname in self.leaves or type(m).__name__ in self.leaves:
            return True
        return super().is_leaf_module(m, qualname)


def fx_raw_ops(module: torch.nn.Module, args: tuple, kwargs: dict,
               leaf_modules: tuple[str, ...] = ()) -> list[RawOp]:
    """symbolic_trace `module`, propagate meta shapes, and return its ops as RawOps."""
    tracer = _LeafTracer(leaf_modules)
    traced = torch.fx.GraphModule(module, tracer.trace(module))
    placeholders = [n for n in traced.graph.nodes if n.op == "placeholder"]
    ordered = list(args) + [kwargs[p.target] for p in placeholders[len(args):] if p.target in kwargs]
    ShapeProp(traced).propagate(*ordered)
    index_of: dict[str, int] = {}
    param_of: dict[str, str] = {}  # get_attr node -> parameter name
    param_names = {name for name, _ in module.named_parameters()}
    ops: list[RawOp] = []
    for node in traced.graph.nodes:
        if node.op == "get_attr" and str(node.target) in param_names:
            param_of[node.name] = str(node.target)
            continue
        if node.op not in ("call_module", "call_function", "call_method"):
            continue
        specs, producers, params = [], [], []
        for arg in node.all_input_nodes:
            spec = _spec_of(arg)
            if spec is None:
                continue
            specs.append(spec)
            producers.append(index_of.get(arg.name))
            params.append(param_of.get(arg.name))
        short = _name_of(node)
        if node.op == "call_module":
            submodule = traced.get_submodule(str(node.target))
            short = type(submodule).__name__
            for pname, pspec in _module_param_specs(submodule, str(node.target)):
                at = 0 if short == "Embedding" else len(specs)
                specs.insert(at, pspec)
                producers.insert(at, None)
                params.insert(at, pname)
        outputs = _outputs_of(node)
        if not outputs:
            continue
        index_of[node.name] = len(ops)
        ops.append(RawOp(
            short_name=short, target=f"{node.op}:{node.target if node.op != 'call_function' else short}",
            input_specs=tuple(specs), input_producers=tuple(producers), input_params=tuple(params),
            outputs=outputs, module_path=_node_module_path(node),
            is_causal=bool(node.kwargs.get("is_causal", False)),
        ))
    return ops
