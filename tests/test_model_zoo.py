"""Today's architectures, from published config.json files (tests/data/configs) and the presets:
parameter counts equal transformers' numel, and KV / state bytes equal a hand formula per attention
kind written from the config values alone (the table prints with ``pytest -s``)."""

from __future__ import annotations

from pathlib import Path

import pytest

import planner
from ir.hf_models import build_on_meta, load_config_file
from ir.kv_cache import kv_bytes_per_sequence, kv_bytes_per_token, kv_table
from ir.moe import moe_layers
from ir.phases import phase_costs
from ir.verify import verify_graph
from planner.presets import get_preset, preset_config

CONFIGS = sorted((Path(__file__).parent / "data" / "configs").glob("*.json"))
NEW_PRESETS = ("deepseek-v3", "deepseek-r1", "kimi-k2", "qwen3-235b-a22b", "gpt-oss-20b", "gpt-oss-120b",
               "llama-4-scout", "llama-4-maverick", "gemma-3-27b", "mistral-7b", "qwen3-next-80b-a3b")
MODELS = [str(p) for p in CONFIGS] + list(NEW_PRESETS)
KV_BYTES = 2  # bf16 cache
SEQ = 32


def _config(ref: str):
    return load_config_file(ref) if ref.endswith(".json") else preset_config(get_preset(ref))


def _mamba_state(inner: int, state: int, kernel: int) -> int:
    return inner * state + inner * (kernel - 1)  # SSM state + causal-conv window per channel


def _softmax_layer(c, i: int) -> tuple[str, int, int]:
    """(kind, elements per token, window) of softmax-attention layer i, from the config alone."""
    heads = c.num_attention_heads
    kv = getattr(c, "num_key_value_heads", None) or heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    types = getattr(c, "layer_types", None)
    kind = types[i] if types else None
    window = 0
    if kind == "sliding_attention" or (kind is None and getattr(c, "sliding_window", None)
                                       and getattr(c, "use_sliding_window", True) is not False):
        window = c.sliding_window
    if kind == "chunked_attention":
        window = c.attention_chunk_size
    return ("window" if window else "gqa" if kv < heads else "mha"), 2 * kv * head_dim, window


def hand_layers(c) -> list[tuple[str, int, int, int]]:
    """Per layer: (kind, cached elements per token, window (0: all), constant state elements)."""
    n, t = c.num_hidden_layers, c.model_type
    if t == "deepseek_v3":
        return [("mla", c.kv_lora_rank + c.qk_rope_head_dim, 0, 0)] * n
    if t == "mamba":
        return [("ssm", 0, 0, _mamba_state(c.intermediate_size, c.state_size, c.conv_kernel))] * n
    if t == "jamba":
        ssm = _mamba_state(c.mamba_expand * c.hidden_size, c.mamba_d_state, c.mamba_d_conv)
        return [(*_softmax_layer(c, i), 0) if i % c.attn_layer_period == c.attn_layer_offset else ("ssm", 0, 0, ssm)
                for i in range(n)]
    if t == "qwen3_next":
        k_dim, v_dim = c.linear_num_key_heads * c.linear_key_head_dim, c.linear_num_value_heads * c.linear_value_head_dim
        state = (c.linear_num_value_heads * c.linear_key_head_dim * c.linear_value_head_dim
                 + (2 * k_dim + v_dim) * (c.linear_conv_kernel_dim - 1))
        return [("linear", 0, 0, state) if c.layer_types[i] == "linear_attention" else (*_softmax_layer(c, i), 0)
                for i in range(n)]
    return [(*_softmax_layer(c, i), 0) for i in range(n)]


def hand_bytes(c, tokens: int) -> tuple[int, int]:
    """(growth per token, bytes of one `tokens`-token sequence), all layers, bf16."""
    layers = hand_layers(c)
    per_token = sum(e for _, e, _, _ in layers) * KV_BYTES
    per_sequence = sum(e * (min(tokens, w) if w else tokens) + s for _, e, w, s in layers) * KV_BYTES
    return per_token, per_sequence


class _Zoo(dict):
    """Graphs captured on first use and kept for the module (more than the API's in-memory cache holds)."""

    def __missing__(self, ref: str):
        self[ref] = planner.capture(ref, seq_len=SEQ)
        return self[ref]

    def all(self):
        return [(ref, self[ref]) for ref in MODELS]


