"""Canonical op kinds and their FLOP / byte counts from tensor shapes.

Both capture paths (torch.fx module-level nodes and torch.export aten nodes) reduce an op to a
short name ("linear", "conv2d", "scaled_dot_product_attention", "add", ...) and its input and
output `TensorSpec`s; this module maps the name to a canonical kind and counts its work.

Conventions (documented because every later number rests on them):
- A multiply-add is 2 FLOPs. Linear/matmul: 2*M*N*K; convolution: 2*out_numel*(C_in/groups)*prod(kernel).
- Attention counts the two batched products QK^T and PV only; the causal half is NOT computed
  (flash attention skips masked blocks), so causal attention counts the visible lower triangle.
  Softmax and scaling are not counted (they are O(s^2) element ops, < 2% for head_dim >= 64).
- Recurrent scans (`ir.recurrent_kernels`): the selective scan counts 9 FLOPs per (token, channel,
  state element) for discretising, updating and reading the state, plus 2 per (token, channel) for
  the D skip and the gate (the count of mamba_ssm's reference scan); the chunked gated delta rule
  counts the matmuls of the chunked form per token and value head: C (5 dk + 3 dv) + 6 dk dv with
  C = 64 (Yang et al. 2024, "Gated Delta Networks", Sec. 3; FLA `chunk_gated_delta_rule`).
- Element-wise ops and norms count 1 FLOP per output element per primitive (norms: 5 per element).
- View-like ops (reshape, transpose, expand, slicing, aliasing) move no bytes and do no work.
- Bytes read are the input tensors' bytes (parameters included); bytes written the outputs'.
  An embedding reads only the gathered rows of its table.
"""

from __future__ import annotations

import math

from ir.graph import TensorSpec

KINDS = (
    "linear", "matmul", "grouped_matmul", "conv", "embedding", "attention", "scan", "norm", "softmax",
    "elementwise", "reduction", "routing", "copy", "view", "other",
)

_VIEW = {
    "view", "reshape", "_unsafe_view", "transpose", "permute", "unsqueeze", "squeeze", "expand",
    "expand_as", "slice", "select", "alias", "t", "getitem", "detach", "_assert_tensor_metadata",
    "unflatten", "flatten", "split", "chunk", "unbind", "narrow", "size", "dim", "lift_fresh_copy",
    "view_as", "split_with_sizes", "movedim", "as_strided", "_assert_scalar", "sym_size",
    "sym_constrain_range_for_size", "dropout", "identity", "Identity", "Dropout", "type_as",
}
_COPY = {
    "contiguous", "clone", "cat", "stack", "index", "index_select", "gather", "scatter", "to",
    "_to_copy", "copy", "copy_", "index_put", "index_put_", "pad", "constant_pad_nd", "repeat",
    "new_zeros", "new_ones", "zeros", "ones", "full", "empty", "empty_like", "zeros_like",
    "ones_like", "arange", "new_empty", "scatter_add", "index_add", "masked_scatter", "float",
    "half", "bfloat16", "type", "roll", "flip", "tril", "triu", "repeat_interleave", "fill_",
}
_NORM = {
    "layer_norm", "native_layer_norm", "group_norm", "native_group_norm", "batch_norm",
    "_native_batch_norm_legit_no_training", "_native_batch_norm_legit_functional",
    "_native_batch_norm_legit", "native_batch_norm", "rms_norm", "_fused_rms_norm", "instance_norm",
    "LayerNorm", "RMSNorm", "GroupNorm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d",
}
_REDUCTION = {
    "mean", "sum", "amax", "amin", "max", "min", "var", "std", "norm", "prod", "any", "all",
    "argmax", "argmin", "logsumexp", "adaptive_avg_pool2d", "avg_pool2d", "max_pool2d",
    "max_pool2d_with_indices", "AdaptiveAvgPool2d", "MaxPool2d", "AvgPool2d", "_adaptive_avg_pool2d",
    "adaptive_avg_pool1d", "avg_pool1d",
}
_ROUTING = {"topk", "sort", "argsort", "histc", "cumsum", "bincount", "one_hot", "nonzero", "diff"}
_SOFTMAX = {"softmax", "_softmax", "log_softmax", "_log_softmax", "Softmax"}
_LINEAR = {"linear", "addmm", "Linear"}
_MATMUL = {"mm", "bmm", "matmul", "baddbmm", "einsum"}
_GROUPED = {"grouped_mm_fallback", "_grouped_mm", "grouped_mm"}
_CONV = {"convolution", "conv1d", "conv2d", "conv3d", "_convolution", "Conv1d", "Conv2d", "Conv3d"}
_EMBEDDING = {"embedding", "Embedding"}
_ATTENTION = {
    "scaled_dot_product_attention", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_cudnn_attention", "flex_attention", "eager_attention",
}
_SCAN = {"selective_scan", "chunk_gated_delta_rule"}
GDN_CHUNK = 64
_NORM_FLOPS_PER_ELEMENT = 5  # mean, subtract, square, rsqrt-scale, affine


