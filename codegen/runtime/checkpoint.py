"""Training checkpoints with torch.distributed.checkpoint (DCP): `--save DIR` writes DIR/step-NNNNNNN
(every `--save-every` steps and at the end), `--resume PATH` continues from such a folder (or from the
newest complete one under PATH).

Each rank writes its own shards; DCP's metadata makes the checkpoint whole. Model tensors are keyed by
their Hugging Face names (`model.layers.3.mlp.up_proj.weight`), so a checkpoint does not depend on the
stage split, tp or FSDP layout it was written under and DCP reshards it on load. Expert slices (ep, and
tp within an expert) are keyed per slice (`...experts.gate_up_proj#ep1of2.tp0of1`): they resume under
the same ep and tp. Optimizer states sit beside each tensor (`optim/<name>/exp_avg`), with the step.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .base import PlanError, hf_name, stage_param_name
from .weights import expert_params


def model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Checkpoint key -> parameter (a DTensor shard or a tensor) of this rank's stage."""
    experts = expert_params(model)
    out = {}
    for name, p in model.named_parameters():
        key = hf_name(stage_param_name(name))
        if id(p) in experts:
            mod = experts[id(p)][0]
            key += f"#ep{mod.index}of{mod.ep}.tp{mod.tp_index}of{mod.tp}"
        out[key] = p
    return out


def train_state(model: nn.Module, opt, step: int) -> dict:
    """The DCP state of a step: model tensors, optimizer states of each tensor, the step number."""
    params = model_tensors(model)
    optim = {}
    for key, p in params.items():
        for name, value in opt.state.get(p, {}).items():
            if torch.is_tensor(value):
                optim[f"{key}/{name}"] = value
    return {"model": params, "optim": optim, "step": torch.tensor(step)}


def save(folder: str, step: int, model: nn.Module, opt) -> Path:
    """Write step `step`'s checkpoint (collective over all ranks)."""
    import torch.distributed.checkpoint as dcp

    path = Path(folder) / f"step-{step:07d}"
    dcp.save(train_state(model, opt, step), checkpoint_id=str(path))
    return path


def newest(path: str) -> Path:
    """`path` if it is a checkpoint, else its newest complete step-* folder."""
    folder = Path(path)
    if (folder / ".metadata").is_file():
        return folder
    steps = sorted(p for p in folder.glob("step-*") if (p / ".metadata").is_file()) if folder.is_dir() else []
    if not steps:
        raise PlanError(f"no checkpoint at {path} (a step-* folder with .metadata); pass a folder --save wrote")
    return steps[-1]


def _create_optimizer_states(model: nn.Module, opt) -> None:
    """One optimizer step at learning rate 0 on zero gradients: creates every state tensor without changing
    a weight (the resumed values then overwrite them)."""
    rates = [group["lr"] for group in opt.param_groups]
    for group in opt.param_groups:
        group["lr"] = 0.0
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    opt.zero_grad(set_to_none=True)
    for group, rate in zip(opt.param_groups, rates):
        group["lr"] = rate


def resume(path: str, model: nn.Module, opt) -> int:
    """Load model and optimizer states from a checkpoint (collective); returns the step to continue from."""
    import torch.distributed.checkpoint as dcp

    folder = newest(path)
    _create_optimizer_states(model, opt)
    state = train_state(model, opt, 0)
    try:
        dcp.load(state, checkpoint_id=str(folder))
    except Exception as exc:  # DCP raises CheckpointException with every rank's traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PlanError(f"cannot resume from {folder}: {first[:300]}; resume with the plan (ep, tp) it was saved "
                        f"under") from None
    return int(state["step"])
