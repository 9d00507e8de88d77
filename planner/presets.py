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

# Today's architectures (Build 4 of issue 19). Values are the published config.json values (no
# download at run time); where a checkpoint is multimodal only its text model is built.
_DEEPSEEK_V3 = {
    "vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048,
    "num_hidden_layers": 61, "num_attention_heads": 128, "num_key_value_heads": 128, "n_shared_experts": 1,
    "n_routed_experts": 256, "routed_scaling_factor": 2.5, "kv_lora_rank": 512, "q_lora_rank": 1536,
    "qk_rope_head_dim": 64, "v_head_dim": 128, "qk_nope_head_dim": 128, "n_group": 8, "topk_group": 4,
    "num_experts_per_tok": 8, "first_k_dense_replace": 3, "norm_topk_prob": True, "hidden_act": "silu",
    "max_position_embeddings": 163840, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
    "rope_parameters": {"rope_type": "yarn", "factor": 40.0, "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0,
                        "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096, "rope_theta": 10000.0},
    "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                            "weight_block_size": [128, 128]},
}
_GPT_OSS = {
    "vocab_size": 201088, "hidden_size": 2880, "intermediate_size": 2880, "head_dim": 64,
    "num_attention_heads": 64, "num_key_value_heads": 8, "sliding_window": 128, "num_experts_per_tok": 4,
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
    "attention_bias": True, "swiglu_limit": 7.0,
    "rope_parameters": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                        "original_max_position_embeddings": 4096, "truncate": False, "rope_theta": 150000.0},
    "quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": [
        "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]},
}
_LLAMA4 = {
    "vocab_size": 202048, "hidden_size": 5120, "intermediate_size": 8192, "intermediate_size_mlp": 16384,
    "num_hidden_layers": 48, "num_attention_heads": 40, "num_key_value_heads": 8, "head_dim": 128,
    "num_experts_per_tok": 1, "attention_chunk_size": 8192, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
    "attn_temperature_tuning": True, "floor_scale": 8192, "attn_scale": 0.1,
}
_QWEN3_MOE = {"hidden_act": "silu", "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "vocab_size": 151936,
              "norm_topk_prob": True, "decoder_sparse_step": 1, "mlp_only_layers": []}


def _alternating(layers: int, first: str, second: str) -> list[str]:
    return [first if i % 2 == 0 else second for i in range(layers)]


_TODAY = [
    Preset("deepseek-v3", "DeepseekV3Config", "DeepseekV3ForCausalLM", _DEEPSEEK_V3,
           "huggingface.co/deepseek-ai/DeepSeek-V3 config.json (fp8 e4m3 weights in 128x128 blocks as published; "
           "the multi-token-prediction layer, num_nextn_predict_layers=1, is not part of the transformers model)",
           "671B MoE: MLA, 1 shared + 256 routed experts (top-8), 3 dense first layers"),
    Preset("deepseek-r1", "DeepseekV3Config", "DeepseekV3ForCausalLM", _DEEPSEEK_V3,
           "huggingface.co/deepseek-ai/DeepSeek-R1 config.json (the DeepSeek-V3 architecture and values)",
           "DeepSeek-R1 reasoning model, DeepSeek-V3 architecture"),
    Preset("kimi-k2", "DeepseekV3Config", "DeepseekV3ForCausalLM",
           {**_DEEPSEEK_V3, "vocab_size": 163840, "num_attention_heads": 64, "num_key_value_heads": 64,
            "n_routed_experts": 384, "routed_scaling_factor": 2.827, "n_group": 1, "topk_group": 1,
            "first_k_dense_replace": 1, "max_position_embeddings": 131072,
            "rope_parameters": {**_DEEPSEEK_V3["rope_parameters"], "factor": 32.0, "beta_fast": 1.0,
                                "rope_theta": 50000.0}},
           "huggingface.co/moonshotai/Kimi-K2-Instruct config.json (model_type kimi_k2, architectures "
           "DeepseekV3ForCausalLM: built as DeepSeek-V3; block-fp8 weights as DeepSeek-V3's, which the ~1 TB "
           "checkpoint implies; the quantization_config entry is from memory of that file)",
           "1T MoE: MLA with 64 heads, 1 shared + 384 routed experts (top-8), 1 dense first layer"),
    Preset("qwen3-235b-a22b", "Qwen3MoeConfig", "Qwen3MoeForCausalLM",
           {**_QWEN3_MOE, "hidden_size": 4096, "intermediate_size": 12288, "moe_intermediate_size": 1536,
            "num_hidden_layers": 94, "num_attention_heads": 64, "num_key_value_heads": 4, "head_dim": 128,
            "num_experts": 128, "num_experts_per_tok": 8, "max_position_embeddings": 40960,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}},
           "huggingface.co/Qwen/Qwen3-235B-A22B config.json", "235B MoE, 128 experts (top-8), GQA 64/4"),
    Preset("gpt-oss-20b", "GptOssConfig", "GptOssForCausalLM",
           {**_GPT_OSS, "num_hidden_layers": 24, "num_local_experts": 32,
            "layer_types": _alternating(24, "sliding_attention", "full_attention")},
           "huggingface.co/openai/gpt-oss-20b config.json (MXFP4 expert weights as published)",
           "21B MoE: 32 experts (top-4), alternating 128-token sliding-window and full attention with sinks"),
    Preset("gpt-oss-120b", "GptOssConfig", "GptOssForCausalLM",
           {**_GPT_OSS, "num_hidden_layers": 36, "num_local_experts": 128,
            "layer_types": _alternating(36, "sliding_attention", "full_attention")},
           "huggingface.co/openai/gpt-oss-120b config.json (MXFP4 expert weights as published)",
           "117B MoE: 128 experts (top-4), alternating sliding-window and full attention with sinks"),
    Preset("llama-4-scout", "Llama4TextConfig", "Llama4ForCausalLM",
           {**_LLAMA4, "num_local_experts": 16, "interleave_moe_layer_step": 1, "use_qk_norm": True,
            "max_position_embeddings": 10485760,
            "rope_parameters": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 8192, "rope_theta": 500000.0}},
           "huggingface.co/meta-llama/Llama-4-Scout-17B-16E-Instruct config.json text_config (text model only; "
           "the rope_scaling factors are from memory of that file and do not change sizes or costs)",
           "109B MoE (text 108B): 16 experts (top-1) + shared expert, chunked local attention (8192) with "
           "every 4th layer global"),
    Preset("llama-4-maverick", "Llama4TextConfig", "Llama4ForCausalLM",
           {**_LLAMA4, "num_local_experts": 128, "interleave_moe_layer_step": 2, "use_qk_norm": False,
            "max_position_embeddings": 1048576, "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}},
           "huggingface.co/meta-llama/Llama-4-Maverick-17B-128E-Instruct config.json text_config (text model "
           "only; rope values from memory of that file, they do not change sizes or costs)",
           "400B MoE: dense and MoE layers interleaved, 128 experts (top-1) + shared expert, chunked attention"),
    Preset("gemma-3-27b", "Gemma3TextConfig", "Gemma3ForCausalLM",
           {"vocab_size": 262208, "hidden_size": 5376, "intermediate_size": 21504, "num_hidden_layers": 62,
            "num_attention_heads": 32, "num_key_value_heads": 16, "head_dim": 128, "query_pre_attn_scalar": 168,
            "sliding_window": 1024, "max_position_embeddings": 131072, "rms_norm_eps": 1e-6,
            "layer_types": ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(62)],
            "rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}},
           "huggingface.co/google/gemma-3-27b-it config.json text_config (text model only; sliding_window_pattern 6: "
           "five 1024-token sliding-window layers, then one global)",
           "27B dense: 5:1 local sliding-window (1024) and global attention, GQA 32/16"),
    Preset("mistral-7b", "MistralConfig", "MistralForCausalLM",
           {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 8, "sliding_window": 4096,
            "max_position_embeddings": 32768, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}},
           "huggingface.co/mistralai/Mistral-7B-v0.1 config.json", "7B dense, GQA 32/8, 4096-token sliding window"),
    Preset("qwen3-next-80b-a3b", "Qwen3NextConfig", "Qwen3NextForCausalLM",
           {**_QWEN3_MOE, "hidden_size": 2048, "intermediate_size": 5120, "moe_intermediate_size": 512,
            "shared_expert_intermediate_size": 512, "num_hidden_layers": 48, "num_attention_heads": 16,
            "num_key_value_heads": 2, "head_dim": 256, "num_experts": 512, "num_experts_per_tok": 10,
            "linear_num_value_heads": 32, "linear_num_key_heads": 16, "linear_key_head_dim": 128,
            "linear_value_head_dim": 128, "linear_conv_kernel_dim": 4, "max_position_embeddings": 262144,
            "layer_types": ["full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(48)],
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": 0.25}},
           "huggingface.co/Qwen/Qwen3-Next-80B-A3B-Instruct config.json (full_attention_interval 4)",
           "80B MoE hybrid: 3 gated-delta-net linear-attention layers per gated full-attention layer, "
           "512 experts (top-10) + shared expert"),
]
PRESETS.update({p.name: p for p in _TODAY})

# Other spellings of the same model (same published config).
ALIASES = {"llama3-8b": "llama-3-8b", "bert-base-uncased": "bert-base", "vit-base-patch16-224": "vit-b-16",
           "kimi-k2-instruct": "kimi-k2", "mistral-7b-v0.1": "mistral-7b", "qwen3-next": "qwen3-next-80b-a3b",
           "llama-4-scout-17b-16e": "llama-4-scout", "llama-4-maverick-17b-128e": "llama-4-maverick"}
# Names of a different or ambiguous model: refused with a suggestion, never silently planned as another model.
NOT_ALIASES = {
    "llama-3-70b": ("llama-3.1-70b", "Llama 3 70B (8K context) is not Llama 3.1 70B (128K context)"),
    "gpt-3": ("opt-175b", "GPT-3 has no public config; OPT-175B has its shape but is another model"),
    "mixtral": ("mixtral-8x7b", "Mixtral names several models (8x7B, 8x22B)"),
    "qwen3-moe": ("qwen3-30b-a3b", "Qwen3 MoE names several models (30B-A3B, 235B-A22B)"),
    "gpt-oss": ("gpt-oss-120b", "gpt-oss names two models (20B, 120B)"),
}


def get_preset(name: str) -> Preset:
    """The preset called `name` (case-insensitive, aliases allowed); UserError lists close names.

    >>> get_preset("LLaMA-3.1-70B").config_class
    'LlamaConfig'
    """
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key in PRESETS:
        return PRESETS[key]
    if key in NOT_ALIASES:
        other, why = NOT_ALIASES[key]
        raise UserError(f"'{name}' is not a preset ({why}); did you mean {other}? Give that name, or the model's "
                        f"config.json")
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
