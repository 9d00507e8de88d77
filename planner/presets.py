"""Built-in model presets: published configuration values, built through transformers config classes.

Each preset cites where its numbers come from (the model's Hugging Face `config.json`, or the
paper where no public config exists). Nothing is downloaded: the values are written here.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from ir.errors import UserError


@dataclass(frozen=True)
class Preset:
    """A named model: transformers config class, architecture and its published values."""

    name: str
    config_class: str  # transformers config class name
    architecture: str  # transformers model class name
    values: dict = field(default_factory=dict)
    source: str = ""
    description: str = ""


_LLAMA2 = {"vocab_size": 32000, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
           "rope_theta": 10000.0, "tie_word_embeddings": False, "hidden_act": "silu"}
_LLAMA3 = {"vocab_size": 128256, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
           "tie_word_embeddings": False, "hidden_act": "silu", "bos_token_id": 128000,
           "eos_token_id": 128001}
_LLAMA31_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                 "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
                 "rope_theta": 500000.0}
_OPT = {"vocab_size": 50272, "max_position_embeddings": 2048, "do_layer_norm_before": True,
        "activation_function": "relu", "enable_bias": True, "layer_norm_elementwise_affine": True}

PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("tiny-llama", "LlamaConfig", "LlamaForCausalLM",
           {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 4,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
            "rms_norm_eps": 1e-5, "tie_word_embeddings": False},
           "made up for runnable demos and tests: Llama architecture with grouped-query attention",
           "4-layer Llama with GQA for tests and demos"),
    Preset("tiny-mixtral", "MixtralConfig", "MixtralForCausalLM",
           {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
            "num_attention_heads": 4, "num_key_value_heads": 2, "num_local_experts": 4,
            "num_experts_per_tok": 2, "max_position_embeddings": 512, "tie_word_embeddings": False},
           "made up for runnable demos and tests: Mixtral architecture, 4 experts, top-2",
           "4-layer Mixtral MoE for tests and demos"),
    Preset("llama-2-7b", "LlamaConfig", "LlamaForCausalLM",
           {**_LLAMA2, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 32},
           "huggingface.co/meta-llama/Llama-2-7b-hf config.json; Touvron et al. 2023 Table 1"),
    Preset("llama-2-13b", "LlamaConfig", "LlamaForCausalLM",
           {**_LLAMA2, "hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 40,
            "num_attention_heads": 40, "num_key_value_heads": 40},
           "huggingface.co/meta-llama/Llama-2-13b-hf config.json"),
    Preset("llama-2-70b", "LlamaConfig", "LlamaForCausalLM",
           {**_LLAMA2, "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
            "num_attention_heads": 64, "num_key_value_heads": 8},
           "huggingface.co/meta-llama/Llama-2-70b-hf config.json"),
    Preset("llama-3-8b", "LlamaConfig", "LlamaForCausalLM",
           {**_LLAMA3, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 8192},
           "huggingface.co/meta-llama/Meta-Llama-3-8B config.json"),
    Preset("llama-3.1-70b", "LlamaConfig", "LlamaForCausalLM",
           {**_LLAMA3, "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
            "num_attention_heads": 64, "num_key_value_heads": 8,
            "max_position_embeddings": 131072, "rope_parameters": _LLAMA31_ROPE},
           "huggingface.co/meta-llama/Llama-3.1-70B config.json; Llama 3 Herd paper Table 3"),
    Preset("llama-3.1-405b", "LlamaConfig", "LlamaForCausalLM",
           {**_LLAMA3, "hidden_size": 16384, "intermediate_size": 53248, "num_hidden_layers": 126,
            "num_attention_heads": 128, "num_key_value_heads": 8,
            "max_position_embeddings": 131072, "rope_parameters": _LLAMA31_ROPE},
           "huggingface.co/meta-llama/Llama-3.1-405B config.json; Llama 3 Herd paper Table 3"),
    Preset("mixtral-8x7b", "MixtralConfig", "MixtralForCausalLM",
           {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
            "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
            "num_local_experts": 8, "num_experts_per_tok": 2, "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-5, "rope_theta": 1e6, "tie_word_embeddings": False},
           "huggingface.co/mistralai/Mixtral-8x7B-v0.1 config.json"),
    Preset("qwen3-30b-a3b", "Qwen3MoeConfig", "Qwen3MoeForCausalLM",
           {"vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 6144,
            "moe_intermediate_size": 768, "num_hidden_layers": 48, "num_attention_heads": 32,
            "num_key_value_heads": 4, "head_dim": 128, "num_experts": 128,
            "num_experts_per_tok": 8, "norm_topk_prob": True, "decoder_sparse_step": 1,
            "mlp_only_layers": [], "max_position_embeddings": 40960, "rms_norm_eps": 1e-6,
            "rope_theta": 1e6, "tie_word_embeddings": False},
           "huggingface.co/Qwen/Qwen3-30B-A3B config.json"),
    Preset("opt-13b", "OPTConfig", "OPTForCausalLM",
           {**_OPT, "hidden_size": 5120, "ffn_dim": 20480, "num_hidden_layers": 40,
            "num_attention_heads": 40, "word_embed_proj_dim": 5120},
           "huggingface.co/facebook/opt-13b config.json; Zhang et al. 2022 (OPT) Table 1"),
    Preset("opt-66b", "OPTConfig", "OPTForCausalLM",
           {**_OPT, "hidden_size": 9216, "ffn_dim": 36864, "num_hidden_layers": 64,
            "num_attention_heads": 72, "word_embed_proj_dim": 9216},
           "huggingface.co/facebook/opt-66b config.json; Zhang et al. 2022 (OPT) Table 1"),
    Preset("opt-175b", "OPTConfig", "OPTForCausalLM",
           {**_OPT, "hidden_size": 12288, "ffn_dim": 49152, "num_hidden_layers": 96,
            "num_attention_heads": 96, "word_embed_proj_dim": 12288},
           "Zhang et al. 2022 (OPT) Table 1: 96 layers, 96 heads, d_model 12288 (no public config.json)"),
    Preset("gpt2", "GPT2Config", "GPT2LMHeadModel",
           {"vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12,
            "activation_function": "gelu_new"},
           "huggingface.co/openai-community/gpt2 config.json (124M)"),
    Preset("bert-base", "BertConfig", "BertModel",
           {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
            "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512,
            "type_vocab_size": 2, "hidden_act": "gelu"},
           "huggingface.co/google-bert/bert-base-uncased config.json"),
    Preset("vit-b-16", "ViTConfig", "ViTForImageClassification",
           {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
            "intermediate_size": 3072, "image_size": 224, "patch_size": 16, "num_channels": 3,
            "num_labels": 1000},
           "huggingface.co/google/vit-base-patch16-224 config.json (ImageNet-1k head)"),
    Preset("resnet-50", "ResNetConfig", "ResNetForImageClassification",
           {"embedding_size": 64, "hidden_sizes": [256, 512, 1024, 2048], "depths": [3, 4, 6, 3],
            "layer_type": "bottleneck", "hidden_act": "relu", "downsample_in_first_stage": False,
            "num_channels": 3, "num_labels": 1000},
           "huggingface.co/microsoft/resnet-50 config.json; He et al. 2016 Table 1"),
]}

ALIASES = {"llama-3-70b": "llama-3.1-70b", "llama3-8b": "llama-3-8b", "mixtral": "mixtral-8x7b",
           "bert-base-uncased": "bert-base", "vit-base-patch16-224": "vit-b-16",
           "gpt-3": "opt-175b", "qwen3-moe": "qwen3-30b-a3b"}


def get_preset(name: str) -> Preset:
    """The preset called `name` (case-insensitive, aliases allowed); UserError lists close names.

    >>> get_preset("LLaMA-3.1-70B").config_class
    'LlamaConfig'
    """
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key in PRESETS:
        return PRESETS[key]
    close = difflib.get_close_matches(key, list(PRESETS) + list(ALIASES), n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UserError(f"unknown model '{name}'{hint} (`planner inspect --list` shows all presets; "
                    f"or give a config.json path or pkg.module:factory)")


def preset_config(preset: Preset):
    """The transformers config object of a preset."""
    import transformers

    cls = getattr(transformers, preset.config_class)
    config = cls(**preset.values)
    config.architectures = [preset.architecture]
    return config
