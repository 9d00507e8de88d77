"""Attention kinds in the IR: window and chunk arithmetic, eager attention folded into one op,
recurrent scans as one op, kinds recognised per layer, and the refusal when nothing tells."""

from __future__ import annotations

import textwrap

import pytest
import torch
import transformers

from ir.cache_spec import CacheSpec
from ir.capture import capture_module
from ir.graph import AttentionSpec
from ir.hf_models import build_on_meta, example_inputs
from ir.verify import verify_graph
from planner.cli import main


def _brute_pairs(q_len: int, kv_len: int, window: int, chunked: bool) -> int:
    past, total = kv_len - q_len, 0
    for p in range(past, kv_len):
        keys = range(0, p + 1)
        if window and chunked:
            keys = [k for k in keys if k // window == p // window]
        elif window:
            keys = [k for k in keys if k > p - window]
        total += len(keys)
    return total


@pytest.mark.parametrize(("window", "chunked"), [(0, False), (5, False), (4, True), (64, False)])
def test_pairs_and_keys_match_counting_every_query(window, chunked):
    for q_len, kv_len in [(1, 1), (1, 9), (7, 7), (3, 20), (13, 13), (1, 33), (10, 40)]:
        a = AttentionSpec(1, 2, 2, q_len, kv_len, 8, 8, True, window=window, chunked=chunked)
        assert a.pairs(q_len, kv_len) == _brute_pairs(q_len, kv_len, window, chunked), (q_len, kv_len)
        assert a.keys_seen(kv_len) == _brute_pairs(1, kv_len, window, chunked)


def test_cache_bytes_per_kind():
    swa = CacheSpec("a", "sliding_window", heads=8, kv_heads=2, key_dim=64, value_dim=64, window=128, shards=2)
    mla = CacheSpec("b", "multi_latent", heads=128, kv_heads=1, latent_dim=512, rope_dim=64, shards=1)
    ssm = CacheSpec("c", "state_space", state_elements=1536 * 19, shards=1536)
    assert swa.bytes_per_sequence(100, 2) == 100 * 256 * 2 and swa.bytes_per_sequence(10_000, 2) == 128 * 256 * 2
    assert swa.bytes_per_sequence(10_000, 2, tp=8) == 128 * 256  # two K/V heads: at most 2 shards
    assert mla.bytes_per_sequence(1000, 2, tp=8) == 1000 * 576 * 2  # the latent is replicated over tp
    assert ssm.bytes_per_sequence(1, 2) == ssm.bytes_per_sequence(100_000, 2) == 1536 * 19 * 2


def _capture(config, seq_len=16):
    model = build_on_meta(config)
    args, kwargs = example_inputs(model, config, 1, seq_len)
    return capture_module(model, args, kwargs, name=type(model).__name__, seq_len=seq_len, causal=True)


def _llama(implementation: str):
    config = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2)
    config._attn_implementation = implementation
    config.architectures = ["LlamaForCausalLM"]
    return config


def test_eager_attention_is_folded_into_one_op_equal_to_sdpa():
    eager, sdpa = _capture(_llama("eager")), _capture(_llama("sdpa"))
    assert verify_graph(eager) == []
    for graph in (eager, sdpa):
        assert sum(op.kind == "attention" for op in graph.ops) == 2
        assert not any(op.kind in ("matmul", "softmax") for op in graph.ops)
    a, b = ([op.attention for op in g.ops if op.attention] for g in (eager, sdpa))
    assert a == b  # same heads, K/V heads (GQA traced back through repeat_kv), dims, causal
    assert [layer.caches for layer in eager.layers] == [layer.caches for layer in sdpa.layers]


def test_gemma2_softcap_and_gpt_oss_sinks_keep_their_attention_and_windows():
    gemma = transformers.Gemma2Config(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=8)
    oss = transformers.GptOssConfig(vocab_size=128, hidden_size=64, intermediate_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=8,
                                    num_local_experts=4, num_experts_per_tok=2)
    for config in (gemma, oss):
        config.architectures = [f"{type(config).__name__.removesuffix('Config')}ForCausalLM"]
        graph = _capture(config)
        caches = [c for layer in graph.layers for c in layer.caches]
        assert [c.kind for c in caches] == ["sliding_window", "grouped_query"]
        assert caches[0].window == 8 and caches[0].sinks == (config is oss)
        windows = [op.attention.window for op in graph.ops if op.attention is not None]
        assert windows == [8, 0]
        assert graph.layers[1].signature != graph.layers[2].signature  # sliding and full costed apart


def test_partial_rotary_does_not_shrink_the_kv_heads():
    neox = transformers.GPTNeoXConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, rotary_pct=0.25)
    neox.architectures = ["GPTNeoXForCausalLM"]
    graph = _capture(neox)
    assert {(op.attention.heads, op.attention.kv_heads, op.attention.head_dim)
            for op in graph.ops if op.attention} == {(4, 4, 16)}


