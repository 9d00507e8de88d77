"""The same graph costed for prefill, decode and training."""

from __future__ import annotations

import pytest

from ir.errors import UserError
from ir.phases import expected_experts_touched, phase_costs


def test_decode_kv_cache_traffic_llama3_8b(graph_of):
    graph = graph_of("llama-3-8b", seq_len=64)
    costs = phase_costs(graph, "decode", batch=4, context_len=1000)
    per_token = 32 * 2 * 8 * 128 * 2  # layers x (K, V) x kv heads x head dim x bf16 bytes
    assert costs.total("kv_bytes_per_token") == per_token
    assert costs.total("kv_read_bytes") == 4 * 999 * per_token
    assert costs.total("kv_write_bytes") == 4 * per_token
    assert costs.tokens == 4


def test_prefill_scales_with_tokens_and_attention_quadratically(graph_of):
    graph = graph_of("llama-3-8b", seq_len=64)
    a = phase_costs(graph, "prefill", batch=1, seq_len=1024)
    b = phase_costs(graph, "prefill", batch=2, seq_len=1024)
    c = phase_costs(graph, "prefill", batch=1, seq_len=2048)
    assert b.total("gemm_flops") == pytest.approx(2 * a.total("gemm_flops"), rel=1e-6)
    assert c.total("attention_flops") == pytest.approx(4 * a.total("attention_flops"), rel=1e-2)
    # weights are read once per forward whatever the batch (embedding rows aside)
    head_and_blocks = slice(1, None)
    assert [x.weight_bytes_read for x in a.layers[head_and_blocks]] == [
        x.weight_bytes_read for x in b.layers[head_and_blocks]]


def test_prefill_matches_a_direct_capture_at_that_shape(graph_of):
    small = graph_of("tiny-llama", batch=1, seq_len=32)
    direct = graph_of("tiny-llama", batch=3, seq_len=96)
    costs = phase_costs(small, "prefill", batch=3, seq_len=96)
    assert costs.total("gemm_flops") == sum(op.flops for op in direct.ops
                                            if op.kind in ("linear", "matmul", "grouped_matmul"))
    assert costs.total("attention_flops") == sum(op.flops for op in direct.ops if op.kind == "attention")


def test_train_is_forward_plus_backward(graph_of):
    graph = graph_of("llama-2-7b", seq_len=64)
    fwd = phase_costs(graph, "prefill", batch=2, seq_len=512)
    train = phase_costs(graph, "train", batch=2, seq_len=512)
    assert train.total("gemm_flops") == 3 * fwd.total("gemm_flops")
    assert train.total("attention_flops") == pytest.approx(3.5 * fwd.total("attention_flops"), rel=1e-6)
    assert train.total("saved_activation_bytes") > 0 == fwd.total("saved_activation_bytes")
    # stashed activations grow linearly with tokens
    train2 = phase_costs(graph, "train", batch=4, seq_len=512)
    assert train2.total("saved_activation_bytes") == pytest.approx(
        2 * train.total("saved_activation_bytes"), rel=1e-6)


def test_moe_decode_touches_few_experts_prefill_all(graph_of):
    graph = graph_of("mixtral-8x7b", seq_len=64)
    decode = phase_costs(graph, "decode", batch=1, context_len=128)
    prefill = phase_costs(graph, "prefill", batch=1, seq_len=4096)
    assert decode.layers[1].experts_touched == pytest.approx(2.0)
    assert prefill.layers[1].experts_touched == pytest.approx(8.0)
    assert prefill.layers[1].weight_bytes_read > 3 * decode.layers[1].weight_bytes_read
    assert expected_experts_touched(128, 8, 1) == pytest.approx(8.0)


def test_identical_layers_share_one_evaluation(graph_of):
    graph = graph_of("llama-3.1-70b", seq_len=64)
    costs = phase_costs(graph, "decode", batch=8, context_len=4096)
    blocks = costs.layers[1:-1]
    assert len({(c.flops, c.weight_bytes_read) for c in blocks}) == 1
    assert [c.layer for c in costs.layers] == list(range(len(graph.layers)))


def test_bad_phase_and_shapes(graph_of):
    graph = graph_of("tiny-llama", seq_len=16)
    with pytest.raises(UserError, match="unknown phase"):
        phase_costs(graph, "serve")
    with pytest.raises(UserError, match="batch"):
        phase_costs(graph, "prefill", batch=0)
