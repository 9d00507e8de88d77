"""The training loop of a plan program: forward and backward of a step's microbatches (pipeline
schedule, or the program's own for stages of different tp), the learning-rate schedule (linear
warm-up, then cosine or linear decay), gradient clipping by the global norm, the optimizer step, the
loss logged every N steps by the rank that holds it, and DCP checkpoints (checkpoint.py).

Global gradient norm: each rank adds the squares of its local gradient shards, each weighted by how
many distinct shards of that parameter the stage's dp x tp ranks hold over how many ranks hold the
stage, so one all-reduce over all ranks counts every element of every stage exactly once (FSDP and
tp shards, replicated norms, expert slices over ep and tp alike).

>>> [round(lr_factor(s, warmup=2, total=6, decay="cosine", floor=0.1), 3) for s in range(6)]
[0.5, 1.0, 1.0, 0.868, 0.55, 0.232]
"""

from __future__ import annotations

import contextlib
import json
import math
import time

import torch
import torch.distributed as dist
from torch import nn

from .base import is_sharded, lm_loss, split_rows
from .checkpoint import resume, save
from .ep import ExpertShard
from .hetero import hetero_forward_backward


def lr_factor(step: int, warmup: int, total: int, decay: str, floor: float) -> float:
    """Multiplier of the base learning rate at `step` (0-based): linear warm-up over `warmup` steps, then
    `decay` ("cosine", "linear" or "none") from 1 to `floor` at step `total`."""
    if step < warmup:
        return (step + 1) / warmup
    if decay == "none" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / (total - warmup))
    if decay == "linear":
        return 1.0 - (1.0 - floor) * progress
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float):
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


def precision(rank):
    """torch.autocast in the compute dtype where no FSDP policy casts the parameters (DDP, tp or pp only)."""
    if rank.autocast is None:
        return contextlib.nullcontext()
    return torch.autocast(rank.device.type, dtype=rank.autocast)


def forward_backward(plan: dict, rank, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """Gradients of one batch (this replica's rows); returns its mean loss on the last stage, else None."""
    if rank.hetero:
        return hetero_forward_backward(plan, rank, model, x, y, lm_loss)
    m = plan["microbatches"]
    if rank.schedule is None:
        losses = []
        for i, (xs, ys) in enumerate(zip(x.chunk(m), y.chunk(m))):
            sync = contextlib.nullcontext()
            if hasattr(model, "set_requires_gradient_sync"):  # FSDP2: reduce on the last microbatch only
                model.set_requires_gradient_sync(i == m - 1)
            elif hasattr(model, "no_sync") and i < m - 1:  # DDP
                sync = model.no_sync()
            with sync:
                with precision(rank):  # autocast's weight copies are dropped before backward
                    loss = lm_loss(model(xs), ys)
                (loss / m).backward()
            losses.append(loss.detach())
        return torch.stack(losses).mean()
    with precision(rank):
        if rank.s == 0:
            rank.schedule.step(x)
        elif rank.s == rank.pp - 1:
            losses = []
            rank.schedule.step(target=y, losses=losses)
            return torch.stack([loss.detach() for loss in losses]).mean()
        else:
            rank.schedule.step()
    return None


def grad_norm(model: nn.Module, rank) -> torch.Tensor:
    """The global L2 norm of all gradients of all stages (module docstring); collective over all ranks."""
    from torch.distributed.tensor import DTensor

    slices = {id(p): mod.ep * mod.tp for mod in model.modules() if isinstance(mod, ExpertShard)
              for p in mod.parameters()}
    total = torch.zeros((), dtype=torch.float64, device=rank.device)
    for p in model.parameters():
        g = p.grad
        if g is None:
            continue
        shards = 1
        if isinstance(g, DTensor):
            shards = math.prod(g.device_mesh.size(i) for i, pl in enumerate(g.placements) if is_sharded(pl))
            g = g.to_local()
        local = torch.linalg.vector_norm(g).double()  # no copy of the gradient
        total += local * local * (shards * slices.get(id(p), 1) / rank.holders)
    dist.all_reduce(total)
    return total.sqrt()


def clip_gradients(model: nn.Module, rank, max_norm: float) -> float:
    """Scale all gradients so their global norm is at most `max_norm` (0: no clipping); returns the norm."""
    from torch.distributed.tensor import DTensor

    norm = grad_norm(model, rank)
    if max_norm > 0:
        coef = float(max_norm / (norm + 1e-6))
        if coef < 1.0:
            with torch.no_grad():
                for p in model.parameters():
                    if p.grad is not None:  # the local shard in place: no DTensor dispatch per tensor
                        (p.grad.to_local() if isinstance(p.grad, DTensor) else p.grad).mul_(coef)
    return float(norm)


def replica_mean(rank, loss: torch.Tensor) -> float:
    """The loss averaged over the last stage's data-parallel replicas (collective over that dp group)."""
    value = loss.detach().double().reshape(1).to(rank.device)
    group = rank.mesh["dp"]
    if group.size() > 1:
        dist.all_reduce(value, group=group.get_group())
    return float(value) / group.size()


def train(plan: dict, rank, model: nn.Module, args, data) -> dict:
    """Run optimizer steps [start, args.steps) (start > 0 after --resume); returns per-step losses of this
    replica (None off the last stage), global gradient norms (before clipping) and the median step time."""
    opt = make_optimizer(model, args.optimizer, args.lr, args.weight_decay)
    start = resume(args.resume, model, opt) if args.resume else 0
    lo, hi = split_rows(args.batch, rank.dp, rank.d)
    losses, norms, times = [], [], []
    last = rank.s == rank.pp - 1
    for step in range(start, args.steps):
        factor = lr_factor(step, args.warmup_steps, args.steps, args.lr_decay, args.min_lr_ratio)
        for group in opt.param_groups:
            group["lr"] = args.lr * factor
        x, y = data.batch(step, args.batch, args.seq_len)
        x, y = x[lo:hi].to(rank.device), y[lo:hi].to(rank.device)
        began = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = forward_backward(plan, rank, model, x, y)
        norm = clip_gradients(model, rank, args.max_norm)
        opt.step()
        times.append(time.perf_counter() - began)
        losses.append(float(loss) if loss is not None else None)
        norms.append(norm)
        done = step + 1
        if args.log_every and (done % args.log_every == 0 or done in (start + 1, args.steps)) and last:
            mean = replica_mean(rank, loss)
            if rank.d == 0 and rank.t == 0:
                print(json.dumps({"step": done, "loss": round(mean, 6), "lr": args.lr * factor,
                                  "grad_norm": round(norm, 6)}), flush=True)
        if args.save and (done == args.steps or (args.save_every and done % args.save_every == 0)):
            save(args.save, done, model, opt)
    timed = sorted(times[1:] or times)  # the first step warms up (allocations, communicator setup)
    return {"loss": losses if last else None, "grad_norm": norms, "first_step": start,
            "train_s": timed[len(timed) // 2] if timed else None}  # median: robust to other load on the host
