"""Recognise the attention kind of every token-mixing module of a model from its attributes and config.

A *mixing module* is the outermost submodule whose class name ends like an attention or recurrent
layer (``...Attention``, ``...Attn``, ``...Mixer``, ``...DeltaNet``, ``...SSM``). Transformers
modules carry what decides their cache as attributes and in their config:

- state space (Mamba, Jamba, Falcon-Mamba): ``ssm_state_size``, ``intermediate_size``,
  ``conv_kernel_size`` (Mamba-2 adds ``num_heads``, ``head_dim``, ``n_groups``);
- linear attention (Qwen3-Next gated delta net): ``num_v_heads``, ``head_k_dim``, ``head_v_dim``,
  ``conv_dim``;
- multi-latent attention (DeepSeek-V2/V3, Kimi K2): ``kv_lora_rank``, ``qk_rope_head_dim``;
- softmax attention: heads and K/V heads (``num_key_value_groups``, config), head size, the
  layer's type (``layer_type`` attribute or ``config.layer_types[layer_idx]``: sliding, chunked,
  full), ``sliding_window`` (attribute, else the config's when the model applies it to every
  layer, as Mistral and Phi-3 do), a ``sinks`` parameter (gpt-oss), cross-attention by name.

`classify_mixer` returns None when neither the module nor its own config tells; capture then takes the kind from the traced
attention op (`ir.build`), and refuses the model when no op tells either (`missing_kind_error`).
"""

from __future__ import annotations

import re

import torch

from ir.cache_spec import CacheSpec
from ir.errors import UserError

_MIXER_CLASS = re.compile(r"(Attention|Attn|Mixer|DeltaNet|SSM)$")
_CROSS_NAMES = ("encoder_attn", "crossattention", "cross_attn", "cross_attention")


