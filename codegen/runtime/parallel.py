"""Parallelising a rank's stage: DeviceMesh, tensor and sequence parallelism, recomputation, data
parallelism (FSDP2 per block with a mixed-precision policy, or DDP) and pipeline schedules.

Every function here works on meta modules as well as materialised ones, so a stage is sharded before
any weight exists (program.build_stage materialises it afterwards); only DDP, which broadcasts weights
as it wraps, comes after materialisation (`wrap_ddp`).

Sequence parallelism (Korthikanti et al. 2022, Sec. 4.2.2) with DTensor, the plan of torchtitan's llama
`apply_tp`: norms run on sequence shards (`SequenceParallel`), the attention and MLP inputs are
all-gathered (`PrepareModuleInput` Shard(1) -> Replicate), the row-wise projections reduce-scatter to
sequence shards (`output_layouts=Shard(1)`), the vocabulary-parallel embedding reduce-scatters its output
and the head all-gathers its input. q/k/v heads and grouped k/v heads are split column-wise as without it.

Interleaved 1F1B (Narayanan et al. 2021, Sec. 2.2.2): chunk c of pipeline rank s is virtual stage
c * pp + s of pp * v (Megatron-LM's round-robin, what torch's ScheduleInterleaved1F1B expects).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import PlanError
from .model import ChunkedStage, Stage, chunk_modules


def build_mesh(plan: dict, device_type: str):
    """DeviceMesh (pp, dp, tp) whose entries are the plan's global ranks."""
    from torch.distributed.device_mesh import DeviceMesh

    ranks = [stage["ranks"] for stage in plan["stages"]]
    return DeviceMesh(device_type, torch.tensor(ranks, dtype=torch.int), mesh_dim_names=("pp", "dp", "tp"))


def _has_gated_mlp(layer: nn.Module) -> bool:
    return all(hasattr(layer.mlp, p) for p in ("gate_proj", "up_proj", "down_proj"))


def tp_plan(stage: Stage, heads: int, kv_heads: int, tp: int) -> dict:
    """Megatron-style TP: q/k/v and gate/up column-wise, o/down row-wise, lm_head column-wise gathered.

    Grouped-query attention: q heads and k/v heads must both split evenly over tp (each rank keeps
    heads/tp query heads and kv_heads/tp key/value heads, the same group ratio as the full model).
    """
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    if heads % tp or kv_heads % tp:
        raise PlanError(f"tp={tp} must divide the attention heads ({heads}) and key/value heads ({kv_heads}); "
                        f"re-plan with --tp dividing {kv_heads}")
    plan = {}
    for name, layer in stage.layers.items():
        for proj in ("q_proj", "k_proj", "v_proj"):
            plan[f"layers.{name}.self_attn.{proj}"] = ColwiseParallel()
        plan[f"layers.{name}.self_attn.o_proj"] = RowwiseParallel()
        if _has_gated_mlp(layer):
            plan[f"layers.{name}.mlp.gate_proj"] = ColwiseParallel()
            plan[f"layers.{name}.mlp.up_proj"] = ColwiseParallel()
            plan[f"layers.{name}.mlp.down_proj"] = RowwiseParallel()
    if stage.lm_head is not None:
        plan["lm_head"] = ColwiseParallel(output_layouts=Replicate())
    return plan


def sp_plan(stage: Stage) -> dict:
    """The sequence-parallel TP plan of a Stage (module docstring); heads were checked by `tp_plan`."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        RowwiseParallel,
        SequenceParallel,
    )

    plan = {}
    if stage.embed_tokens is not None:
        plan["embed_tokens"] = RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(1))
    for name, layer in stage.layers.items():
        p = f"layers.{name}"
        plan[f"{p}.input_layernorm"] = SequenceParallel()
        plan[f"{p}.self_attn"] = PrepareModuleInput(
            input_kwarg_layouts={"hidden_states": Shard(1)}, desired_input_kwarg_layouts={"hidden_states": Replicate()},
            use_local_output=True)
        for proj in ("q_proj", "k_proj", "v_proj"):
            plan[f"{p}.self_attn.{proj}"] = ColwiseParallel()
        plan[f"{p}.self_attn.o_proj"] = RowwiseParallel(output_layouts=Shard(1))
        plan[f"{p}.post_attention_layernorm"] = SequenceParallel()
        if not _has_gated_mlp(layer):
            raise PlanError(f"sequence parallelism needs gated MLPs (gate/up/down_proj); block {name} has "
                            f"{type(layer.mlp).__name__}; re-plan with sequence parallelism off")
        plan[f"{p}.mlp"] = PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),),
                                              use_local_output=True)
        plan[f"{p}.mlp.gate_proj"] = ColwiseParallel()
        plan[f"{p}.mlp.up_proj"] = ColwiseParallel()
        plan[f"{p}.mlp.down_proj"] = RowwiseParallel(output_layouts=Shard(1))
    if stage.lm_head is not None:
        plan["norm"] = SequenceParallel()
        plan["lm_head"] = ColwiseParallel(input_layouts=Shard(1), output_layouts=Replicate())
    return plan


def apply_tp(stage: Stage, tp_mesh, heads: int, kv_heads: int, sequence_parallel: bool = False) -> Stage:
    """Shard the stage over the tp mesh with DTensor `parallelize_module` (no-op at tp=1)."""
    from torch.distributed.tensor.parallel import parallelize_module

    if tp_mesh.size() == 1:
        return stage
    plan = tp_plan(stage, heads, kv_heads, tp_mesh.size())
    if sequence_parallel:
        plan = sp_plan(stage)
        stage.seq_shards = tp_mesh.size()
    return parallelize_module(stage, tp_mesh, plan)


def apply_recompute(model: nn.Module, mode: str) -> None:
    """Activation recomputation as planned (Korthikanti et al. 2022): "full" re-runs every decoder
    block in backward, "selective" only its attention; parameter names are unchanged."""
    if mode not in ("full", "selective"):
        return
    from torch.utils.checkpoint import checkpoint

    for layer in (layer for part in chunk_modules(model) for layer in part.layers.values()):
        target = layer if mode == "full" else layer.self_attn
        forward = target.forward

        def recomputed(*args, _forward=forward, **kwargs):
            return checkpoint(_forward, *args, use_reentrant=False, **kwargs)

        target.forward = recomputed


def mixed_precision(compute: torch.dtype):
    """FSDP2's policy: parameters gathered in the compute dtype, gradients reduced in fp32 (the fp32
    master weights and optimizer states stay sharded)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if compute == torch.float32:
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32)


