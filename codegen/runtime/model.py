"""The model of a plan and the pieces a rank keeps of it: pipeline stages and interleaved chunks.

Stage s of a plan holds the embedding if it starts at graph layer 0, blocks `model.layers.i`, and the
head (final norm + lm_head) if it ends at the last graph layer. Models are built on the meta device
(`build_model(..., device="meta")`): no rank ever holds more than the shards it keeps, unless
`--init seeded` asks for the seeded full model (small models, tests).

>>> stage_blocks({"layers": [0, 3]}, 4)
(range(0, 2), True, False)
"""

from __future__ import annotations

import importlib

import torch
from torch import nn

from .base import PlanError


def build_config(spec: dict):
    """The transformers config of the plan's model spec (preset values or a config.json's content)."""
    import transformers

    if spec["kind"] == "factory":
        return None
    cls = getattr(transformers, spec["config_class"] or "", None)
    config = cls(**spec["values"]) if cls else transformers.AutoConfig.for_model(**spec["values"])
    config._attn_implementation = "sdpa"  # causal without a mask tensor; works with DTensor TP
    return config


def build_model(spec: dict, dtype: torch.dtype, device: str = "meta", seed: int | None = None) -> nn.Module:
    """The full model in `dtype` on `device`; with `seed`, `torch.manual_seed(seed)` then the class's own init
    (the seeded model every rank of a test run agrees on)."""
    if seed is not None:
        torch.manual_seed(seed)
    if spec["kind"] == "factory":
        module_name, _, attr = spec["ref"].partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise PlanError(f"cannot import factory '{spec['ref']}': {exc}; put its module on PYTHONPATH") from None
        with torch.device(device):
            model = factory()
        model.config._attn_implementation = "sdpa"
        return model.to(dtype)
    import transformers

    config = build_config(spec)
    with torch.device(device):
        model = getattr(transformers, spec["architecture"])(config)
    return model.to(dtype)


class Stage(nn.Module):
    """One pipeline stage cut from a Hugging Face decoder LM; keeps module names of the original.

    Parameter `layers.3.mlp.up_proj.weight` is `model.layers.3.mlp.up_proj.weight` of the full model
    (see `base.hf_name`). `forward(x)` takes token ids on the first stage, hidden states elsewhere.
    """

    def __init__(self, model: nn.Module, blocks: range, embed: bool, head: bool):
        super().__init__()
        inner = model.model
        self.embed_tokens = inner.embed_tokens if embed else None
        self.layers = nn.ModuleDict({str(i): inner.layers[i] for i in blocks})
        self.rotary_emb = inner.rotary_emb
        self.norm = inner.norm if head else None
        self.lm_head = model.lm_head if head else None
        self.seq_shards = 1  # sequence parallelism: hidden states hold 1/tp of the positions

    def forward(self, x: torch.Tensor, cache=None, past: int = 0) -> torch.Tensor:
        h = self.embed_tokens(x) if self.embed_tokens is not None else x
        pos = torch.arange(past, past + h.shape[1] * self.seq_shards, device=h.device).unsqueeze(0)
        pe = self.rotary_emb(h, pos)
        for layer in self.layers.values():
            out = layer(h, position_ids=pos, cache=cache, use_cache=cache is not None, position_embeddings=pe)
            h = out[0] if isinstance(out, tuple) else out
        if self.lm_head is not None:
            h = self.lm_head(self.norm(h))
        return h


class ChunkedStage(nn.Module):
    """The v model chunks (each a `Stage`) one pipeline rank runs with interleaved 1F1B.

    Parameter names are `chunks.<c>.<stage name>`; `base.stage_param_name` strips the prefix.
    """

    def __init__(self, chunks: list[nn.Module]):
        super().__init__()
        self.chunks = nn.ModuleList(chunks)


def chunk_modules(model: nn.Module) -> list[nn.Module]:
    """The stage modules of a rank: its chunks with interleaving, else the model itself."""
    return list(model.chunks) if isinstance(model, ChunkedStage) else [model]


def stage_blocks(stage: dict, num_blocks: int) -> tuple[range, bool, bool]:
    """Blocks, has-embedding, has-head of a plan stage (or chunk) with graph layers [a, b)."""
    a, b = stage["layers"]
    return range(max(a, 1) - 1, min(b, num_blocks + 1) - 1), a == 0, b == num_blocks + 2


def cut_stages(model: nn.Module, stage: dict, num_blocks: int) -> list[Stage]:
    """This rank's Stage modules of `model`: one per interleaved chunk of the plan stage, else one."""
    parts = []
    for layers in stage.get("chunks") or [stage["layers"]]:
        blocks, embed, head = stage_blocks({"layers": layers}, num_blocks)
        parts.append(Stage(model, blocks, embed, head))
    return parts


def reset_rotary(model: nn.Module) -> None:
    """Recompute the rotary embeddings' frequency buffers (not in any state dict, garbage after
    `to_empty`) from the module's own config, as its constructor does, into the existing buffers."""
    for module in model.modules():
        if hasattr(module, "inv_freq") and hasattr(module, "config"):
            fresh = type(module)(config=module.config)  # built on CPU: a handful of frequencies
            with torch.no_grad():
                for name, buf in fresh.named_buffers(recurse=False):
                    getattr(module, name).copy_(buf)