def classify(name: str) -> str:
    """Canonical kind of a short op name.

    >>> classify("linear"), classify("scaled_dot_product_attention"), classify("transpose")
    ('linear', 'attention', 'view')
    """
    for kind, names in (
        ("view", _VIEW), ("copy", _COPY), ("linear", _LINEAR), ("matmul", _MATMUL),
        ("grouped_matmul", _GROUPED), ("conv", _CONV), ("embedding", _EMBEDDING),
        ("attention", _ATTENTION), ("norm", _NORM), ("reduction", _REDUCTION),
        ("routing", _ROUTING), ("softmax", _SOFTMAX), ("scan", _SCAN),
    ):
        if name in names:
            return kind
    return "elementwise"


def _matmul_flops(name: str, inputs: tuple[TensorSpec, ...], out: TensorSpec) -> int:
    if name == "einsum" or not inputs:
        return 2 * out.numel  # einsum contraction size unknown from shapes alone; counted minimally
    if name == "baddbmm" and len(inputs) >= 3:
        inputs = inputs[1:]
    k = inputs[0].shape[-1] if inputs[0].shape else 1
    return 2 * out.numel * k


def _conv_flops(inputs: tuple[TensorSpec, ...], out: TensorSpec) -> int:
    weight = inputs[1] if len(inputs) > 1 else None
    if weight is None or len(weight.shape) < 2:
        return 2 * out.numel
    per_output = weight.shape[1] * math.prod(weight.shape[2:])  # (C_in / groups) * prod(kernel)
    return 2 * out.numel * per_output


def _scan_flops(name: str, inputs: tuple[TensorSpec, ...]) -> int:
    if name == "selective_scan" and len(inputs) >= 3:
        (b, d, length), n = inputs[0].shape, inputs[2].shape[-1]
        return 9 * b * d * length * n + 2 * b * d * length
    if name == "chunk_gated_delta_rule" and len(inputs) >= 3:
        dk = inputs[1].shape[-1]
        b, length, hv, dv = inputs[2].shape
        return b * length * hv * (GDN_CHUNK * (5 * dk + 3 * dv) + 6 * dk * dv)
    return 0


def op_flops(kind: str, name: str, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> int:
    """FLOPs of one op at its captured shapes (attention is counted from its AttentionSpec)."""
    if not outputs:
        return 0
    out = outputs[0]
    if kind == "linear":
        x = inputs[1] if name == "addmm" and len(inputs) >= 3 else inputs[0] if inputs else None
        k = x.shape[-1] if x is not None and x.shape else 1  # addmm(bias, x, w); linear(x, w, bias)
        bias = out.numel if name == "addmm" or len(inputs) >= 3 else 0
        return 2 * out.numel * k + bias
    if kind in ("matmul", "grouped_matmul"):
        return _matmul_flops(name, inputs, out)
    if kind == "conv":
        return _conv_flops(inputs, out)
    if kind == "scan":
        return _scan_flops(name, inputs)
    if kind == "norm":
        return _NORM_FLOPS_PER_ELEMENT * out.numel
    if kind == "reduction":
        return inputs[0].numel if inputs else out.numel
    if kind in ("elementwise", "softmax", "routing"):
        return out.numel * (5 if kind == "softmax" else 1)
    return 0


def op_bytes(kind: str, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> tuple[int, int]:
    """(bytes read, bytes written) of one op; an embedding reads only the rows it gathers."""
    if kind == "view":
        return 0, 0
    written = sum(o.nbytes for o in outputs)
    if kind == "embedding":
        indices = inputs[1] if len(inputs) > 1 else None
        return written + (indices.nbytes if indices else 0), written
    return sum(i.nbytes for i in inputs), written
