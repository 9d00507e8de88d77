"""Every new preset estimates and plans (serve and train), and memory claims hold: GPT-NeoX-20B's
real KV does not fit one H100 at batch 32, gpt-oss-120b fits one H100 at its published MXFP4."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import planner
from planner.cli import main

CONFIGS = Path(__file__).parent / "data" / "configs"
# preset: (serving cluster, its tp; training cluster, its tp, pp, ep): the layouts the full searches
# choose (`planner plan` without pins), pinned here so the test stays short
CASES = {
    "deepseek-v3": ("8xH200-SXM", 8, "32x8xH100-SXM", 2, 32, 4),
    "deepseek-r1": ("8xH200-SXM", 8, "32x8xH100-SXM", 2, 32, 4),
    "kimi-k2": ("2x8xH200-SXM", 8, "64x8xH100-SXM", 2, 32, 4),
    "qwen3-235b-a22b": ("8xH100-SXM", 8, "16x8xH100-SXM", 2, 32, 1),
    "gpt-oss-20b": ("1xH100-SXM", 1, "8xH100-SXM", 1, 1, 1),
    "gpt-oss-120b": ("1xH100-SXM", 1, "4x8xH100-SXM", 1, 4, 8),
    "llama-4-scout": ("4xH100-SXM", 4, "4x8xH100-SXM", 1, 4, 8),
    "llama-4-maverick": ("8xH200-SXM", 8, "16x8xH100-SXM", 4, 1, 32),
    "gemma-3-27b": ("1xH100-SXM", 1, "8xH100-SXM", 2, 2, 1),
    "mistral-7b": ("1xH100-SXM", 1, "8xH100-SXM", 1, 1, 1),
    "qwen3-next-80b-a3b": ("4xH100-SXM", 4, "4x8xH100-SXM", 2, 4, 1),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_new_preset_estimates_and_plans_serve_and_train(name):
    serve, serve_tp, train, tp, pp, ep = CASES[name]
    decode = planner.estimate(name, serve, "decode", batch=8, input_len=2048, tp=serve_tp)
    assert decode["fits"] and decode["tpot_s"] > 0 and decode["memory_breakdown_bytes"]["kv_cache"] > 0
    served = planner.plan(name, serve, "chat", tp=serve_tp)
    trained = planner.plan(name, train, "train", batch=512, seq_len=2048, tp=tp, pp=pp, ep=ep)
    assert served.verify() == [] and trained.verify() == []
    assert served.data["predicted"]["output_tokens_per_s"] > 0 and trained.data["predicted"]["tokens_per_s"] > 0


def test_neox_decode_reports_the_true_kv_and_no_fit(capsys):
    argv = ["estimate", str(CONFIGS / "gpt_neox_20b.json"), "--cluster", "1xH100-SXM", "--phase", "decode",
            "--batch", "32", "--input-len", "2048", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    kv = out["memory_breakdown_bytes"]["kv_cache"]
    assert kv == 32 * (2048 + 128) * 44 * 2 * 6144 * 2  # 75.3 GB: 44 layers of 64 x 96 K and V, bf16
    assert out["fits"] is False and out["max_batch"] < 32


def test_gpt_oss_120b_fits_one_h100_at_its_published_mxfp4():
    published = planner.estimate("gpt-oss-120b", "1xH100-SXM", "decode", batch=1, input_len=4096)
    assert published["fits"] and published["memory_breakdown_bytes"]["weights"] < 66e9
    widened = planner.estimate("gpt-oss-120b", "1xH100-SXM", "decode", batch=1, input_len=4096, weight_dtype="bf16")
    assert not widened["fits"]  # 234 GB of bf16 weights


def test_mamba_serves_as_a_generative_model():
    mamba = str(CONFIGS / "mamba_130m.json")
    decode = planner.estimate(mamba, "1xH100-SXM", "decode", batch=16, input_len=1024)
    assert decode["fits"] and decode["memory_breakdown_bytes"]["kv_cache"] == 16 * 24 * 29184 * 2  # state only
    serve = planner.estimate(mamba, "1xH100-SXM", "serve", input_len=1024)
    assert serve["output_tokens_per_s"] and serve["max_batch"] > 0


def test_gemma2_with_eager_softcapped_attention_serves_as_a_decoder():
    serve = planner.estimate(str(CONFIGS / "gemma2_9b.json"), "1xH100-SXM", "serve", input_len=2048)
    assert serve["output_tokens_per_s"] and serve["ttft_s"] and serve["memory_breakdown_bytes"]["kv_cache"] > 0


def test_deepseek_kv_capacity_is_the_mla_formula_per_rank():
    from cost_models.cluster import parse_cluster
    from cost_models.estimate_context import make_context
    from cost_models.estimate_infer import inference_memory
    from cost_models.parallel_config import Options
    from cost_models.serving.iteration_cost import kv_capacity_tokens

    graph = planner.capture("deepseek-v3")
    ctx = make_context(graph, parse_cluster("2x8xH200-SXM"), Options(tp=8, dp=2, input_len=1024, output_len=256))
    memory = inference_memory(ctx, 0, 1, 8192)
    free = ctx.capacity_bytes - memory["weights"] - memory["activations"] - memory["reserve"]
    assert memory["weights"] < 90e9  # fp8 blocks as published: ~84 GB per H200 at tp 8
    assert kv_capacity_tokens(ctx, 8192) == int(free // (61 * (512 + 64) * 2))  # the latent, whole on every tp rank
