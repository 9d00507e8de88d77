"""Capture a model into the Graph IR: torch.fx.symbolic_trace first, torch.export as fallback.

Models are on the meta device, so nothing is materialised; repeated blocks are traced once
(`ir.blocks`) and replicated (`ir.expand`). A model that neither tracer handles raises a
`UserError` naming the module that stopped it and what to do.

>>> import torch
>>> g = capture_module(torch.nn.Sequential(torch.nn.Linear(4, 8)), (torch.empty(2, 4),), name="mlp")
>>> g.ops[0].kind, g.ops[0].flops
('linear', 144)
"""

from __future__ import annotations

import contextlib
import io
import logging
import time

import torch

from ir.attention_fusion import fuse_eager_attention
from ir.attention_kinds import classify_model
from ir.blocks import find_block_lists, truncated_to_representatives
from ir.build import CaptureFacts, CaptureShape
from ir.capture_export import export_raw_ops
from ir.capture_fx import fx_raw_ops
from ir.errors import UserError
from ir.expand import assemble_graph
from ir.graph import Graph, TensorSpec

log = logging.getLogger(__name__)


def _spec(t: torch.Tensor) -> TensorSpec:
    return TensorSpec(tuple(int(d) for d in t.shape), str(t.dtype).removeprefix("torch."))


def _culprit(exc: BaseException, model: torch.nn.Module) -> str | None:
    """Path of the innermost module of `model` whose forward was running when `exc` was raised."""
    names = {id(m): name or type(model).__name__ for name, m in model.named_modules()}
    culprit = None
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        tb = exc.__traceback__
        while tb is not None:
            owner = tb.tb_frame.f_locals.get("self")
            if id(owner) in names:
                culprit = names[id(owner)]
            tb = tb.tb_next
        exc = exc.__cause__ or exc.__context__
    return culprit


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]


@contextlib.contextmanager
def _quiet_tracer_logs():
    """torch.export logs and prints whole graphs when it fails; keep stderr to our one line."""
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    logging.disable(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)


def _trace(model, args, kwargs, name, use_fx: bool, leaf_modules: tuple[str, ...]):
    """RawOps and the method that produced them; raises UserError when both tracers fail."""
    if use_fx:
        try:
            return fx_raw_ops(model, args, kwargs, leaf_modules), "torch.fx"
        except Exception as exc:  # any tracer failure sends us to the next tracer
            fx_error = exc
            log.debug("torch.fx could not trace %s: %s", name, _first_line(exc))
    else:
        fx_error = None
    try:
        with _quiet_tracer_logs():
            return export_raw_ops(model, args, kwargs), "torch.export"
    except Exception as exc:
        culprit = _culprit(exc, model) or (_culprit(fx_error, model) if fx_error else None)
        where = f"module '{culprit}'" if culprit else f"model '{name}'"
        raise UserError(
            f"cannot capture {where} of {name}: neither torch.fx nor torch.export traced it "
            f"({_first_line(exc)}); make that module a leaf (leaf_modules=[...]) or pass example "
            f"inputs that avoid data-dependent control flow"
        ) from None


def capture_module(model: torch.nn.Module, args: tuple = (), kwargs: dict | None = None, *,
                   name: str = "module", seq_len: int | None = None, causal: bool = False,
                   use_fx: bool = True, config: dict | None = None,
                   leaf_modules: tuple[str, ...] = ()) -> Graph:
    """Capture `model` called as ``model(*args, **kwargs)`` into a Graph.

    `seq_len` set means a sequence model (tokens = batch x seq_len); otherwise tokens = batch.
    `leaf_modules` names module paths or class names that torch.fx keeps whole (not traced into).
    Example: see the module docstring.
    """
    kwargs = dict(kwargs or {})
    tensors = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
    if not tensors:
        raise UserError(f"no example input tensors given for {name}; pass example inputs")
    batch = int(tensors[0].shape[0]) if tensors[0].dim() else 1
    shape = CaptureShape(batch=batch, seq_len=seq_len or 1,
                         token_kind="sequence" if seq_len else "sample", causal=causal)
    started = time.perf_counter()
    lists = find_block_lists(model)
    config = config or {}
    summary = config if isinstance(config, dict) else {}
    mixers = classify_model(model) if causal else {}
    facts = CaptureFacts(caches={path: spec for path, (_, spec) in mixers.items() if spec is not None},
                         experts_per_token=summary.get("experts_per_token"),
                         quantization=summary.get("weight_quantization"))
    from ir.recurrent_kernels import substituted

    with torch.no_grad(), truncated_to_representatives(model, lists) as path_map, substituted(model):
        raw_ops, method = _trace(model, args, kwargs, name, use_fx, tuple(leaf_modules))
    meta = {"model": name, "architecture": type(model).__name__, "method": method,
            "dtype": _param_dtype(model), "inputs": [_spec(t) for t in tensors], "config": config}
    graph = assemble_graph(fuse_eager_attention(raw_ops, batch), path_map, lists, shape, meta, facts, mixers)
    if causal and shape.token_kind == "sequence" and not any(layer.caches for layer in graph.layers):
        raise UserError(f"cannot tell how {name} ({type(model).__name__}) mixes tokens: it is a causal "
                        f"model but no attention or state-space op was traced and no module names its "
                        f"attention kind, so it has no KV cache to plan; check the model class")
    log.info("captured %s with %s: %d ops, %d layers in %.2f s", name, method, len(graph.ops),
             len(graph.layers), time.perf_counter() - started)
    return graph


def _param_dtype(model: torch.nn.Module) -> str:
    for p in model.parameters():
        if p.is_floating_point():
            return str(p.dtype).removeprefix("torch.")
    return "float32"
