"""The public Python API (mirrors the CLI): capture and inspect for now.

>>> import planner
>>> report = planner.inspect("tiny-llama", seq_len=32)
>>> report["totals"]["param_count"], report["distinct_blocks"]
(250432, 1)
"""

from __future__ import annotations

import logging

from ir.errors import UserError
from ir.graph import Graph
from ir.phases import PHASES, phase_costs
from planner import graph_cache

log = logging.getLogger(__name__)

_CACHE: dict[tuple, Graph] = {}
_CACHE_LIMIT = 16


def capture(model, *, batch: int = 1, seq_len: int | None = None, dtype: str = "bf16",
            example_inputs: tuple | None = None, leaf_modules: tuple[str, ...] = (),
            trust_model_code: bool = False) -> Graph:
    """Capture a model (preset name, config.json path, ``pkg.module:factory`` or nn.Module); a factory
    reference is imported and run only with `trust_model_code=True`.

    Graphs of named models are cached in memory per (model, batch, seq_len, dtype), and on disk
    (see `planner.graph_cache`) so that a later process does not even import torch.

    >>> capture("gpt2", seq_len=128).layers[1].name
    'transformer.h.0'
    """
    key = (model, batch, seq_len, dtype, tuple(leaf_modules)) if isinstance(model, str) else None
    if key is not None and key in _CACHE:
        return _CACHE[key]
    identity = graph_cache.model_identity(model) if key is not None and not leaf_modules else None
    disk_key = graph_cache.cache_key(identity, batch, seq_len, dtype) if identity else None
    graph = graph_cache.load(disk_key) if disk_key else None
    if graph is None:
        from planner.model_source import resolve

        source = resolve(model, batch=batch, seq_len=seq_len, dtype=dtype, example_inputs=example_inputs,
                         trust_model_code=trust_model_code)
        graph = _capture_source(source, leaf_modules)
        if disk_key:
            graph_cache.store(disk_key, graph)
    if key is not None:
        _remember(key, graph)
    return graph


def capture_recorded(record: dict, *, seq_len: int | None = None, dtype: str = "bf16",
                     trust_model_code: bool = False) -> Graph:
    """Capture the model a plan records (`ir.plan.ModelSource`, JSON form) from the values it holds, never
    from the file or code it names (a module reference runs only with `trust_model_code`)."""
    from planner.model_source import check_record, from_record, record_identity

    check_record(record)  # before a cached graph is used for it
    identity = record_identity(record)
    key = ("record", identity, seq_len, dtype) if identity else None
    if key is not None and key in _CACHE:
        return _CACHE[key]
    disk_key = graph_cache.cache_key(identity, 1, seq_len, dtype) if identity else None
    graph = graph_cache.load(disk_key) if disk_key else None
    if graph is None:
        graph = _capture_source(from_record(record, seq_len=seq_len, dtype=dtype, trust_model_code=trust_model_code))
        if disk_key:
            graph_cache.store(disk_key, graph)
    if key is not None:
        _remember(key, graph)
    return graph


def _capture_source(source, leaf_modules: tuple[str, ...] = ()) -> Graph:
    from ir.capture import capture_module

    return capture_module(source.module, source.args, source.kwargs, name=source.name, seq_len=source.seq_len,
                          causal=source.causal, config=source.config, leaf_modules=tuple(leaf_modules))


def _remember(key: tuple, graph: Graph) -> None:
    if len(_CACHE) >= _CACHE_LIMIT:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = graph


def _layer_rows(graph: Graph, costs) -> list[dict]:
    rows = []
    for layer, cost in zip(graph.layers, costs.layers):
        rows.append({
            "index": layer.index, "name": layer.name, "kind": layer.kind,
            "signature": layer.signature, "is_moe": layer.is_moe, "ops": layer.op_end - layer.op_start,
            "param_count": layer.param_count, "param_bytes": layer.param_bytes,
            "flops": cost.flops, "weight_bytes_read": cost.weight_bytes_read,
            "activation_bytes": cost.saved_activation_bytes if costs.phase == "train"
            else cost.activation_bytes_written,
            "kv_bytes_per_token": cost.kv_bytes_per_token,
        })
    return rows


def inspect(model, *, batch: int = 1, seq_len: int | None = None, phase: str = "prefill",
            context_len: int | None = None, dtype: str = "bf16",
            example_inputs: tuple | None = None, trust_model_code: bool = False) -> dict:
    """Per-layer parameters, FLOPs, activation and KV bytes of a model in one phase.

    Returns the same dict as ``planner inspect --json``. `activation_bytes` is what backward keeps
    for `train`, and the bytes the layer writes for `prefill`/`decode`.
    """
    if phase not in PHASES:
        raise UserError(f"unknown phase '{phase}'; use one of {', '.join(PHASES)}")
    if not isinstance(model, str):
        graph = capture(model, example_inputs=example_inputs, seq_len=seq_len)
    else:
        graph = capture(model, batch=batch, seq_len=seq_len, dtype=dtype, trust_model_code=trust_model_code)
    costs = phase_costs(graph, phase, batch=batch, seq_len=seq_len, context_len=context_len)
    rows = _layer_rows(graph, costs)
    return {
        "model": graph.model, "architecture": graph.architecture,
        "capture_method": graph.capture_method, "dtype": graph.dtype, "phase": phase,
        "batch": batch, "seq_len": costs.seq_len if graph.token_kind == "sequence" else None,
        "context_len": costs.context_len if phase == "decode" else None, "tokens": costs.tokens,
        "config": dict(graph.config), "layers": rows,
        "distinct_blocks": len({r["signature"] for r in rows if r["kind"] == "block"}),
        "num_ops": len(graph.ops),
        "totals": {
            "param_count": graph.param_count, "param_bytes": graph.param_bytes,
            "flops": int(costs.total("flops")),
            "weight_bytes_read": int(costs.total("weight_bytes_read")),
            "activation_bytes": int(sum(r["activation_bytes"] for r in rows)),
            "kv_bytes_per_token": int(costs.total("kv_bytes_per_token")),
        },
    }


def estimate(model, cluster=None, phase: str = "decode", *, seq_len: int | None = None,
             dtype: str = "bf16", trust_model_code: bool = False, **options) -> dict:
    """Predicted time, throughput, memory and energy of one configuration (``planner estimate``).

    Options are named like the CLI flags with underscores (tp, pp, dp, ep, batch, input_len,
    output_len, microbatch_size, recompute, sequence_parallel, zero_stage, weight_dtype, kv_dtype,
    qps). Returns the same dict as ``--json``.

    >>> r = estimate("tiny-llama", "1xcpu", "decode", batch=4, input_len=64)
    >>> r["phase"], r["parallel"]["tp"], r["tpot_s"] > 0
    ('decode', 1, True)
    """
    from cost_models.cluster import parse_cluster
    from cost_models.estimator import estimate_graph
    from cost_models.parallel_config import Options
    from planner.input_bounds import COUNT_LIMITS, check_counts, check_numbers

    known = set(Options.__dataclass_fields__)
    unknown = sorted(set(options) - known)
    if unknown:
        raise UserError(f"unknown estimate option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    check_counts(seq_len=seq_len, **{k: v for k, v in options.items() if k in COUNT_LIMITS})
    check_numbers(qps=options.get("qps"))
    cluster_spec = parse_cluster(cluster)
    input_len = options.get("input_len")
    graph_dtype = "bf16" if dtype == "fp8" else dtype
    graph = capture(model, seq_len=seq_len or input_len, dtype=graph_dtype, trust_model_code=trust_model_code)
    return estimate_graph(graph, cluster_spec, phase, Options(dtype=dtype, **options))
