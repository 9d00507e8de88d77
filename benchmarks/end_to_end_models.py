"""The models and hardware of the end-to-end development set's rows, as the planner builds them.

A row's `model` column names a preset (Llama, Mixtral, OPT), a GPT-style shape (h, layers, heads, vocab:
the Megatron-LM and FasterTransformer rows; captured as an OPT-architecture decoder with learned
positions, LayerNorm, GeLU and a 4h MLP), an MPT model (llm-foundry's published shapes, no biases) or
Yi-34B (its Hugging Face config); `parse_model` reads it, `graph_of` captures it (cached). Hardware
columns map to the planner's devices (`device_of`) and clusters (`cluster_of`).
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Published architectures of models without a planner preset (h, layers, heads, vocab, and the rest).
_GPT_VOCAB = 51200  # Megatron's padded GPT-2 vocabulary (Narayanan et al. 2021, Sec. 5.1)
_MPT = {  # mosaicml/llm-foundry scripts/train/yamls/pretrain/mpt-*.yaml (d_model, n_layers, n_heads)
    "mpt-7b": (4096, 32, 32), "mpt-13b": (5120, 40, 40), "mpt-30b": (7168, 48, 64), "mpt-70b": (8192, 80, 64)}
_YI_34B = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 64000, "hidden_size": 7168,
           "intermediate_size": 20480, "num_hidden_layers": 60, "num_attention_heads": 56,
           "num_key_value_heads": 8, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
           "rope_theta": 5e6, "tie_word_embeddings": False}  # huggingface.co/01-ai/Yi-34B config.json
_PRESET = {"llama-2-7b": "llama-2-7b", "llama-2-13b": "llama-2-13b", "llama-2-70b": "llama-2-70b",
           "llama-3-8b": "llama-3-8b", "llama-3.1-8b": "llama-3-8b", "llama-3-70b": "llama-3.1-70b",
           "llama-3.1-70b": "llama-3.1-70b", "llama-3-405b": "llama-3.1-405b", "llama-3.1-405b": "llama-3.1-405b",
           "mixtral-8x7b": "mixtral-8x7b", "opt-13b": "opt-13b", "opt-66b": "opt-66b", "bert-large": None,
           "resnet-50": "resnet-50"}
_GPT3 = (12288, 96, 96)


@dataclass(frozen=True)
class ModelSpec:
    """A preset name, or a GPT-style shape (h, layers, heads, vocab) with bias/no-bias, or a config."""

    name: str
    preset: str | None = None
    shape: tuple[int, int, int, int] | None = None
    bias: bool = True
    config: str = ""  # a Hugging Face config as sorted JSON

    @property
    def hidden(self) -> int:
        return self.shape[0] if self.shape else 0


def gpt_config(h: int, layers: int, heads: int, vocab: int, seq: int, bias: bool = True) -> dict:
    """A GPT-3-style decoder (learned positions, LayerNorm, GeLU, 4h MLP) as an OPT config."""
    return {"model_type": "opt", "architectures": ["OPTForCausalLM"], "vocab_size": vocab, "hidden_size": h,
            "ffn_dim": 4 * h, "num_hidden_layers": layers, "num_attention_heads": heads, "word_embed_proj_dim": h,
            "max_position_embeddings": max(seq, 2048), "do_layer_norm_before": True, "activation_function": "gelu",
            "enable_bias": bias, "layer_norm_elementwise_affine": True}


def parse_model(text: str) -> ModelSpec | None:
    """The architecture a row's `model` column names (None: not a model the planner can build)."""
    t = text.strip()
    shape = re.search(r"h=(\d+),\s*L=(\d+)(?:,\s*heads=(\d+))?(?:,\s*V=(\d+))?", t)
    low = t.lower()
    if shape:
        h, layers = int(shape.group(1)), int(shape.group(2))
        heads = int(shape.group(3)) if shape.group(3) else (128 if h == 20480 else h // 128)
        vocab = int(shape.group(4)) if shape.group(4) else (50272 if "gpt-style" in low else _GPT_VOCAB)
        return ModelSpec(f"gpt-h{h}-l{layers}", shape=(h, layers, heads, vocab))
    gpt = re.match(r"gpt-?3?-?(\d+(?:\.\d+)?)b", low.replace(" ", ""))
    if "gpt" in low and ("175b" in low or "174.6b" in low or "gpt-3)" in low):
        return ModelSpec("gpt-175b", shape=(*_GPT3, _GPT_VOCAB))
    if gpt and "2.7b" in low:
        return ModelSpec("gpt-2.7b", shape=(2560, 32, 32, _GPT_VOCAB))  # GPT-3 2.7B (Brown et al. 2020 Table 2.1)
    if "13b gpt-style" in low:
        return ModelSpec("gpt-13b", shape=(5120, 40, 40, 50272))
    mpt = re.match(r"mpt-(\d+)b", low)
    if mpt:
        h, layers, heads = _MPT[f"mpt-{mpt.group(1)}b"]
        return ModelSpec(f"mpt-{mpt.group(1)}b", shape=(h, layers, heads, 50368), bias=False)
    if low.startswith("yi-34b"):
        return ModelSpec("yi-34b", config=json.dumps(_YI_34B, sort_keys=True))
    key = re.sub(r"\s*\(.*$", "", low).strip()
    key = key.replace("llama-2-70b", "llama-2-70b").split(" ")[0]
    preset = _PRESET.get(key)
    return ModelSpec(key, preset=preset) if preset else None


_GRAPHS: dict = {}


def graph_of(spec: ModelSpec, seq: int = 2048):
    """The captured graph of a model (cached per process; presets also on disk by planner.capture)."""
    import planner

    key = (spec, seq)
    if key in _GRAPHS:
        return _GRAPHS[key]
    if spec.preset:
        graph = planner.capture(spec.preset, seq_len=seq)
    else:
        cfg = json.loads(spec.config) if spec.config else gpt_config(*spec.shape, seq=seq, bias=spec.bias)
        folder = Path(tempfile.gettempdir()) / "aot-e2e-models" / f"{spec.name}-{seq}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "config.json"
        path.write_text(json.dumps(cfg, sort_keys=True))
        graph = planner.capture(str(path), seq_len=seq)
    _GRAPHS[key] = graph
    return graph


# --- hardware ---------------------------------------------------------------------------------------
def device_of(hardware: str) -> str | None:
    h = hardware.upper()
    if "MI250" in h:
        return None
    if "MI300X" in h:
        return "MI300X"
    if "L40S" in h:
        return "L40S"
    if "H200" in h:
        return "H200-SXM"
    if "H100" in h:
        return "H100-PCIE" if "PCIE" in h else "H100-SXM"
    if "A100" in h:
        if "PCIE" in h:
            return "A100-PCIE-80GB"
        return "A100-SXM-40GB" if "40GB" in h else "A100-SXM-80GB"
    return None


def cluster_of(device: str, n_gpus: int) -> str:
    """One node of n (n <= 8), or whole nodes of 8."""
    if n_gpus <= 8:
        return f"{n_gpus}x{device}"
    return f"{math.ceil(n_gpus / 8)}x8x{device}"
