"""Capture from an nn.Module (torch.fx path), a factory, and config files; bad inputs."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch
from torch import nn

import planner
from ir.errors import UserError
from ir.verify import verify_graph
from planner.cli import main


class TinyBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.heads = 2

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = self.qkv(self.norm(x)).chunk(3, dim=-1)
        q, k, v = (t.view(b, s, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        out = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return x + self.proj(out.transpose(1, 2).reshape(b, s, d))


class TinyNet(nn.Module):
    def __init__(self, dim: int = 32, depth: int = 3):
        super().__init__()
        self.blocks = nn.ModuleList(TinyBlock(dim) for _ in range(depth))
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class DataDependentGate(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent: neither tracer can decide this branch
            return x * 2
        return x


class GatedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.gate = DataDependentGate()

    def forward(self, x):
        return self.gate(self.proj(x))


def test_module_with_example_inputs_uses_fx_and_shares_blocks():
    graph = planner.capture(TinyNet(), example_inputs=(torch.randn(2, 16, 32),), seq_len=16)
    assert graph.capture_method == "torch.fx"
    assert verify_graph(graph) == []
    assert [layer.kind for layer in graph.layers].count("block") == 3
    assert len({layer.signature for layer in graph.layers if layer.kind == "block"}) == 1
    assert graph.param_count == sum(p.numel() for p in TinyNet().parameters())
    attention = [op for op in graph.ops if op.kind == "attention"]
    assert len(attention) == 3 and attention[0].attention.causal
    linear = next(op for op in graph.ops if op.module_path == "blocks.0.qkv")
    assert linear.flops == 2 * 2 * 16 * 32 * 96 + 2 * 16 * 96
    assert linear.params == ("blocks.0.qkv.weight", "blocks.0.qkv.bias")


def test_data_dependent_control_flow_names_the_module():
    with pytest.raises(UserError) as err:
        planner.capture(GatedNet(), example_inputs=(torch.randn(2, 8),))
    message = str(err.value)
    assert "module 'gate'" in message and "leaf" in message and "\n" not in message


def test_leaf_module_lets_fx_capture_it():
    graph = planner.capture(GatedNet(), example_inputs=(torch.randn(2, 8),), leaf_modules=("gate",))
    assert graph.capture_method == "torch.fx"
    assert [op.module_path for op in graph.ops] == ["proj", "gate"]


def test_factory_reference(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def mlp():
            model = nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 16))
            return model, (torch.empty(4, 16),)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserError, match="trust-model-code"):  # code runs only when the caller says so
        planner.capture("my_models:mlp")
    assert "my_models" not in sys.modules
    graph = planner.capture("my_models:mlp", trust_model_code=True)
    assert graph.param_count == 16 * 64 + 64 + 64 * 16 + 16
    assert all(p for op in graph.ops for p in op.params)
    sys.modules.pop("my_models", None)


def test_hf_config_file_and_folder(tmp_path):
    config = {"model_type": "llama", "vocab_size": 256, "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "architectures": ["LlamaForCausalLM"]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    by_file = planner.capture(str(tmp_path / "config.json"), seq_len=8)
    by_dir = planner.capture(str(tmp_path), seq_len=8)
    assert by_file.param_count == by_dir.param_count > 0
    assert by_file.architecture == "LlamaForCausalLM"


@pytest.mark.parametrize(("argv", "needle"), [
    (["inspect", "llama-3.1-7b"], "did you mean"),
    (["inspect", "/nonexistent/config.json"], "/nonexistent/config.json"),
    (["inspect", "tiny-llama", "--batch", "-3"], "batch"),
    (["inspect", "gpt2", "--seq-len", "5000"], "1024"),
    (["inspect", "nosuchpkg.mod:factory"], "--trust-model-code"),
    (["inspect", "nosuchpkg.mod:factory", "--trust-model-code"], "nosuchpkg.mod:factory"),
])
def test_cli_bad_input_is_one_line_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "Traceback" not in err[0]


def test_malformed_config_names_the_file(tmp_path, capsys):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    assert main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0]
    bad.write_text(json.dumps({"hidden_size": 3}))
    assert main(["inspect", str(bad)]) == 2
    assert "model_type" in capsys.readouterr().err


def test_untraceable_module_from_factory_exits_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "gated_models.py").write_text(textwrap.dedent("""
        import torch
        from tests.test_capture_sources import GatedNet

        def gated():
            return GatedNet(), (torch.empty(2, 8),)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["inspect", "gated_models:gated", "--trust-model-code"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "module 'gate'" in err[0]
