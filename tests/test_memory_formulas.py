"""Memory formulas against values derived by hand."""

from __future__ import annotations

import pytest

import planner
from cost_models.memory import activation_bytes_per_layer, kv_cache_bytes_per_token, training_state_bytes


def test_kv_cache_per_token_by_hand():
    # llama-3.1-70b: 80 layers x (K and V) x 8 KV heads x 128 dims x 2 bytes = 327,680 bytes
    assert kv_cache_bytes_per_token(80, 8, 128, 2) == 327_680
    # llama-2-7b (no GQA): 32 x 2 x 32 x 128 x 2 = 524,288 bytes (0.5 MiB per token)
    assert kv_cache_bytes_per_token(32, 32, 128) == 524_288
    # the captured graph agrees
    graph = planner.capture("llama-3.1-70b", seq_len=64)
    from ir.phases import phase_costs

    assert phase_costs(graph, "decode", batch=1, context_len=10).total("kv_bytes_per_token") == 327_680


def test_adam_states_by_hand():
    # 7e9 params, no sharding: 2 (bf16 weights) + 2 (bf16 grads) + 12 (fp32 master, m, v) = 16 B/param
    s = training_state_bytes(7e9, dp=1, zero_stage=0)
    assert (s.weights, s.gradients, s.optimizer) == (14e9, 14e9, 84e9)
    z1 = training_state_bytes(7e9, dp=8, zero_stage=1)
    assert (z1.weights, z1.gradients, z1.optimizer) == (14e9, 14e9, 10.5e9)
    z2 = training_state_bytes(7e9, dp=8, zero_stage=2)
    assert z2.gradients == 1.75e9
    z3 = training_state_bytes(7e9, dp=8, zero_stage=3)
    assert z3.total == 16 * 7e9 / 8


def test_activations_korthikanti_gpt3_by_hand():
    # GPT-3 175B layer (h=12288, a=96), s=2048, b=1, 16-bit: Korthikanti et al. Table 2 formulas
    s, b, h, a = 2048, 1, 12288, 96
    sbh = s * b * h
    assert activation_bytes_per_layer(s, b, h, a) == sbh * (34 + 5 * a * s / h)  # 4.58 GB per layer
    assert activation_bytes_per_layer(s, b, h, a, t=8) == pytest.approx(sbh * (10 + 24 / 8 + 5 * a * s / (h * 8)))
    assert activation_bytes_per_layer(s, b, h, a, t=8, sequence_parallel=True) == pytest.approx(
        sbh * (34 / 8 + 5 * a * s / (h * 8)))
    assert activation_bytes_per_layer(s, b, h, a, t=8, sequence_parallel=True, recompute="selective") == \
        pytest.approx(sbh * 34 / 8)
    assert activation_bytes_per_layer(s, b, h, a, recompute="full") == 2 * sbh
    assert activation_bytes_per_layer(s, b, h, a, t=8, sequence_parallel=True, recompute="full") == 2 * sbh / 8


def test_activations_gated_gqa_flash_no_dropout_by_hand():
    # llama-2-7b-like: h=4096, f=11008 gated, a=32, kv=32, s=4096, b=1, flash, no dropout:
    # Q,K,V,proj input 8sbh + gated MLP 8sbf + QKV/MLP inputs and 2 norms 8sbh + lse 4sba
    s, b, h, a, f = 4096, 1, 4096, 32, 11008
    expected = 8 * s * b * h + 8 * s * b * f + 8 * s * b * h + 4 * s * b * a
    got = activation_bytes_per_layer(s, b, h, a, ffn=f, gated=True, flash=True, dropout=False)
    assert got == expected
    # GQA with 8 KV heads keeps K and V 4x smaller
    gqa = activation_bytes_per_layer(s, b, h, a, ffn=f, gated=True, kv_heads=8, flash=True, dropout=False)
    assert expected - gqa == 2 * (2 * s * b * h) * (1 - 8 / 32)
