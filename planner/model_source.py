"""Resolve a MODEL reference (preset, config.json path, pkg.module:factory or nn.Module) to a
meta-device module plus example inputs, ready for `ir.capture`; record how to rebuild it in a plan
(`model_record`) and rebuild it from such a record (`from_record`).

A `pkg.module:factory` reference is Python code: it is imported and run only when the caller says so
(`trust_model_code=True`, on the command line `--trust-model-code`), never because a plan file names it.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ir.config_checks import check_config_values
from ir.errors import UserError
from ir.hf_models import (
    DTYPES,
    build_on_meta,
    default_dtype,
    example_inputs,
    is_causal,
    is_vision,
    load_config_file,
)
from planner.presets import get_preset, preset_config

DEFAULT_SEQ_LEN = 2048


@dataclass
class ModelSource:
    """A model ready to capture: the module (on meta), example inputs and how to count tokens."""

    name: str
    module: torch.nn.Module
    args: tuple
    kwargs: dict
    seq_len: int | None  # None for models whose input has no sequence axis (vision)
    causal: bool
    config: dict = field(default_factory=dict)


_SUMMARY_KEYS = {  # ours: the transformers config attributes that carry it, first present wins
    "hidden_size": ("hidden_size",), "num_layers": ("num_hidden_layers",),
    "num_heads": ("num_attention_heads",), "num_kv_heads": ("num_key_value_heads",),
    "head_dim": ("head_dim",), "intermediate_size": ("intermediate_size",),
    "vocab_size": ("vocab_size",),
    "num_experts": ("num_local_experts", "num_experts", "n_routed_experts"),
    "experts_per_token": ("num_experts_per_tok",), "num_shared_experts": ("n_shared_experts",),
    "first_dense_layers": ("first_k_dense_replace",),
    "max_position_embeddings": ("max_position_embeddings",), "model_type": ("model_type",),
    "moe_intermediate_size": ("moe_intermediate_size",), "hidden_act": ("hidden_act",),
    "kv_lora_rank": ("kv_lora_rank",), "qk_rope_head_dim": ("qk_rope_head_dim",),
}


def summarize_config(config) -> dict:
    """The architecture numbers later passes need, under uniform names (absent ones omitted).

    Per-layer facts (attention kinds, windows, caches, MoE layers) are in the captured graph's
    layers, not here. `weight_quantization` is the config's published weight format
    (`ir.weight_formats`), `num_shared_experts` the always-active experts of an MoE layer.
    """
    out = {}
    for ours, theirs in _SUMMARY_KEYS.items():
        value = next((v for v in (getattr(config, t, None) for t in theirs) if v is not None), None)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            out[ours] = value
    if "num_heads" in out and "num_kv_heads" not in out:
        out["num_kv_heads"] = out["num_heads"]
    if "num_experts" in out and "num_shared_experts" not in out:
        shared = getattr(config, "shared_expert_intermediate_size", None) or getattr(config, "n_shared_experts", None)
        if shared or getattr(config, "model_type", "").startswith("llama4"):
            out["num_shared_experts"] = 1  # Qwen3-Next, Llama 4: one shared expert per MoE layer
    quant = getattr(config, "quantization_config", None)
    quant = quant.to_dict() if hasattr(quant, "to_dict") else quant
    if isinstance(quant, dict) and quant.get("quant_method"):
        out["weight_quantization"] = {k: quant[k] for k in ("quant_method", "weight_block_size", "fmt",
                                                            "modules_to_not_convert") if quant.get(k) is not None}
    dropouts = ("attention_dropout", "hidden_dropout", "hidden_dropout_prob", "attn_pdrop", "resid_pdrop", "dropout")
    out["dropout"] = max((float(getattr(config, k)) for k in dropouts
                          if isinstance(getattr(config, k, None), (int, float))), default=0.0)
    return out


def _check_shape(batch: int, seq_len: int | None, limit: int | None, name: str) -> None:
    if batch < 1:
        raise UserError(f"batch must be a positive integer, got {batch}")
    if seq_len is not None and seq_len < 1:
        raise UserError(f"sequence length must be a positive integer, got {seq_len}")
    if seq_len is not None and limit and seq_len > limit:
        raise UserError(f"sequence length {seq_len} exceeds {name}'s maximum of {limit} positions; "
                        f"use --seq-len <= {limit}")


def from_hf_config(config, name: str, batch: int, seq_len: int | None, dtype: str) -> ModelSource:
    """A ModelSource for a transformers config, built on meta."""
    try:
        module = build_on_meta(config, DTYPES[dtype])
    except UserError:
        raise
    except Exception as exc:  # the config is the user's: transformers refusing to build it is theirs
        raise UserError(f"transformers cannot build {name} from its config ({type(exc).__name__}: {exc}); check the "
                        f"config's sizes") from None
    limit = getattr(config, "max_position_embeddings", None)
    if is_vision(config):
        seq_len = None
    elif seq_len is None:
        seq_len = min(DEFAULT_SEQ_LEN, limit or DEFAULT_SEQ_LEN)
    _check_shape(batch, seq_len, limit, name)
    with default_dtype(DTYPES[dtype]):
        args, kwargs = example_inputs(module, config, batch, seq_len or 1)
    return ModelSource(name, module, args, kwargs, seq_len, is_causal(module, config),
                       summarize_config(config))


def _from_factory(ref: str, batch: int, seq_len: int | None, dtype: str) -> ModelSource:
    module_name, _, attr = ref.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"cannot import factory '{ref}': {exc}; check the module is on "
                        f"PYTHONPATH and defines {attr}") from None
    with torch.device("meta"), default_dtype(DTYPES[dtype]):
        made = factory()
    if isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], torch.nn.Module):
        module, inputs = made
        inputs = inputs if isinstance(inputs, tuple) else (inputs,)
        return ModelSource(ref, module.eval(), inputs, {}, seq_len, False, {})
    config = getattr(made, "config", None)
    if isinstance(made, torch.nn.Module) and config is not None and hasattr(config, "model_type"):
        return _hf_module(made, config, ref, batch, seq_len, dtype)
    raise UserError(f"factory '{ref}' must return a transformers model or (nn.Module, example_inputs)")


def _hf_module(module, config, name, batch, seq_len, dtype) -> ModelSource:
    limit = getattr(config, "max_position_embeddings", None)
    seq_len = None if is_vision(config) else (seq_len or min(DEFAULT_SEQ_LEN, limit or DEFAULT_SEQ_LEN))
    _check_shape(batch, seq_len, limit, name)
    with default_dtype(DTYPES[dtype]):
        args, kwargs = example_inputs(module, config, batch, seq_len or 1)
    return ModelSource(name, module.eval(), args, kwargs, seq_len, is_causal(module, config),
                       summarize_config(config))


def resolve(model, *, batch: int = 1, seq_len: int | None = None, dtype: str = "bf16",
            example_inputs: tuple | None = None, trust_model_code: bool = False) -> ModelSource:
    """Resolve a model reference; `example_inputs` is required for a bare nn.Module; a factory reference
    needs `trust_model_code` (it imports and runs the named code).

    >>> resolve("tiny-llama", seq_len=16).seq_len
    16
    """
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype '{dtype}'; use one of bf16, fp16, fp32")
    if isinstance(model, torch.nn.Module):
        if example_inputs is None:
            raise UserError("an nn.Module needs example_inputs=(tensor, ...) to be captured")
        inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
        return ModelSource(type(model).__name__, model.eval(), inputs, {}, seq_len, False, {})
    if not isinstance(model, str) or not model.strip():
        raise UserError(f"model must be a preset name, a config.json path or pkg.module:factory, got {model!r}")
    ref = model.strip()
    path = Path(ref)
    if ref.endswith(".json") or path.is_dir() or (path.exists() and path.is_file()):
        return from_hf_config(load_config_file(path), path.stem if path.is_file() else path.name,
                              batch, seq_len, dtype)
    if ":" in ref:
        if not trust_model_code:
            raise UserError(code_refusal(ref))
        return _from_factory(ref, batch, seq_len, dtype)
    preset = get_preset(ref)
    return from_hf_config(preset_config(preset), preset.name, batch, seq_len, dtype)


_HUB_ID = re.compile(r"huggingface\.co/([\w.-]+/[\w.-]+)")


def code_refusal(ref: str) -> str:
    """The one line that refuses to import a model factory the user did not explicitly trust."""
    return (f"model {ref!r} names Python code (module:function), which planning would import and run; pass "
            f"--trust-model-code (Python: trust_model_code=True) if you trust it, or give a preset or a config.json")


def _config_file(ref: str) -> Path | None:
    path = Path(ref)
    if ref.endswith(".json") or path.is_dir() or (path.exists() and path.is_file()):
        return path / "config.json" if path.is_dir() else path
    return None


def model_record(ref: str, summary: dict) -> dict:
    """How a plan rebuilds the model `ref` without running anything it names (`ir.plan.ModelSource`):
    preset values, a config file's values and the sha256 of its bytes, or (code) the reference only.
    `summary`: the captured graph's uniform config numbers (`summarize_config`)."""
    file = _config_file(ref)
    if file is not None:
        try:
            raw = file.read_bytes()
            values = json.loads(raw)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read the model config {file}: {exc}") from None
        archs = values.get("architectures") or [None]
        name = Path(ref).name if Path(ref).is_dir() else file.stem
        return {"kind": "config", "ref": ref, "name": name, "config_class": None, "architecture": archs[0],
                "values": values, "sha256": hashlib.sha256(raw).hexdigest(), "hub_id": None, "summary": summary}
    if ":" in ref:
        return {"kind": "module", "ref": ref, "name": ref, "config_class": None, "architecture": None, "values": None,
                "sha256": None, "hub_id": None, "summary": summary}
    preset = get_preset(ref)
    values = dict(preset.values)
    digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()
    hub = _HUB_ID.search(preset.source)
    return {"kind": "preset", "ref": ref, "name": preset.name, "config_class": preset.config_class,
            "architecture": preset.architecture, "values": values, "sha256": digest,
            "hub_id": hub.group(1) if hub else None, "summary": summary}


