"""Eager attention (scores = q @ k^T, masking, soft-capping, sinks, softmax, @ v) folded into one
attention op, as flash-style kernels and serving engines run it.

Models whose attention has no fused-kernel path in transformers (Gemma-2's logit soft-capping,
gpt-oss's attention sinks, BLOOM's ALiBi through `baddbmm`) trace as matmul - element-wise ops -
softmax - matmul. `fuse_eager_attention` finds each softmax over [.., q, kv] scores, walks back to
the QK^T product and forward to the PV product, and replaces the product pair and every op computed
from the scores in between with one ``eager_attention`` op on (q, k, v) in [batch, heads, seq, dim]
layout. The graph then costs it as attention (quadratic in the sequence, causal pairs only, K/V
cached) instead of as token-linear matmuls. Ops feeding the scores from outside (masks, ALiBi
biases, sink logits) stay as they are.
"""

from __future__ import annotations

from dataclasses import replace

from ir.graph import TensorSpec
from ir.op_costs import classify
from ir.raw import RawOp

_BETWEEN = {"elementwise", "view", "copy", "reduction"}
_MAX_HOPS = 12


def _consumers(ops: list[RawOp]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for i, raw in enumerate(ops):
        for p in raw.input_producers:
            if p is not None:
                out.setdefault(p, []).append(i)
    return out


def _scores_product(ops: list[RawOp], softmax: int) -> int | None:
    """The QK^T matmul the softmax's scores come from (first inputs, through element-wise ops)."""
    index = ops[softmax].input_producers[0] if ops[softmax].input_producers else None
    for _ in range(_MAX_HOPS):
        if index is None:
            return None
        kind = classify(ops[index].short_name)
        if kind == "matmul":
            return index
        if kind not in _BETWEEN or not ops[index].input_producers:
            return None
        index = ops[index].input_producers[0]
    return None


def _value_product(ops: list[RawOp], consumers: dict[int, list[int]], softmax: int) -> int | None:
    """The PV matmul that takes the probabilities as its first operand."""
    index = softmax
    for _ in range(_MAX_HOPS):
        following = consumers.get(index, [])
        if not following:
            return None
        nxt = following[0]
        kind = classify(ops[nxt].short_name)
        if kind == "matmul":
            return nxt if ops[nxt].input_producers and ops[nxt].input_producers[0] == index else None
        if kind not in _BETWEEN:
            return None
        index = nxt
    return None


def _four_d(spec: TensorSpec, batch: int, transposed: bool = False) -> TensorSpec | None:
    shape = spec.shape
    if len(shape) == 3 and batch > 0 and shape[0] % batch == 0:  # [batch x heads, seq, dim] (BLOOM)
        shape = (batch, shape[0] // batch, *shape[1:])
    if len(shape) != 4:
        return None
    if transposed:
        shape = (*shape[:2], shape[3], shape[2])
    return TensorSpec(shape, spec.dtype)


def _fused_op(ops: list[RawOp], qk: int, pv: int, batch: int) -> RawOp | None:
    scores = ops[qk]
    offset = 1 if scores.short_name == "baddbmm" else 0  # baddbmm(bias, q, k^T)
    if len(scores.input_specs) < offset + 2 or len(ops[pv].input_specs) < 2:
        return None
    q = _four_d(scores.input_specs[offset], batch)
    k = _four_d(scores.input_specs[offset + 1], batch, transposed=True)
    v = _four_d(ops[pv].input_specs[1], batch)
    if q is None or k is None or v is None or q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        return None
    k_producer = scores.input_producers[offset + 1]
    if k_producer is not None and classify(ops[k_producer].short_name) == "view" and ops[k_producer].input_producers:
        k_producer = ops[k_producer].input_producers[0]  # the key before its transpose
    return RawOp(
        short_name="eager_attention", target=f"fused:{scores.short_name}-softmax-{ops[pv].short_name}",
        input_specs=(q, k, v), input_producers=(scores.input_producers[offset], k_producer,
                                                ops[pv].input_producers[1]),
        input_params=(None, None, None), outputs=ops[pv].outputs, module_path=ops[pv].module_path)


def fuse_eager_attention(ops: list[RawOp], batch: int) -> list[RawOp]:
    """`ops` with every eager attention folded into one ``eager_attention`` op (module docstring).

    `batch` is the capture batch (to split BLOOM's [batch x heads] axis).
    """
    consumers = _consumers(ops)
    fused: dict[int, RawOp] = {}
    removed: set[int] = set()
    for i, raw in enumerate(ops):
        if classify(raw.short_name) != "softmax" or not raw.outputs or len(raw.outputs[0].shape) < 3:
            continue
        qk, pv = _scores_product(ops, i), _value_product(ops, consumers, i)
        op = _fused_op(ops, qk, pv, batch) if qk is not None and pv is not None else None
        if op is None:
            continue
        region = {qk}
        for j in range(qk + 1, pv):
            if any(p in region for p in ops[j].input_producers):
                region.add(j)
        removed |= region
        fused[pv] = op
    if not fused:
        return ops
    new_index: dict[int, int] = {}
    out: list[RawOp] = []
    for i, raw in enumerate(ops):
        if i in removed:
            continue
        new_index[i] = len(out)
        raw = fused.get(i, raw)
        out.append(replace(raw, input_producers=tuple(new_index.get(p) if p is not None else None
                                                      for p in raw.input_producers)))
    return out
