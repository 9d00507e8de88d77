"""The schema a model config (a Hugging Face config.json, or the values a plan records) must meet before the
planner builds a model from it: no silent defaults for what a model needs, sizes that make sense, bounds that
keep planning finite.

- `model_type` names a transformers model type; a multimodal config's `text_config` is checked as its own.
- Required (when the model family has the field, under its own name, e.g. GPT-2's `n_embd` for `hidden_size`):
  hidden size, layers, attention heads, vocabulary, MLP width (`intermediate_size` / `ffn_dim`); for mixture-of-
  experts families also the expert count, experts per token and the expert MLP width. transformers would
  otherwise fill them with its defaults (a 7B Llama for `{"model_type": "llama"}`).
- Every size present is a positive integer within `LIMITS` (e.g. at most 256 layers: the largest published
  models have 126; beyond that planning would take minutes); every number is finite; heads divide evenly
  (KV heads divide the heads; without `head_dim` the heads divide the hidden size); experts per token do not
  exceed the experts; the activation is one transformers knows.
Each refusal is one `UserError` line naming the field.

>>> check_config_values({"model_type": "llama"}, "config.json")
Traceback (most recent call last):
ir.errors.UserError: config.json: missing hidden_size, intermediate_size, num_attention_heads, ...
"""

from __future__ import annotations

import difflib
import inspect
import json
import math
from collections.abc import Mapping
from pathlib import Path

from ir.errors import UserError

LIMITS = {  # field -> the largest value accepted (published models stay far below)
    "num_hidden_layers": 256, "hidden_size": 131_072, "intermediate_size": 1_048_576, "ffn_dim": 1_048_576,
    "n_inner": 1_048_576, "moe_intermediate_size": 1_048_576, "num_attention_heads": 1024,
    "num_key_value_heads": 1024, "head_dim": 4096, "vocab_size": 4_194_304,
    "max_position_embeddings": 67_108_864, "num_local_experts": 4096, "num_experts": 4096,
    "n_routed_experts": 4096, "num_experts_per_tok": 4096, "image_size": 8192, "patch_size": 8192,
    "num_channels": 64, "embedding_size": 131_072, "word_embed_proj_dim": 131_072, "type_vocab_size": 1024,
}
REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "intermediate_size", "ffn_dim")
EXPERT_COUNTS = ("num_local_experts", "num_experts", "n_routed_experts")
EXPERT_REQUIRED = ("num_experts_per_tok", "moe_intermediate_size")
ACTIVATIONS = ("hidden_act", "activation_function", "hidden_activation")
MAX_CONFIG_BYTES = 16 * 2**20  # a config.json is kilobytes; anything this large is not one


