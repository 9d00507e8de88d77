"""Capture with torch.export (non-strict) on meta tensors into `RawOp`s.

This is the path for Hugging Face transformers 5 models, which torch.fx cannot symbolically trace.
Parameters stay on the meta device: nothing is materialised.
"""

from __future__ import annotations

import operator

import torch

from ir.graph import TensorSpec
from ir.raw import RawOp

_PARAM_VIEWS = ("transpose", "t", "permute", "view", "reshape", "to", "_to_copy")


def _spec(value) -> TensorSpec | None:
    if isinstance(value, torch.Tensor):
        return TensorSpec(tuple(int(d) for d in value.shape), str(value.dtype).removeprefix("torch."))
    return None


def _output_specs(value) -> tuple[TensorSpec, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(s for s in (_spec(v) for v in value) if s is not None)
    spec = _spec(value)
    return (spec,) if spec is not None else ()


def _short_name(target) -> str:
    if target is operator.getitem:
        return "getitem"
    name = getattr(target, "_opname", None) or getattr(target, "__name__", None) or str(target)
    return name.split(".")[-1]


def _module_path(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return path.removeprefix("L['self'].").removeprefix("L__self__.")


def _flat_args(node):
    """Node arguments in order, nested lists flattened (cat takes a list of tensors)."""
    for arg in list(node.args) + list(node.kwargs.values()):
        if isinstance(arg, (list, tuple)):
            yield from arg
        else:
            yield arg


def export_raw_ops(module: torch.nn.Module, args: tuple, kwargs: dict) -> list[RawOp]:
    """Export `module` non-strictly and return its call_function nodes as RawOps."""
    program = torch.export.export(module, args, kwargs=kwargs, strict=False)
    params = dict(program.graph_signature.inputs_to_parameters)
    index_of: dict[str, int] = {}
    param_alias: dict[str, str] = {}  # fx node name -> parameter it views
    ops: list[RawOp] = []
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        specs, producers, param_names = [], [], []
        for arg in _flat_args(node):
            if not isinstance(arg, torch.fx.Node):
                continue
            spec = _spec(arg.meta.get("val"))
            if spec is None:
                continue
            specs.append(spec)
            producers.append(index_of.get(arg.name))
            param_names.append(params.get(arg.name) or param_alias.get(arg.name))
        outputs = _output_specs(node.meta.get("val"))
        name = _short_name(node.target)
        if name in _PARAM_VIEWS and param_names and param_names[0]:
            param_alias[node.name] = param_names[0]  # a view of a weight still reads that weight
        if not outputs:
            continue
        index_of[node.name] = len(ops)
        ops.append(RawOp(
            short_name=name, target=str(node.target), input_specs=tuple(specs),
            input_producers=tuple(producers), input_params=tuple(param_names), outputs=outputs,
            module_path=_module_path(node), is_causal=bool(node.kwargs.get("is_causal", False)),
        ))
    return ops