@pytest.fixture(scope="module")
def zoo():
    return _Zoo()


@pytest.mark.slow
def test_parameter_counts_equal_transformers_numel(zoo):
    for ref, graph in zoo.all():
        numel = sum(p.numel() for p in build_on_meta(_config(ref)).parameters())
        assert graph.param_count == numel, ref
        assert verify_graph(graph) == [], ref


@pytest.mark.slow
def test_kv_and_state_bytes_equal_the_hand_formula_per_kind(zoo):
    rows = []
    for ref, graph in zoo.all():
        config = _config(ref)
        for tokens in (1000, 100_000):
            per_token, per_sequence = hand_bytes(config, tokens)
            assert kv_bytes_per_token(graph, KV_BYTES) == per_token, ref
            assert kv_bytes_per_sequence(graph, tokens, KV_BYTES) == per_sequence, (ref, tokens)
        decode = phase_costs(graph, "decode", batch=1, context_len=SEQ)
        assert decode.total("kv_bytes_per_token") == per_token, ref
        kinds = ", ".join(f"{r['layers']}x {r['cache']}" for r in kv_table(graph, KV_BYTES, 1))
        rows.append((Path(ref).stem, graph.param_count, per_token, hand_bytes(config, 32768)[1], kinds))
    print(f"\n{'model':22} {'params':>16} {'KV B/token':>11} {'B/seq@32k':>14}  caches per layer")
    for name, params, per_token, seq, kinds in rows:
        print(f"{name:22} {params:16,} {per_token:11,} {seq:14,}  {kinds}")


def test_deepseek_kv_is_the_compressed_latent(zoo):
    graph = zoo["deepseek-v3"]
    assert kv_bytes_per_token(graph, KV_BYTES) == 61 * (512 + 64) * 2 == 70_272  # not 5,996,544 decompressed
    moe = [layer for layer in graph.layers if layer.is_moe]
    assert len(moe) == 58 and not any(layer.is_moe for layer in graph.layers[1:4])  # 3 dense first layers


def test_published_weight_formats_reach_the_stored_bytes(zoo):
    oss = zoo["gpt-oss-120b"]
    stored = sum(layer.stored_param_bytes for layer in oss.layers)
    assert 60e9 < stored < 66e9 < oss.param_bytes  # MXFP4 experts: the ~61 GiB checkpoint, not 234 GB of bf16
    ds = zoo["deepseek-v3"]
    assert 0.5 < sum(layer.stored_param_bytes for layer in ds.layers) / ds.param_bytes < 0.51  # fp8 + scales


def test_moe_facts_for_expert_parallel(zoo):
    expected = {  # model: (MoE layers, experts, top-k, one expert's params, shared expert's params)
        "deepseek-v3": (58, 256, 8, 3 * 7168 * 2048, 3 * 7168 * 2048),
        "kimi-k2": (60, 384, 8, 3 * 7168 * 2048, 3 * 7168 * 2048),
        "qwen3-next-80b-a3b": (48, 512, 10, 3 * 2048 * 512, 3 * 2048 * 512 + 2048),  # + its sigmoid gate
        "llama-4-scout": (48, 16, 1, 3 * 5120 * 8192, 3 * 5120 * 8192),
        "llama-4-maverick": (24, 128, 1, 3 * 5120 * 8192, 3 * 5120 * 8192),
        "gpt-oss-120b": (36, 128, 4, 3 * 2880 * 2880, 0),
        "qwen3-235b-a22b": (94, 128, 8, 3 * 4096 * 1536, 0),
    }
    for name, (layers, experts, top_k, expert, shared) in expected.items():
        facts = moe_layers(zoo[name])
        assert len(facts) == layers, name
        assert {(f.num_experts, f.top_k, f.expert_param_bytes, f.shared_param_bytes) for f in facts} == {
            (experts, top_k, 2 * expert, 2 * shared)}, name
    oss = moe_layers(zoo["gpt-oss-120b"])[0]
    assert oss.routed_bytes_per_token == 4 * oss.expert_stored_bytes < oss.top_k * oss.expert_param_bytes / 3.7
    scout = zoo["llama-4-scout"]  # every token through all 16 experts in transformers; engines run top-1
    routed = next(op for op in scout.ops if op.experts is not None)
    assert routed.flops == 2 * SEQ * 5120 * 2 * 8192