def record_identity(record: dict) -> str | None:
    """The graph-cache identity of a recorded model (the same as `graph_cache.model_identity` of its source)."""
    if record["kind"] == "config":
        return "config:" + record["sha256"]
    if record["kind"] == "preset":
        return f"preset:{record['name']}:{json.dumps(record['values'], sort_keys=True)}"
    return None


def check_record(record: dict):
    """UserError unless a plan's model record can be rebuilt safely: a preset names a transformers config class
    and its values are sizes within bounds; a config's values meet the config schema (`ir.config_checks`).
    Returns the preset's config class (None otherwise)."""
    import transformers

    where = f"the plan's model {record['name']!r}"
    if record["kind"] == "module":
        return None
    if not isinstance(record["values"], Mapping):
        raise UserError(f"{where} records no config values; re-run `planner plan`")
    if record["kind"] == "config":
        check_config_values(dict(record["values"]), where)
        return None
    config_class = getattr(transformers, record["config_class"] or "", None)
    if not (isinstance(config_class, type) and issubclass(config_class, transformers.PretrainedConfig)):
        raise UserError(f"{where} names {record['config_class']!r}, which is not a transformers config class; "
                        f"re-run `planner plan`")
    # a preset's values are those its class takes; its class defaults are intended
    check_config_values({**dict(record["values"]), "model_type": config_class.model_type}, where, require=False)
    return config_class


def from_record(record: dict, *, batch: int = 1, seq_len: int | None = None, dtype: str = "bf16",
                trust_model_code: bool = False) -> ModelSource:
    """Rebuild a recorded model (see `model_record`) on meta from the values the plan holds; a module reference
    runs only with `trust_model_code`."""
    import transformers

    if dtype not in DTYPES:
        raise UserError(f"unknown dtype '{dtype}'; use one of bf16, fp16, fp32")
    if record["kind"] == "module":
        if not trust_model_code:
            raise UserError(code_refusal(record["ref"]))
        return _from_factory(record["ref"], batch, seq_len, dtype)
    values = dict(record["values"])
    config_class = check_record(record)
    try:
        if record["kind"] == "preset":
            config = config_class(**values)
            config.architectures = [record["architecture"]]
        else:
            config = transformers.AutoConfig.for_model(**values)
    except Exception as exc:  # values read from a plan file: any refusal is the file's
        raise UserError(f"the plan's model {record['name']!r} cannot be rebuilt from its recorded config ({exc}); "
                        f"re-run `planner plan`") from None
    return from_hf_config(config, record["name"], batch, seq_len, dtype)
