"""Stable text form of a Graph: a header, one line per layer and (optionally) one per op.

Same graph, same text: nothing depends on dict order or memory addresses. Repeated blocks can be
folded to their first occurrence (`fold_repeats=True`).
"""

from __future__ import annotations

from ir.graph import Graph, OpNode, TensorSpec

_DTYPE_SHORT = {"bfloat16": "bf16", "float16": "f16", "float32": "f32", "float64": "f64",
                "int64": "i64", "int32": "i32", "bool": "i1", "int8": "i8", "uint8": "u8"}


def format_spec(spec: TensorSpec) -> str:
    """``bf16[1,16,64]``"""
    return f"{_DTYPE_SHORT.get(spec.dtype, spec.dtype)}[{','.join(map(str, spec.shape))}]"


def format_op(op: OpNode) -> str:
    outs = ", ".join(format_spec(s) for s in op.outputs)
    args = ", ".join(f"%{i}" for i in op.inputs)
    extra = []
    if op.flops:
        extra.append(f"flops={op.flops}")
    if op.params:
        extra.append(f"params={','.join(op.params)}")
    if op.scaling != "tokens":
        extra.append(f"scaling={op.scaling}")
    if op.attention is not None:
        a = op.attention
        window = (f"/chunk{a.window}" if a.chunked else f"/swa{a.window}") if a.window else ""
        latent = f"/mla{a.latent_dim}+{a.rope_dim}" if a.latent_dim else ""
        extra.append(f"attn=h{a.heads}/kv{a.kv_heads}/d{a.head_dim}{'/causal' if a.causal else ''}{window}{latent}")
    if op.experts is not None:
        extra.append(f"experts={op.experts.num_experts}/top{op.experts.top_k}")
    tail = f"  # {' '.join(extra)}" if extra else ""
    return f"  %{op.id} = {op.kind}.{op.target}({args}) -> {outs} @{op.module_path or '<root>'}{tail}"


def format_graph(graph: Graph, *, ops: bool = True, fold_repeats: bool = True) -> str:
    """The graph as text; with `fold_repeats`, a block identical to an earlier one prints one line.

    >>> import planner
    >>> print(format_graph(planner.capture("tiny-llama", seq_len=8), ops=False).splitlines()[0])
    graph tiny-llama (LlamaForCausalLM via torch.export) batch=1 seq_len=8 dtype=bfloat16 params=250432 ops=301 layers=6
    """
    lines = [
        f"graph {graph.model} ({graph.architecture} via {graph.capture_method}) batch={graph.batch} "
        f"seq_len={graph.seq_len} dtype={graph.dtype} params={graph.param_count} "
        f"ops={len(graph.ops)} layers={len(graph.layers)}"
    ]
    first_with: dict[str, int] = {}
    for layer in graph.layers:
        repeat = layer.signature in first_with
        lines.append(
            f"layer {layer.index} {layer.kind} {layer.name} sig={layer.signature} "
            f"ops=[{layer.op_start},{layer.op_end}) params={layer.param_count} flops={layer.flops}"
            f"{' moe' if layer.is_moe else ''}"
            + (f" cache={';'.join(c.describe() for c in layer.caches)}" if layer.caches else "")
            + (f" stored_bytes={layer.stored_param_bytes}" if layer.stored_param_bytes != layer.param_bytes else "")
            + (f" same-as={first_with[layer.signature]}" if repeat else "")
        )
        first_with.setdefault(layer.signature, layer.index)
        if ops and not (repeat and fold_repeats):
            lines.extend(format_op(op) for op in graph.layer_ops(layer))
    return "\n".join(lines) + "\n"