def mixing_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(path, module) of the outermost attention / recurrent submodules, in model order."""
    found: list[tuple[str, torch.nn.Module]] = []

    def visit(module: torch.nn.Module, path: str) -> None:
        for name, child in module.named_children():
            child_path = f"{path}.{name}" if path else name
            if _MIXER_CLASS.search(type(child).__name__):
                found.append((child_path, child))
            else:
                visit(child, child_path)

    visit(model, "")
    return found


def _attr(module, *names, default=None):
    for name in names:
        value = vars(module).get(name)
        if value is not None and not isinstance(value, bool):
            return value
    return default


def _config(module, fallback):
    config = vars(module).get("config")
    return config if config is not None and hasattr(config, "model_type") else fallback


def _state_space(path: str, m) -> CacheSpec | None:
    n, inner, kernel = _attr(m, "ssm_state_size"), _attr(m, "intermediate_size"), _attr(m, "conv_kernel_size")
    if not (n and inner and kernel):
        return None
    heads, head_dim, groups = _attr(m, "num_heads"), _attr(m, "head_dim"), _attr(m, "n_groups")
    if heads and head_dim and groups:  # Mamba-2: per-head SSM state, conv over x, B and C
        ssm, conv, shards = heads * head_dim * n, (inner + 2 * groups * n) * (kernel - 1), heads
    else:  # Mamba-1: one d_state state per channel, conv over the channels
        ssm, conv, shards = inner * n, inner * (kernel - 1), inner
    return CacheSpec(path, "state_space", state_elements=int(ssm + conv), shards=int(shards))


def _linear_attention(path: str, m) -> CacheSpec | None:
    v_heads, k_dim, v_dim = _attr(m, "num_v_heads"), _attr(m, "head_k_dim"), _attr(m, "head_v_dim")
    if not (v_heads and k_dim and v_dim):
        return None
    conv = (_attr(m, "conv_dim", default=0)) * max(_attr(m, "conv_kernel_size", default=1) - 1, 0)
    return CacheSpec(path, "linear", heads=int(v_heads), state_elements=int(v_heads * k_dim * v_dim + conv),
                     shards=int(v_heads))


def _heads(m, config) -> tuple[int | None, int | None, int | None]:
    """(query heads, K/V heads, head size) from the module's attributes, else its config."""
    heads = _attr(m, "num_heads", "num_attention_heads", "n_head", "n_heads")
    if heads is None and config is not None:
        heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None)
    groups = _attr(m, "num_key_value_groups")
    kv = _attr(m, "num_key_value_heads", "num_kv_heads")
    if kv is None and heads and groups:
        kv = heads // groups
    if kv is None and config is not None:
        kv = getattr(config, "num_key_value_heads", None)
    head_dim = _attr(m, "head_dim", "head_size", "attention_head_size")
    if head_dim is None and config is not None and heads:
        hidden = getattr(config, "hidden_size", None)
        head_dim = getattr(config, "head_dim", None) or (hidden // heads if hidden else None)
    return heads, (kv or heads), head_dim


def _layer_type(m, config) -> str | None:
    kind = _attr(m, "layer_type", "attention_type")
    index = _attr(m, "layer_idx")
    types = getattr(config, "layer_types", None) if config is not None else None
    if kind is None and isinstance(types, (list, tuple)) and isinstance(index, int) and index < len(types):
        kind = types[index]
    return kind


def _window(m, config) -> tuple[int, bool]:
    """(window tokens, chunked) of a softmax-attention module; (0, False) when it sees all tokens."""
    kind = _layer_type(m, config)
    if kind == "chunked_attention":
        return int(getattr(config, "attention_chunk_size", 0) or 0), True
    if "sliding_window" in vars(m):
        return int(vars(m)["sliding_window"] or 0), False
    window = getattr(config, "sliding_window", None) if config is not None else None
    if kind == "sliding_attention":
        return int(window or 0), False
    if kind is None and isinstance(window, int) and getattr(config, "use_sliding_window", True) is not False:
        return window, False
    return 0, False


def _softmax_attention(path: str, m, config) -> CacheSpec | None:
    heads, kv, head_dim = _heads(m, config)
    if not (heads and head_dim):
        return None
    name = path.rsplit(".", 1)[-1].lower()
    cross = "Cross" in type(m).__name__ or name in _CROSS_NAMES or vars(m).get("is_cross_attention") is True
    window, chunked = (0, False) if cross else _window(m, config)
    sinks = isinstance(getattr(m, "sinks", None), torch.nn.Parameter)
    if cross:
        kind = "cross"
    elif window:
        kind = "chunked_local" if chunked else "sliding_window"
    else:
        kind = "grouped_query" if kv < heads else "full"
    return CacheSpec(path, kind, heads=int(heads), kv_heads=int(kv), key_dim=int(head_dim),
                     value_dim=int(_attr(m, "v_head_dim", default=head_dim)), window=int(window),
                     sinks=sinks, shards=int(kv))


def classify_mixer(path: str, module: torch.nn.Module, config=None) -> CacheSpec | None:
    """The cache of one mixing module, or None when its attributes and config do not say.

    >>> import transformers
    >>> cfg = transformers.MistralConfig(num_hidden_layers=1, hidden_size=64, num_attention_heads=4,
    ...                                  num_key_value_heads=2, sliding_window=32)
    >>> attn = transformers.MistralForCausalLM(cfg).model.layers[0].self_attn
    >>> classify_mixer("self_attn", attn, cfg).describe()
    'swa32 h4/kv2/d16'
    """
    config = _config(module, config)
    state = _state_space(path, module) or _linear_attention(path, module)
    if state is not None:
        return state
    latent, rope = _attr(module, "kv_lora_rank"), _attr(module, "qk_rope_head_dim")
    if latent and rope:
        heads, _, _ = _heads(module, config)
        return CacheSpec(path, "multi_latent", heads=int(heads or 0), kv_heads=1, key_dim=int(latent + rope),
                         latent_dim=int(latent), rope_dim=int(rope), shards=1)
    return _softmax_attention(path, module, config)


def classify_model(model: torch.nn.Module) -> dict[str, tuple[str, CacheSpec | None]]:
    """Module path -> (class name, cache or None) for every mixing module of `model`.

    Each module is read with its own config only: a module that carries neither attention
    attributes nor a config (a custom kernel wrapper) is not guessed from the model's config.
    """
    return {path: (type(m).__name__, classify_mixer(path, m)) for path, m in mixing_modules(model)}


def missing_kind_error(model_name: str, path: str, class_name: str) -> UserError:
    """The one-line refusal for a mixing module whose cache neither ops nor config tell."""
    return UserError(
        f"cannot classify the attention of module '{path}' ({class_name}) in {model_name}: no attention "
        f"or state-space op was traced in it and neither its attributes nor the config give its heads, "
        f"head size or state size, so its KV cache is unknown; use an attention implementation the "
        f"planner traces (sdpa, eager, flex) or a transformers model class")
