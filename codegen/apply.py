"""`apply_plan`: parallelise a user's own Hugging Face decoder model by a plan inside a torchrun worker.

For users who keep their own training loop. It runs the runtime package of the generated programs
(codegen/runtime/): DeviceMesh (pp, dp, tp) over the plan's ranks, DTensor tensor parallelism (with
sequence parallelism where planned), activation recomputation as planned, FSDP2 per block or DDP,
expert parallelism, and `torch.distributed.pipelining` schedules for pipeline plans (1F1B, GPipe and
interleaved 1F1B over the plan's virtual stages). Plans whose stages differ in tp (mixed GPU types)
need the generated program's own schedule: `apply_plan` says so in one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from codegen.context import build_context
from codegen.runtime import base, ep, infer, parallel, program, train
from ir.errors import UserError


@dataclass
class Place:
    """This rank's place in the plan, in the shape the runtime's functions read (like program.Rank)."""

    mesh: object
    device: torch.device
    s: int
    d: int
    t: int
    pp: int
    dp: int
    tp: int
    ep: int
    dtype: torch.dtype
    ep_mesh: object = None
    hetero: bool = False
    manual_dp: bool = False
    autocast: torch.dtype | None = None
    schedule: object = None
    holders: int = field(init=False)

    def __post_init__(self):
        self.holders = self.dp * self.tp

    def peer(self, stage: int) -> int:
        return int(self.mesh.mesh[stage, self.d, self.t])


@dataclass
class Applied:
    """What `apply_plan` made: this rank's part of the model and the calls a training loop needs.

    - `step(x, y)`: forward and backward of one batch (this data-parallel replica's rows: `rows(batch)`),
      through the pipeline schedule when the plan has pp > 1; returns the mean loss on the last stage,
      None on the others. Call `optimizer.step()` after it (and `optimizer.zero_grad()` before).
    - `clip_grad_norm_(max_norm)`: the global gradient norm over all ranks and stages, clipped.
    - `forward(x)`: inference through the stages (point to point); the logits on the last stage, else None.
    - `parameters()`: this rank's parameters, for the optimizer.
    """

    module: nn.Module
    mesh: object
    stage: int
    dp_rank: int
    tp_rank: int
    schedule: object | None = None
    plan: dict = field(default_factory=dict, repr=False)
    place: Place | None = field(default=None, repr=False)

    @property
    def is_last_stage(self) -> bool:
        return self.stage == self.place.pp - 1

    def rows(self, batch: int) -> tuple[int, int]:
        """Rows [lo, hi) of a global batch that this rank's data-parallel replica trains on."""
        return base.split_rows(batch, self.place.dp, self.dp_rank)

    def parameters(self):
        return self.module.parameters()

    def step(self, x: torch.Tensor, y: torch.Tensor):
        return train.forward_backward(self.plan, self.place, self.module, x, y)

    def clip_grad_norm_(self, max_norm: float) -> float:
        return train.clip_gradients(self.module, self.place, max_norm)

    @torch.no_grad()
    def forward(self, x: torch.Tensor):
        out = infer.pipe_forward(self.place, self.module, x, None, 0, self.plan["hidden_size"])
        return out if self.is_last_stage else None


def _checked_runtime(plan) -> dict:
    data = plan.to_dict() if hasattr(plan, "to_dict") else plan
    if (data.get("decision") or {}).get("kind") == "fleet":
        raise UserError("a fleet plan runs on serving engines, not in a torchrun worker; `planner codegen` writes "
                        "its launch scripts")
    rt = build_context(data)["runtime"]
    if rt["hetero_tp"]:
        raise UserError(f"the plan's stages use different tp ({rt['layout']}), which needs the generated program's "
                        f"own pipeline schedule; run `planner codegen` and its run_plan.py instead of apply_plan")
    return rt


def apply_plan(plan, module: nn.Module, mesh=None, train: bool = True) -> Applied:
    """Apply `plan` (a Plan or plan dict) to `module` (a Hugging Face decoder LM, full weights on this rank's
    device, the same on every rank); returns an `Applied` whose `step(x, y)` a training loop calls.

    Call after `torch.distributed.init_process_group` in every rank of a torchrun job of the plan's world
    size. `mesh` may be a DeviceMesh with dims ("pp", "dp", "tp"); by default one is built from the plan's
    ranks. With `train=False` the module is only tensor- and pipeline-parallel (call `forward`).

    Example (in a torchrun worker of 2 ranks, for a pp=2 plan)::

        applied = planner.plan("tiny-llama", "2xcpu", "train", pp=2).apply(model)
        opt = torch.optim.AdamW(applied.parameters())
        lo, hi = applied.rows(len(x))
        loss = applied.step(x[lo:hi], y[lo:hi])   # None except on the last stage
        opt.step(); opt.zero_grad()
    """
    import torch.distributed as dist

    rt = _checked_runtime(plan)
    if not dist.is_initialized():
        raise UserError("apply_plan runs inside a torchrun worker: call torch.distributed.init_process_group first")
    if dist.get_world_size() != rt["world_size"]:
        raise UserError(f"world size {dist.get_world_size()} does not match the plan's {rt['world_size']} ranks")
    first = next(module.parameters())
    mesh = mesh if mesh is not None else parallel.build_mesh(rt, first.device.type)
    s, d, t = (int(c) for c in mesh.get_coordinate())
    compute = base.DTYPES[rt["dtype"]] if first.device.type == "cuda" and train else first.dtype
    place = Place(mesh, first.device, s, d, t, rt["pp"], rt["dp"], mesh["tp"].size(), rt["ep"], compute)
    place.ep_mesh = ep.ep_mesh(rt, first.device.type) if rt["ep"] > 1 else None
    try:
        stage = program.shard_stage(rt, place, module, train and place.tp > 1 and rt["sequence_parallel"])
        if train:
            stage.train()
            parallel.apply_recompute(stage, rt["recompute"])
            stage = parallel.wrap_ddp(program.data_parallel(rt, place, stage), mesh, rt["zero_stage"])
            place.schedule = parallel.make_schedule(stage, s, rt["pp"], rt["microbatches"], rt["schedule"],
                                                    mesh["pp"].get_group() if rt["pp"] > 1 else None, first.device,
                                                    base.lm_loss)
    except base.PlanError as exc:
        raise UserError(str(exc)) from None
    return Applied(stage, mesh, s, d, t, place.schedule, rt, place)
