"""Recurrent scans as single ops during capture: the selective scan of Mamba-style state-space
layers and the chunked gated delta rule of linear-attention layers (Qwen3-Next).

The reference PyTorch paths in transformers loop over tokens (Mamba: one iteration per token) or
chunks, so tracing them unrolls the loop: the graph grows with the sequence length and capture of
Mamba-130m at 2048 tokens took 110 s. Deployments run these as one fused kernel (mamba_ssm's
`selective_scan_fn`, FLA's `chunk_gated_delta_rule`), the kernels transformers itself swaps in
through its hub-kernel hooks. Capture does the same: while a model is traced,
`substituted(model)` points the transformers functions of the model's own modules at the
`aot_planner::` ops below (one op each, with a fake kernel for meta tensors and a reference
implementation for real ones) and restores them afterwards. `ir.op_costs` counts their FLOPs.
"""

from __future__ import annotations

import contextlib
import sys

import torch
import torch.nn.functional as F

from ir.op_costs import GDN_CHUNK  # chunk size of transformers' and FLA's chunked gated delta rule


@torch.library.custom_op("aot_planner::selective_scan", mutates_args=())
def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: torch.Tensor | None, z: torch.Tensor | None, delta_bias: torch.Tensor | None,
                   delta_softplus: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Selective scan (Gu & Dao 2023, Alg. 2): u, delta, z [b, d, L]; A [d, n]; B, C [b, n, L].
    Returns the output [b, d, L] (float32) and the last state [b, d, n]; reference, token by token."""
    delta = delta.float() + (delta_bias.float()[..., None] if delta_bias is not None else 0.0)
    delta = F.softplus(delta) if delta_softplus else delta
    state = u.new_zeros(u.shape[0], u.shape[1], A.shape[-1], dtype=torch.float32)
    outputs = []
    for t in range(u.shape[-1]):
        decay = torch.exp(A.float() * delta[:, :, t, None])
        state = decay * state + delta[:, :, t, None] * B[:, None, :, t].float() * u[:, :, t, None].float()
        outputs.append((state * C[:, None, :, t].float()).sum(-1))
    out = torch.stack(outputs, dim=-1)
    if D is not None:
        out = out + u.float() * D.float()[None, :, None]
    if z is not None:
        out = out * F.silu(z.float())
    return out, state


@selective_scan.register_fake
def _selective_scan_fake(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    return u.new_empty(u.shape, dtype=torch.float32), u.new_empty((u.shape[0], u.shape[1], A.shape[-1]),
                                                                   dtype=torch.float32)


@torch.library.custom_op("aot_planner::chunk_gated_delta_rule", mutates_args=())
def chunk_gated_delta_rule(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, g: torch.Tensor,
                           beta: torch.Tensor, initial_state: torch.Tensor | None,
                           use_qk_l2norm: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Gated delta rule (Yang et al. 2024): q, k [b, L, hk, dk]; v [b, L, hv, dv]; g, beta [b, L, hv].
    Returns the output [b, L, hv, dv] and the final state [b, hv, dk, dv]; reference, token by token
    (the chunked kernel computes the same values)."""
    hv = value.shape[2]
    q, k = (x.repeat_interleave(hv // x.shape[2], dim=2).transpose(1, 2).float() for x in (query, key))
    v, b, decay = (x.transpose(1, 2).float() for x in (value, beta, g))
    if use_qk_l2norm:
        q, k = F.normalize(q, dim=-1, eps=1e-6), F.normalize(k, dim=-1, eps=1e-6)
    q = q / q.shape[-1] ** 0.5
    state = (initial_state.float() if initial_state is not None
             else v.new_zeros(v.shape[0], hv, k.shape[-1], v.shape[-1]))
    outputs = []
    for t in range(v.shape[2]):
        state = state * decay[:, :, t].exp()[..., None, None]
        remembered = (state * k[:, :, t, :, None]).sum(-2)
        update = (v[:, :, t] - remembered) * b[:, :, t, None]
        state = state + k[:, :, t, :, None] * update[:, :, None, :]
        outputs.append((state * q[:, :, t, :, None]).sum(-2))
    return torch.stack(outputs, dim=1).to(query.dtype), state


@chunk_gated_delta_rule.register_fake
def _chunk_gated_delta_rule_fake(query, key, value, g, beta, initial_state, use_qk_l2norm):
    b, length, hv, dv = value.shape
    return value.new_empty((b, length, hv, dv), dtype=query.dtype), value.new_empty(
        (b, hv, key.shape[-1], dv), dtype=torch.float32)


def _mamba_selective_scan(hidden_states, dt, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          return_last_state=False, **_):
    out, state = selective_scan(hidden_states, dt, A, B, C, D, z, delta_bias, bool(delta_softplus))
    return (out, state) if return_last_state else out


def _gated_delta_rule(query, key, value, g, beta, chunk_size=GDN_CHUNK, initial_state=None,
                      output_final_state=False, use_qk_l2norm_in_kernel=False, **_):
    out, state = chunk_gated_delta_rule(query, key, value, g, beta, initial_state, bool(use_qk_l2norm_in_kernel))
    return out, (state if output_final_state else None)


# transformers function name -> the single-op replacement with the same signature
SUBSTITUTES = {
    "mamba_selective_scan": _mamba_selective_scan,  # Mamba, Falcon-Mamba, Jamba, Zamba
    "torch_chunk_gated_delta_rule": _gated_delta_rule,  # Qwen3-Next and its gated-delta-net kin
}


@contextlib.contextmanager
def substituted(model: torch.nn.Module):
    """Within the block, the model's transformers modules call the single-op scans (restored after)."""
    namespaces = {type(m).__module__ for m in model.modules()}
    saved = []
    try:
        for name in sorted(namespaces):
            namespace = sys.modules.get(name)
            if namespace is None or not name.startswith("transformers."):
                continue
            for function, replacement in SUBSTITUTES.items():
                if function in vars(namespace):
                    saved.append((namespace, function, vars(namespace)[function]))
                    setattr(namespace, function, replacement)
        yield [f"{ns.__name__}.{fn}" for ns, fn, _ in saved]
    finally:
        for namespace, function, original in reversed(saved):
            setattr(namespace, function, original)
