"""Weights for a stage that was built on the meta device and sharded: after `to_empty` each rank fills
only the shards it keeps, from one of

- a Hugging Face checkpoint folder (`--checkpoint DIR`, `*.safetensors` as `save_pretrained` writes
  them): torch.distributed.checkpoint's `HuggingFaceStorageReader` reads each rank's slices of the
  tensors straight into its DTensor shards; Mixtral experts (stored per expert, `block_sparse_moe.
  experts.E.w1/w2/w3`, or fused) are read for this rank's experts only;
- the seeded full model (`--init seeded`, the default: every rank builds the whole model on CPU with
  the same seed and keeps its shards; small models and tests, equal to the single-process model);
- a local random init (`--init local`): normal(0, initializer_range) weights and unit norms, drawn per
  shard from a generator seeded by (seed, parameter, shard coordinate), so replicas agree and no rank
  ever holds more than its shards (training from scratch at scale).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import torch
from torch import nn

from .base import PlanError, hf_name, is_sharded, stage_param_name
from .ep import ExpertShard
from .model import build_model, reset_rotary

LEGACY_NAMES = ((".mlp.gate.", ".block_sparse_moe.gate."),)  # transformers >= 5 name, the checkpoints' name


def copy_into(param: torch.Tensor, full: torch.Tensor) -> None:
    """Copy this rank's shard of `full` (the whole tensor) into `param` (a DTensor shard or a plain tensor);
    no communication: every rank slices its own part."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    with torch.no_grad():
        if isinstance(param, DTensor):
            local = distribute_tensor(full.to(param.device, param.dtype), param.device_mesh, param.placements,
                                      src_data_rank=None).to_local()
            param.to_local().copy_(local)
        else:
            param.copy_(full)


def expert_params(model: nn.Module) -> dict[int, tuple[ExpertShard, str, str]]:
    """id(parameter) -> (its ExpertShard, parameter name, module path) for every expert slice."""
    found = {}
    for path, module in model.named_modules():
        if isinstance(module, ExpertShard):
            for name, p in module.named_parameters(recurse=False):
                found[id(p)] = (module, name, path)
    return found


def load_seeded(model: nn.Module, spec: dict, seed: int) -> None:
    """Fill the shards from the seeded full model built on CPU (`build_model(spec, seed=seed)`)."""
    full = build_model(spec, torch.float32, "cpu", seed)
    state = dict(full.state_dict())
    experts = expert_params(model)
    for name, p in model.named_parameters():
        key = hf_name(stage_param_name(name))
        if id(p) in experts:
            module, pname, path = experts[id(p)]
            base = hf_name(stage_param_name(path))
            pieces = module.local_pieces(state[f"{base}.gate_up_proj"], state[f"{base}.down_proj"])
            copy_into(p, pieces[pname])
        else:
            copy_into(p, state[key])


def _shard_coordinate(param: torch.Tensor) -> tuple[int, ...]:
    from torch.distributed.tensor import DTensor

    if not isinstance(param, DTensor):
        return ()
    coord = param.device_mesh.get_coordinate() or []
    return tuple(int(c) if is_sharded(place) else -1 for c, place in zip(coord, param.placements))


def init_local(model: nn.Module, spec: dict, seed: int) -> None:
    """Random init of each rank's shards (module docstring): matrices ~ normal(0, initializer_range),
    vectors (norm weights) = 1."""
    from torch.distributed.tensor import DTensor

    std = float((spec.get("values") or {}).get("initializer_range", 0.02))
    experts = expert_params(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            local = p.to_local() if isinstance(p, DTensor) else p
            if p.dim() < 2:
                local.fill_(1.0)
                continue
            tag = (hf_name(stage_param_name(name)), _shard_coordinate(p))
            if id(p) in experts:
                module = experts[id(p)][0]
                tag += (module.index, module.tp_index)
            gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(repr(tag).encode()))
            local.copy_(torch.randn(local.shape, generator=gen) * std)