def read_config_json(file: Path) -> dict:
    """The checked JSON object of a config.json file (at most MAX_CONFIG_BYTES); UserError naming the problem."""
    try:
        with open(file, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise UserError(f"cannot read {file}: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise UserError(f"{file}: over {MAX_CONFIG_BYTES // 2**20} MB, which no config.json is; give the model's config")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise UserError(f"{file}: not valid JSON ({exc}); give a Hugging Face config.json") from None
    if not isinstance(data, dict) or "model_type" not in data:
        raise UserError(f"{file}: no 'model_type' key; give a Hugging Face config.json")
    check_config_values(data, str(file))
    return data


def check_config_values(values, where: str, require: bool = True) -> None:
    """UserError (one line, naming the field) unless `values` (a config.json's object) meets the module's schema;
    `require=False` checks only the values present (a built-in preset's, whose class defaults are intended)."""
    if not isinstance(values, Mapping):
        raise UserError(f"{where}: a model config is a JSON object, got {type(values).__name__}")
    _finite(values, where)
    cls = _config_class(values.get("model_type"), where, values.get("architectures"))
    text = getattr(cls, "sub_configs", {}).get("text_config")
    if text is not None:
        sub = values.get("text_config")
        if not isinstance(sub, Mapping):
            raise UserError(f"{where}: a {values['model_type']} config needs a text_config object with the language "
                            f"model's sizes")
        _check_family(sub, _sub_class(sub, text, where), f"{where}: text_config", require)
        return
    _check_family(values, cls, where, require)


def _config_class(model_type, where: str, architectures=None):
    """The transformers config class of `model_type`; for a model type transformers does not know, the config
    class of the model class its `architectures` names (a checkpoint whose own type needs remote code, e.g. Kimi
    K2's 'kimi_k2' with ['DeepseekV3ForCausalLM'], is read that way by `ir.hf_models`)."""
    import transformers
    from transformers import CONFIG_MAPPING

    if not isinstance(model_type, str) or not model_type:
        raise UserError(f"{where}: no 'model_type' string; give a Hugging Face config.json (e.g. \"model_type\": "
                        f"\"llama\")")
    for name in architectures if model_type not in CONFIG_MAPPING and isinstance(architectures, list) else []:
        model = getattr(transformers, name, None) if isinstance(name, str) else None
        config_class = getattr(model, "config_class", None) if isinstance(model, type) else None
        if isinstance(config_class, type) and issubclass(config_class, transformers.PretrainedConfig):
            return config_class
    if model_type not in CONFIG_MAPPING:
        close = difflib.get_close_matches(model_type, list(CONFIG_MAPPING.keys()), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"{where}: unknown model_type {model_type!r} (transformers has no such model){hint}")
    return CONFIG_MAPPING[model_type]


def _sub_class(sub: Mapping, default, where: str):
    if "model_type" in sub:
        return _config_class(sub["model_type"], where + ".text_config")
    return default if isinstance(default, type) and hasattr(default, "model_type") else None


def _check_family(values: Mapping, cls, where: str, require: bool) -> None:
    params = _parameters(cls)
    names = {canonical: getattr(cls, "attribute_map", {}).get(canonical, canonical) for canonical in LIMITS}

    def given(canonical: str):
        for key in (canonical, names.get(canonical, canonical)):
            if key in values:
                return key, values[key]
        return None, None

    required = [c for c in REQUIRED if names[c] in params or c in params]
    experts = [c for c in EXPERT_COUNTS if names[c] in params or c in params]
    if experts:
        required += [experts[0]] if not any(given(e)[0] for e in experts) else []
        required += [c for c in EXPERT_REQUIRED if names[c] in params or c in params]
    missing = sorted(names[c] for c in required if given(c)[0] is None)
    if missing and require:
        kind = values.get("model_type") or getattr(cls, "model_type", "this")
        raise UserError(f"{where}: missing {', '.join(missing)} (a {kind} config needs them; transformers would "
                        f"fill in defaults of another model)")
    for canonical, limit in LIMITS.items():
        key, value = given(canonical)
        if key is not None and value is not None:
            _size(value, key, limit, where)
    _relations({c: given(c)[1] for c in LIMITS}, where)
    _activation(values, where)
    _vision(values, where)


def _parameters(cls) -> set[str]:
    if cls is None:
        return set(REQUIRED)
    try:
        return set(inspect.signature(cls.__init__).parameters)
    except (TypeError, ValueError):
        return set(REQUIRED)


def _size(value, key: str, limit: int, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{where}: {key} must be a positive integer, got {value!r}")
    if value < 1:
        raise UserError(f"{where}: {key} must be a positive integer, got {value}")
    if value > limit:
        raise UserError(f"{where}: {key} {value:,} is above the {limit:,} this planner accepts (published models "
                        f"stay well below); check the config")


def _relations(v: dict, where: str) -> None:
    heads, kv, hidden = v["num_attention_heads"], v["num_key_value_heads"], v["hidden_size"]
    if heads and kv and heads % kv:
        raise UserError(f"{where}: num_key_value_heads {kv} does not divide num_attention_heads {heads}")
    if heads and hidden and not v["head_dim"] and hidden % heads:
        raise UserError(f"{where}: hidden_size {hidden} is not a multiple of num_attention_heads {heads} (and no "
                        f"head_dim is given)")
    experts = v["num_local_experts"] or v["num_experts"] or v["n_routed_experts"]
    if experts and v["num_experts_per_tok"] and v["num_experts_per_tok"] > experts:
        raise UserError(f"{where}: num_experts_per_tok {v['num_experts_per_tok']} exceeds the {experts} experts")


def _activation(values: Mapping, where: str) -> None:
    from transformers.activations import ACT2FN

    for key in ACTIVATIONS:
        if key in values and values[key] is not None and (not isinstance(values[key], str) or values[key] not in ACT2FN):
            shown = values[key] if isinstance(values[key], str) else repr(values[key])
            raise UserError(f"{where}: unknown activation {key}={shown!r}; transformers knows "
                            f"{', '.join(sorted(ACT2FN))}")


def _vision(values: Mapping, where: str) -> None:
    for key in ("depths", "hidden_sizes"):
        if key in values:
            items = values[key]
            if not isinstance(items, list) or not items:
                raise UserError(f"{where}: {key} must be a non-empty list of positive integers, got {items!r}")
            for item in items:
                _size(item, key, LIMITS["num_hidden_layers" if key == "depths" else "hidden_size"], where)
    if "depths" in values and sum(values["depths"]) > LIMITS["num_hidden_layers"]:
        raise UserError(f"{where}: depths add up to {sum(values['depths'])} layers, above the "
                        f"{LIMITS['num_hidden_layers']} this planner accepts")


def _finite(value, where: str, path: str = "", depth: int = 0) -> None:
    if depth > 16:
        raise UserError(f"{where}: nested too deeply at {path or 'the top'}")
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{where}: {path or 'a value'} is {value}; every number must be finite")
    if isinstance(value, Mapping):
        for key, item in value.items():
            _finite(item, where, f"{path}.{key}" if path else str(key), depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _finite(item, where, f"{path}[{i}]", depth + 1)
