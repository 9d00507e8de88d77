"""Build Hugging Face transformers models from configs on the meta device (never any weights).

Also decides what a model consumes (token ids or pixels) and whether its attention is causal.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
from pathlib import Path

import torch

from ir.config_checks import read_config_json
from ir.errors import UserError

log = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32,
          "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def load_config_file(path: str | Path):
    """A transformers config from a `config.json` file or a folder holding one."""
    import transformers

    file = Path(path)
    if file.is_dir():
        file = file / "config.json"
    if not file.is_file():
        raise UserError(f"config file not found: {file} (give a config.json or a folder holding one)")
    data = read_config_json(file)  # bounded read, JSON, the config schema (ir.config_checks)
    try:
        return transformers.AutoConfig.for_model(**data)
    except Exception as exc:  # the user's config: any refusal of transformers is theirs to fix
        config = _config_by_architecture(data)
        if config is None:
            raise UserError(f"{file}: transformers cannot read this config ({_first_line(exc)}); give a "
                            f"config.json whose model_type or architectures transformers knows") from None
        log.info("%s: model_type %r unknown to transformers; read as %s (its architectures entry)",
                 file, data["model_type"], type(config).__name__)
        return config


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]


def _config_by_architecture(data: dict):
    """A config of the class `architectures` names, for checkpoints whose own model_type needs remote
    code (Kimi K2 publishes model_type 'kimi_k2' with architectures ['DeepseekV3ForCausalLM'])."""
    import transformers

    for name in data.get("architectures") or []:
        cls = getattr(transformers, name, None) if isinstance(name, str) else None
        config_class = getattr(cls, "config_class", None)
        if config_class is None:
            continue
        values = {k: v for k, v in data.items() if k not in ("model_type", "auto_map")}
        try:
            return config_class(**values)
        except Exception:  # transformers' validation errors are not all ValueErrors
            return None
    return None


def model_class(config):
    """The transformers class named by `config.architectures`, else the causal-LM/base auto class."""
    import transformers

    for name in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, name, None) if isinstance(name, str) else None
        if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel):  # a model class, nothing else
            return cls
    for auto in (transformers.AutoModelForCausalLM, transformers.AutoModelForImageClassification,
                 transformers.AutoModel):
        mapping = getattr(auto, "_model_mapping", {})
        if type(config) in mapping:
            return mapping[type(config)]
    raise UserError(f"no transformers model class for model_type '{config.model_type}'")


def build_on_meta(config, dtype: torch.dtype = torch.bfloat16) -> torch.nn.Module:
    """Instantiate the model of `config` on the meta device in `dtype`, in eval mode.

    A config asking for flex attention is built with sdpa (or eager, where the model has no sdpa
    path): flex attention does not run on meta tensors, and the attention it computes, with its
    mask from the config, is the same (capture reads windows and sinks from the modules).
    """
    cls = model_class(config)
    if getattr(config, "_attn_implementation", None) == "flex_attention":
        config = copy.deepcopy(config)
        config._attn_implementation = "sdpa" if getattr(cls, "_supports_sdpa", False) else "eager"
        log.info("%s: flex attention captured as %s on meta", cls.__name__, config._attn_implementation)
    with torch.device("meta"), default_dtype(dtype):
        model = cls(config)
    return model.eval()


def is_vision(config) -> bool:
    return hasattr(config, "num_channels") and not hasattr(config, "vocab_size")


def is_causal(model: torch.nn.Module, config) -> bool:
    name = type(model).__name__
    if getattr(config, "is_encoder_decoder", False):
        return False
    return bool(getattr(config, "is_decoder", False)) or "CausalLM" in name or "LMHead" in name


def image_size(config) -> int:
    size = getattr(config, "image_size", 224)
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def example_inputs(model: torch.nn.Module, config, batch: int, seq_len: int) -> tuple[tuple, dict]:
    """Meta example inputs: token ids [batch, seq_len] or pixels [batch, C, H, W]."""
    params = inspect.signature(model.forward).parameters
    if is_vision(config):
        size = image_size(config)
        dtype = _float_params(model) or torch.get_default_dtype()
        pixels = torch.empty(batch, config.num_channels, size, size, device="meta", dtype=dtype)
        return (), {"pixel_values": pixels}
    kwargs = {"input_ids": torch.zeros(batch, seq_len, dtype=torch.long, device="meta")}
    if "use_cache" in params:
        kwargs["use_cache"] = False
    return (), kwargs


def _float_params(model: torch.nn.Module):
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return None
