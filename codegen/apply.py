"""`apply_plan`: parallelise a user's own Hugging Face decoder model by a plan inside a torchrun worker.

For users who keep their own training loop. It uses the same runtime helpers as the generated
run_plan.py (codegen/runtime.py): DeviceMesh (pp, dp, tp) over the plan's ranks, DTensor tensor
parallelism, FSDP2 / DDP data parallelism and expert parallelism (codegen/runtime_ep.py). With
pp > 1 the module is cut to this rank's stage and a `torch.distributed.pipelining` schedule is
returned for the loop to drive.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from codegen import runtime
from codegen.context import build_context
from ir.errors import UserError


@dataclass
class Applied:
    """What `apply_plan` made: the module to train, the mesh, this rank's coordinates, the schedule.

    `schedule` is None at pp=1; else call `schedule.step(x)` on stage 0, `schedule.step(target=y,
    losses=[])` on the last stage and `schedule.step()` in between (torch.distributed.pipelining).
    """

    module: nn.Module
    mesh: object
    stage: int
    dp_rank: int
    tp_rank: int
    schedule: object | None = None


def apply_plan(plan, module: nn.Module, mesh=None, train: bool = True) -> Applied:
    """Apply `plan` (a Plan or plan dict) to `module` (a Hugging Face decoder LM, full weights, this device).

    Call after `torch.distributed.init_process_group` in every rank of a torchrun job of the plan's
    world size. `mesh` may be a DeviceMesh with dims ("pp", "dp", "tp"); by default one is built
    from the plan's ranks.

    Example (in a torchrun worker of 2 ranks, for a tp=2 plan)::

        applied = apply_plan(planner.plan("tiny-llama", "2xcpu", "train", tp=2), model)
        loss = F.cross_entropy(applied.module(x).flatten(0, 1), y.flatten())
    """
    import torch.distributed as dist

    data = plan.to_dict() if hasattr(plan, "to_dict") else plan
    if (data.get("decision") or {}).get("kind") == "fleet":
        raise UserError("a fleet plan runs on serving engines, not in a torchrun worker; `planner codegen` writes "
                        "its launch scripts")
    rt = build_context(data)["runtime"]
    if rt["hetero_tp"]:
        raise UserError(f"the plan's stages use different tp ({rt['layout']}), which needs the generated program's "
                        f"own pipeline schedule; run `planner codegen` and its run_plan.py instead of apply_plan")
    if not dist.is_initialized():
        raise UserError("apply_plan runs inside a torchrun worker: call torch.distributed.init_process_group first")
    if dist.get_world_size() != rt["world_size"]:
        raise UserError(f"world size {dist.get_world_size()} does not match the plan's {rt['world_size']} ranks")
    device = next(module.parameters()).device
    mesh = mesh if mesh is not None else runtime.build_mesh(rt, device.type)
    s, d, t = (int(c) for c in mesh.get_coordinate())
    blocks, embed, head = runtime.stage_blocks(rt["stages"][s], rt["num_blocks"])
    try:
        stage = runtime.Stage(module, blocks, embed, head)
        ep_mesh = runtime.ep_mesh(rt, device.type) if rt["ep"] > 1 else None  # experts split over dp replicas
        runtime.shard_experts(stage, ep_mesh, rt["ep"], mesh["tp"])  # and sliced over tp
        stage = runtime.apply_tp(stage, mesh["tp"], rt["heads"], rt["kv_heads"])
        if ep_mesh is not None and train:
            stage = runtime.apply_ep_dp(stage, ep_mesh, mesh["dp"], rt["zero_stage"])
        else:
            stage = runtime.apply_dp(stage, mesh, rt["zero_stage"], train)
    except (runtime.PlanError, ValueError) as exc:
        raise UserError(str(exc)) from None
    applied = Applied(stage, mesh, s, d, t)
    if rt["pp"] > 1:
        from torch.distributed.pipelining import PipelineStage

        pipe = PipelineStage(stage, s, rt["pp"], device, group=mesh["pp"].get_group())
        cls = runtime.schedule_class(rt["schedule"], rt["microbatches"], rt["pp"])
        applied.schedule = cls(pipe, n_microbatches=rt["microbatches"], loss_fn=runtime.lm_loss if train else None)
    return applied