def checkpoint_keys(folder: Path) -> dict[str, Path]:
    """Tensor name -> safetensors file of a checkpoint folder (headers only are read)."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise PlanError(f"checkpoint {folder} holds no *.safetensors files; pass a folder written by save_pretrained")
    keys = {}
    for file in files:
        with safe_open(str(file), framework="pt") as fh:
            keys.update(dict.fromkeys(fh.keys(), file))
    return keys


def _resolve(key: str, keys: dict, folder: Path, tied: bool) -> str:
    if key in keys:
        return key
    for new, old in LEGACY_NAMES:
        if new in key and key.replace(new, old) in keys:
            return key.replace(new, old)
    if key == "lm_head.weight" and tied and "model.embed_tokens.weight" in keys:
        return "model.embed_tokens.weight"
    raise PlanError(f"checkpoint {folder} has no tensor {key}; pass the folder of this plan's model")


def _read(keys: dict, key: str) -> torch.Tensor:
    from safetensors import safe_open

    with safe_open(str(keys[key]), framework="pt") as fh:
        return fh.get_tensor(key)


def _expert_tensors(keys: dict, base: str, module: ExpertShard, folder: Path) -> dict[str, torch.Tensor]:
    """This rank's expert slices under `base` (e.g. model.layers.0.mlp.experts), from fused tensors or
    from per-expert w1 (gate), w3 (up), w2 (down) matrices; only this rank's experts are read."""
    lo, hi = module.first, module.first + module.per_rank
    if f"{base}.gate_up_proj" in keys:
        gate_up, down = _read(keys, f"{base}.gate_up_proj"), _read(keys, f"{base}.down_proj")
        return module.local_pieces(gate_up, down)
    legacy = base.replace(".mlp.experts", ".block_sparse_moe.experts")
    if f"{legacy}.{lo}.w1.weight" not in keys:
        raise PlanError(f"checkpoint {folder} has no experts {base}.gate_up_proj nor {legacy}.{lo}.w1.weight; pass "
                        f"the folder of this plan's model")
    gate_up = torch.stack([torch.cat([_read(keys, f"{legacy}.{e}.w1.weight"), _read(keys, f"{legacy}.{e}.w3.weight")])
                           for e in range(lo, hi)])
    down = torch.stack([_read(keys, f"{legacy}.{e}.w2.weight") for e in range(lo, hi)])
    return module.local_pieces(gate_up, down, all_experts=False)


def load_hf_checkpoint(model: nn.Module, folder: str, tied: bool) -> None:
    """Read this rank's shards from a Hugging Face safetensors folder (module docstring)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    path = Path(folder)
    if not path.is_dir():
        raise PlanError(f"checkpoint folder {folder} does not exist; pass a folder written by save_pretrained")
    keys = checkpoint_keys(path)
    experts = expert_params(model)
    dense, done = {}, set()
    for name, p in model.named_parameters():
        if id(p) not in experts:
            dense[_resolve(hf_name(stage_param_name(name)), keys, path, tied)] = p
            continue
        module, pname, mpath = experts[id(p)]
        if (mpath, pname) not in done:
            pieces = _expert_tensors(keys, hf_name(stage_param_name(mpath)), module, path)
            for other in ("gate_up_proj", "down_proj"):
                copy_into(getattr(module, other), pieces[other])
                done.add((mpath, other))
    dcp.load(dense, storage_reader=HuggingFaceStorageReader(str(path)))


def materialise(model: nn.Module, spec: dict, device: torch.device, init: str, seed: int,
                checkpoint: str | None) -> None:
    """Allocate this rank's shards on `device` and fill them (module docstring); rotary buffers recomputed."""
    model.to_empty(device=device)
    if checkpoint:
        tied = bool((spec.get("values") or {}).get("tie_word_embeddings"))
        load_hf_checkpoint(model, checkpoint, tied)
    elif init == "seeded":
        load_seeded(model, spec, seed)
    else:
        init_local(model, spec, seed)
    reset_rotary(model)