def test_mamba_scan_is_one_op_per_block_at_any_length():
    config = transformers.MambaConfig(vocab_size=128, hidden_size=32, state_size=4, num_hidden_layers=2)
    config.architectures = ["MambaForCausalLM"]
    short, long = _capture(config, 8), _capture(config, 64)
    assert len(short.ops) == len(long.ops)
    scans = [op for op in long.ops if op.kind == "scan"]
    assert len(scans) == 2 and scans[0].flops == 9 * 64 * 64 * 4 + 2 * 64 * 64  # 9 b L d n + 2 b L d
    assert [c.kind for layer in long.layers for c in layer.caches] == ["state_space"] * 2
    from transformers.models.mamba import modeling_mamba

    from ir.recurrent_kernels import SUBSTITUTES

    assert modeling_mamba.mamba_selective_scan is not SUBSTITUTES["mamba_selective_scan"]  # restored


def test_scan_ops_compute_what_transformers_computes():
    from transformers.models.mamba import modeling_mamba
    from transformers.models.qwen3_next import modeling_qwen3_next

    from ir.recurrent_kernels import chunk_gated_delta_rule, selective_scan

    g = torch.Generator().manual_seed(0)
    u, dt, z = (torch.randn(2, 6, 9, generator=g) for _ in range(3))
    a, bias, d = -torch.rand(6, 4, generator=g), torch.randn(6, generator=g), torch.randn(6, generator=g)
    b, c = torch.randn(2, 4, 9, generator=g), torch.randn(2, 4, 9, generator=g)
    out, state = selective_scan(u, dt, a, b, c, d, z, bias, True)
    ref, ref_state = modeling_mamba.mamba_selective_scan(u, dt, a, b, c, D=d, z=z, delta_bias=bias,
                                                         delta_softplus=True, return_last_state=True)
    torch.testing.assert_close((out, state), (ref, ref_state))
    q, k = torch.randn(1, 70, 2, 8, generator=g), torch.randn(1, 70, 2, 8, generator=g)
    v, gate, beta = torch.randn(1, 70, 4, 5, generator=g), -torch.rand(1, 70, 4, generator=g), torch.rand(1, 70, 4)
    out, state = chunk_gated_delta_rule(q, k, v, gate, beta, None, True)
    ref, ref_state = modeling_qwen3_next.torch_chunk_gated_delta_rule(
        q, k, v, g=gate, beta=beta, output_final_state=True, use_qk_l2norm_in_kernel=True)
    torch.testing.assert_close((out, state), (ref, ref_state), atol=1e-5, rtol=1e-4)


def test_a_module_nothing_classifies_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "opaque_models.py").write_text(textwrap.dedent("""
        import torch
        import transformers
        from torch import nn

        @torch.library.custom_op("aot_test::opaque_mix", mutates_args=())
        def opaque_mix(x: torch.Tensor) -> torch.Tensor:
            return x.clone()

        @opaque_mix.register_fake
        def _(x):
            return torch.empty_like(x)

        class OpaqueMixer(nn.Module):
            def __init__(self, dim):
                super().__init__()
                self.proj = nn.Linear(dim, dim, bias=False)

            def forward(self, hidden_states, **kwargs):
                return opaque_mix(self.proj(hidden_states)), None

        def build():
            config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                              num_hidden_layers=2, num_attention_heads=4)
            model = transformers.LlamaForCausalLM(config)
            for layer in model.model.layers:
                layer.self_attn = OpaqueMixer(32)
            return model
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["inspect", "opaque_models:build", "--seq-len", "8", "--trust-model-code"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'model.layers.0.self_attn' (OpaqueMixer)" in err[0] and "KV cache" in err[0]


def test_flex_attention_configs_capture_with_their_windows():
    config = transformers.Gemma2Config(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=8)
    config._attn_implementation = "flex_attention"  # flex kernels do not run on meta: captured as eager
    config.architectures = ["Gemma2ForCausalLM"]
    graph = _capture(config)
    assert [op.attention.window for op in graph.ops if op.attention] == [8, 0]
    assert config._attn_implementation == "flex_attention"  # the caller's config is left alone


def test_cross_attention_and_unknown_modules_by_attributes():
    class Attn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.num_heads, self.head_dim = 8, 64

    from ir.attention_kinds import classify_mixer

    cross = classify_mixer("model.layers.0.encoder_attn", Attn())
    assert (cross.kind, cross.kv_heads, cross.elements_per_token) == ("cross", 8, 8 * 128)
    assert classify_mixer("model.layers.0.mixer", torch.nn.Linear(2, 2)) is None
