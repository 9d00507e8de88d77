"""Bytes of each parameter as the checkpoint stores it, from a transformers `quantization_config`.

Models are captured in one dtype (bf16 on meta), but some publish their weights narrower, tensor
by tensor; what a deployment loads is that. Supported published formats:

- ``mxfp4`` (gpt-oss; OCP Microscaling spec v1.0): 4-bit E2M1 elements with one 8-bit E8M0 scale
  per block of 32, 4.25 bits per weight; applied to the weights of linear and expert GEMMs except
  the modules listed in ``modules_to_not_convert`` (gpt-oss: attention, router, embedding, head),
  so in gpt-oss only the MoE expert weights; biases stay in the captured dtype.
- ``fp8`` with ``weight_block_size`` [bo, bi] (DeepSeek-V3/R1, Kimi K2, Qwen3 FP8): 1-byte E4M3
  weights plus one float32 scale per bo x bi block, for the weights of linear and expert GEMMs
  except routers (``gate``/``router``), the LM head and ``modules_to_not_convert``.

Other methods (GPTQ, AWQ, bitsandbytes, ...) are not modelled: their weights count at the captured
dtype (`stored_bytes` returns None for them), and `--weight-dtype` sets one width for all.
"""

from __future__ import annotations

import fnmatch
import math

from ir.graph import TensorSpec

_GEMM_KINDS = ("linear", "matmul", "grouped_matmul")
_NEVER_QUANTIZED = ("gate", "router", "lm_head", "shared_expert_gate")
MXFP4_BITS = 4 + 8 / 32  # E2M1 elements + one E8M0 scale per 32 (OCP MX v1.0, Table 1)


def supported(quant: dict | None) -> bool:
    """Whether `quant` (a quantization_config dict) is a format modelled here."""
    return bool(quant) and (quant.get("quant_method") == "mxfp4" or (
        quant.get("quant_method") == "fp8" and bool(quant.get("weight_block_size"))))


def _excluded(name: str, quant: dict) -> bool:
    """Routers and the head stay unquantized, as do modules (or their children) the config lists."""
    module = name.rpartition(".")[0]
    if module.rpartition(".")[2] in _NEVER_QUANTIZED:
        return True
    return any(fnmatch.fnmatchcase(module, pattern) or fnmatch.fnmatchcase(module, pattern + ".*")
               for pattern in quant.get("modules_to_not_convert") or [])


def stored_bytes(quant: dict | None, name: str, kind: str, spec: TensorSpec) -> int | None:
    """Stored bytes of parameter `name` (read by an op of `kind`), or None when stored as captured.

    >>> stored_bytes({"quant_method": "mxfp4"}, "model.layers.0.mlp.experts.down_proj", "grouped_matmul",
    ...              TensorSpec((32, 2880, 2880), "bfloat16"))
    141004800
    >>> stored_bytes({"quant_method": "fp8", "weight_block_size": [128, 128]}, "l.0.q_proj.weight", "linear",
    ...              TensorSpec((256, 300), "bfloat16"))
    76824
    """
    if not supported(quant) or kind not in _GEMM_KINDS or len(spec.shape) < 2 or name.endswith("bias"):
        return None
    if _excluded(name, quant):
        return None
    if quant["quant_method"] == "mxfp4":
        return math.ceil(spec.numel * MXFP4_BITS / 8)
    rows, cols = spec.shape[-2:]
    block_rows, block_cols = quant["weight_block_size"]
    groups = math.prod(spec.shape[:-2])
    return spec.numel + groups * math.ceil(rows / block_rows) * math.ceil(cols / block_cols) * 4
