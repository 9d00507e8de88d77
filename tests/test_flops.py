"""FLOPs against analytic counts: 2 x matmul parameters x tokens + attention products.

Attention: QK^T and PV are 2 * b * h * d * pairs FLOPs each. For causal models only the visible
lower triangle is counted (pairs = s(s+1)/2 per head), as flash attention skips masked blocks;
encoders (BERT) count all s^2 pairs.
"""

from __future__ import annotations

import pytest
import torch

from ir.hf_models import build_on_meta
from planner.presets import PRESETS, preset_config


def _matmul_params(name: str) -> int:
    model = build_on_meta(preset_config(PRESETS[name]))
    total = 0
    for module in model.modules():
        kind = type(module).__name__
        if isinstance(module, torch.nn.Linear) or kind == "Conv1D":
            total += module.weight.numel()
    return total


def _config(name):
    return preset_config(PRESETS[name])


@pytest.mark.parametrize("name", ["llama-2-7b", "llama-3-8b", "llama-3.1-70b", "gpt2", "opt-13b"])
def test_dense_decoder_flops_within_2_percent(name, graph_of):
    batch, seq = 2, 512
    graph = graph_of(name, batch=batch, seq_len=seq)
    cfg = _config(name)
    heads, layers = cfg.num_attention_heads, cfg.num_hidden_layers
    head_dim = cfg.hidden_size // heads
    attention = layers * 2 * 2 * batch * heads * head_dim * (seq * (seq + 1) // 2)
    analytic = 2 * _matmul_params(name) * batch * seq + attention
    assert abs(graph.flops - analytic) / analytic < 0.02


def test_bert_base_flops_at_seq_128(graph_of):
    batch, seq = 1, 128
    graph = graph_of("bert-base", batch=batch, seq_len=seq)
    cfg = _config("bert-base")
    pooler = cfg.hidden_size * cfg.hidden_size  # the pooler runs on the first token only
    attention = cfg.num_hidden_layers * 2 * 2 * batch * cfg.hidden_size * seq * seq
    analytic = 2 * (_matmul_params("bert-base") - pooler) * batch * seq + 2 * pooler * batch + attention
    assert abs(graph.flops - analytic) / analytic < 0.02


def test_resnet50_flops_within_3_percent_of_4_1_gmacs(graph_of):
    graph = graph_of("resnet-50")
    assert abs(graph.flops - 2 * 4.1e9) / (2 * 4.1e9) < 0.03


def test_vit_b16_flops(graph_of):
    graph = graph_of("vit-b-16")
    # ViT-B/16 at 224x224 (197 tokens): 17.6 G multiply-adds (DeiT paper Table 1 lists "17.6
    # GFLOPs" counted as fvcore does, one per multiply-add), so 2 x 17.6e9 FLOPs here
    assert abs(graph.flops - 2 * 17.6e9) / (2 * 17.6e9) < 0.03