def uses_ddp(mesh, zero_stage: int) -> bool:
    """ZeRO-0 without tp replicates the stage (DDP); any other data parallelism shards it (FSDP2)."""
    return mesh["dp"].size() > 1 and zero_stage == 0 and mesh["tp"].size() == 1


def shard_blocks(part: nn.Module, dp_mesh, reshard: bool, policy, before_block=None) -> nn.Module:
    """FSDP2 `fully_shard` on every decoder block, on the embedding and on the head (final norm + lm_head),
    then on the stage: each unit's parameters are gathered only while it runs (with reshard, the plan's
    per-layer ZeRO-3 gathering; torchtitan's units). `before_block(layer)` shards a block's parts first
    (experts). The head's unit stays gathered after forward: its backward comes next."""
    from torch.distributed.fsdp import fully_shard

    if getattr(part, "embed_tokens", None) is not None:
        fully_shard(part.embed_tokens, mesh=dp_mesh, reshard_after_forward=reshard, mp_policy=policy)
    for layer in part.layers.values():
        if before_block is not None:
            before_block(layer)
        fully_shard(layer, mesh=dp_mesh, reshard_after_forward=reshard, mp_policy=policy)
    if getattr(part, "lm_head", None) is not None:
        fully_shard([part.norm, part.lm_head], mesh=dp_mesh, reshard_after_forward=False, mp_policy=policy)
    return fully_shard(part, mesh=dp_mesh, reshard_after_forward=reshard, mp_policy=policy)


def apply_fsdp(model: nn.Module, mesh, zero_stage: int, compute: torch.dtype) -> nn.Module:
    """Data parallelism over mesh['dp'] with FSDP2 per block (unless `uses_ddp`: see `wrap_ddp`).

    ZeRO-1/2 map to reshard_after_forward=False (parameters stay gathered between forward and backward),
    ZeRO-3 to reshard_after_forward=True. Each interleaved chunk is its own FSDP root.
    """
    if mesh["dp"].size() == 1 or uses_ddp(mesh, zero_stage):
        return model
    policy = mixed_precision(compute)
    parts = [shard_blocks(part, mesh["dp"], zero_stage >= 3, policy) for part in chunk_modules(model)]
    if isinstance(model, ChunkedStage):
        model.chunks = nn.ModuleList(parts)
        return model
    return parts[0]


def wrap_ddp(model: nn.Module, mesh, zero_stage: int) -> nn.Module:
    """DDP over mesh['dp'] where the plan replicates the stage (after its weights exist)."""
    from torch.nn.parallel import DistributedDataParallel

    if not uses_ddp(mesh, zero_stage):
        return model
    if isinstance(model, ChunkedStage):  # each virtual stage is its own PipelineStage: wrap each
        model.chunks = nn.ModuleList(wrap_ddp(c, mesh, zero_stage) for c in model.chunks)
        return model
    # gradients as views of the reduction buckets: no second copy of them (ZeRO-0 keeps one, as planned)
    return DistributedDataParallel(model, process_group=mesh["dp"].get_group(), gradient_as_bucket_view=True)


def schedule_class(name: str, microbatches: int, stages: int):
    """The torch.distributed.pipelining schedule class of a plan's schedule name ("1f1b", "gpipe").

    1F1B needs at least as many microbatches as stages; with fewer, its order is GPipe's (all
    forwards, then all backwards), so GPipe runs it.
    """
    from torch.distributed.pipelining import Schedule1F1B, ScheduleGPipe

    classes = {"1f1b": Schedule1F1B, "gpipe": ScheduleGPipe}
    key = name.lower()
    if key not in classes:
        raise PlanError(f"schedule {name!r} needs virtual stages (chunks) in the plan; re-plan, or use one of "
                        f"{sorted(classes)}")
    return ScheduleGPipe if key == "1f1b" and microbatches < stages else classes[key]


def make_schedule(model: nn.Module, stage: int, stages: int, microbatches: int, schedule: str, pp_group,
                  device: torch.device, loss_fn):
    """The pipeline schedule of this rank's stage (None at pp=1): one PipelineStage, or one per
    interleaved chunk (virtual stage c * pp + s) under ScheduleInterleaved1F1B. Shapes are inferred
    from the first microbatch (the stages' dynamic mode)."""
    from torch.distributed.pipelining import PipelineStage, ScheduleInterleaved1F1B

    if stages == 1:
        return None
    if isinstance(model, ChunkedStage):
        total = stages * len(model.chunks)
        pipes = [PipelineStage(chunk, c * stages + stage, total, device, group=pp_group)
                 for c, chunk in enumerate(model.chunks)]
        return ScheduleInterleaved1F1B(pipes, n_microbatches=microbatches, loss_fn=loss_fn)
    pipe = PipelineStage(model, stage, stages, device, group=pp_group)
    return schedule_class(schedule, microbatches, stages)(pipe, n_microbatches=microbatches, loss_fn=loss_fn)
