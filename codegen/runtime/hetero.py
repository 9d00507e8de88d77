"""Pipelines whose stages use different tensor-parallel degrees (plans for mixed GPU types).

program.py and train.py call it when the plan's stages differ in tp.

Stage s holds a dp x tp_s grid of ranks (`stages[s].ranks`) with a 2-D DeviceMesh ("dp", "tp") of its
own; every rank builds every stage's mesh in the same order, since DeviceMesh creates its process groups
collectively. torch.distributed.pipelining needs one rank per stage in a pipeline group, which a 2 -> 1
tp boundary does not have, so these pipelines exchange activations point to point themselves:

- across a boundary (same dp replica d), receiver j of the next stage hears from sender j mod n of the
  stage before (n its tp). Stage outputs are replicated over tp (the row-wise projections all-reduce),
  so one copy per receiver suffices; gradients travel back the same way, and every rank of a stage holds
  the same input gradient (tensor parallelism all-reduces it), so any one of them may send it.
- with sequence parallelism a stage's hidden states are sequence shards inside the stage: its output is
  all-gathered before the boundary and its input sliced to this rank's positions after it (the
  gradients: the slice of the replicated output gradient, and the all-gather of the input shards').
- schedules: 1F1B (warm-up of pp - 1 - s forwards, then one forward one backward, then the cool-down)
  or GPipe, with asynchronous sends and blocking receives (no ordering deadlock); the loss of each
  microbatch is divided by their number, as torch's pipeline schedules scale it.
- data parallelism: FSDP2 as for uniform plans, gradients reduced on the last backward only
  (`set_requires_gradient_sync`); where uniform plans use DDP (ZeRO-0 without tp) the gradients are
  averaged over the stage's dp group after the last backward (DDP's reducer arms in forward, which
  1F1B interleaves with earlier backwards).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def hetero_layout(plan: dict, rank_id: int, device_type: str) -> tuple[int, int, int, object]:
    """(stage, dp index, tp index, the stage's ("dp", "tp") DeviceMesh) of global rank `rank_id`."""
    from torch.distributed.device_mesh import DeviceMesh

    found, meshes = None, []
    for s, stage in enumerate(plan["stages"]):
        meshes.append(DeviceMesh(device_type, torch.tensor(stage["ranks"], dtype=torch.int), mesh_dim_names=("dp", "tp")))
        for d, row in enumerate(stage["ranks"]):
            if rank_id in row:
                found = (s, d, row.index(rank_id))
    s, d, t = found
    return s, d, t, meshes[s]


def links(senders: list[int], receivers: list[int]) -> list[tuple[int, int]]:
    """(sender, receiver) pairs across a stage boundary: receiver j hears from sender j mod len(senders).

    >>> links([0, 1], [2]), links([2], [0, 1])
    ([(0, 2)], [(2, 0), (2, 1)])
    """
    return [(senders[j % len(senders)], r) for j, r in enumerate(receivers)]


def _pairs(rank, src_stage: int, dst_stage: int) -> list[tuple[int, int]]:
    return links(rank.grid[src_stage][rank.d], rank.grid[dst_stage][rank.d])


def hetero_recv(rank, buf: torch.Tensor, src_stage: int, dst_stage: int, tag: int = 0) -> torch.Tensor:
    for a, b in _pairs(rank, src_stage, dst_stage):
        if b == rank.rank:
            dist.recv(buf, src=a, tag=tag)
    return buf


def hetero_send(rank, t: torch.Tensor, src_stage: int, dst_stage: int, tag: int = 0, keep: list | None = None):
    """Send `t` to this rank's receivers in `dst_stage`; blocking unless `keep` collects the pending works."""
    t = t.contiguous()
    works = [dist.isend(t, dst=b, tag=tag) for a, b in _pairs(rank, src_stage, dst_stage) if a == rank.rank]
    if keep is None:
        for work in works:
            work.wait()
    else:
        keep.extend((work, t) for work in works)


class _SeqGather(torch.autograd.Function):
    """Sequence shards (b, S/tp, h) -> the whole sequence; the gradient arrives whole on every tp rank."""

    @staticmethod
    def forward(ctx, x, group, index: int, parts: int):
        pieces = [torch.empty_like(x) for _ in range(parts)]
        dist.all_gather(pieces, x.contiguous(), group=group)
        ctx.index, ctx.width = index, x.shape[1]
        return torch.cat(pieces, 1)

    @staticmethod
    def backward(ctx, grad):
        return grad[:, ctx.index * ctx.width:(ctx.index + 1) * ctx.width].contiguous(), None, None, None


class _SeqScatter(torch.autograd.Function):
    """The whole sequence -> this rank's shard; the input gradient is the all-gather of the shards'."""

    @staticmethod
    def forward(ctx, x, group, index: int, parts: int):
        width = x.shape[1] // parts
        ctx.group, ctx.parts = group, parts
        return x[:, index * width:(index + 1) * width].contiguous()

    @staticmethod
    def backward(ctx, grad):
        pieces = [torch.empty_like(grad) for _ in range(ctx.parts)]
        dist.all_gather(pieces, grad.contiguous(), group=ctx.group)
        return torch.cat(pieces, 1), None, None, None


def _sequence_sharded(model: nn.Module) -> bool:
    inner = getattr(model, "module", model)
    return getattr(inner, "seq_shards", 1) > 1


def hetero_forward(rank, model: nn.Module, inp: torch.Tensor, cache, past: int, hidden: int) -> torch.Tensor:
    """One inference forward through all stages (keeps each stage's KV cache)."""
    x = inp
    if rank.s > 0:
        x = hetero_recv(rank, torch.empty(inp.shape[0], inp.shape[1], hidden, device=rank.device, dtype=rank.dtype),
                        rank.s - 1, rank.s)
    out = model(x, cache, past)
    if rank.s < rank.pp - 1:
        hetero_send(rank, out, rank.s, rank.s + 1)
    return out


def hetero_next_tokens(rank, logits, rows: int) -> torch.Tensor:
    """Greedy tokens of the last stage, handed to the first stage's ranks."""
    last = rank.pp - 1
    if rank.s == last:
        tok = logits[:, -1].argmax(-1, keepdim=True)
        hetero_send(rank, tok, last, 0, tag=2)
        return tok
    tok = torch.empty(rows, 1, dtype=torch.long, device=rank.device)
    return hetero_recv(rank, tok, last, 0, tag=2) if rank.s == 0 else tok


def hetero_dp(model: nn.Module, mesh, zero_stage: int, compute: torch.dtype) -> tuple[nn.Module, bool]:
    """The stage under data parallelism, and whether its gradients are averaged by hand (module docstring)."""
    from .parallel import apply_fsdp, uses_ddp

    if uses_ddp(mesh, zero_stage):
        return model, True
    return apply_fsdp(model, mesh, zero_stage, compute), False


def _order(schedule: str, microbatches: int, stage: int, stages: int) -> list[tuple[str, int]]:
    """("F" | "B", microbatch) in the order this stage runs them.

    >>> _order("1f1b", 3, 0, 2)
    [('F', 0), ('F', 1), ('B', 0), ('F', 2), ('B', 1), ('B', 2)]
    """
    if schedule.lower() == "gpipe":
        return [("F", i) for i in range(microbatches)] + [("B", i) for i in range(microbatches)]
    warm = min(stages - 1 - stage, microbatches)
    steps = [("F", i) for i in range(warm)]
    for i in range(microbatches - warm):
        steps += [("F", warm + i), ("B", i)]
    return steps + [("B", i) for i in range(microbatches - warm, microbatches)]


def hetero_forward_backward(plan: dict, rank, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn):
    """Forward and backward of all microbatches of this rank's stage (gradients averaged over the
    stage's replicas); returns the batch's mean loss on the last stage, None elsewhere."""
    m, s, last = plan["microbatches"], rank.s, rank.pp - 1
    xs, ys = x.chunk(m), y.chunk(m)
    sp = _sequence_sharded(model)
    group, index, parts = rank.mesh["tp"].get_group(), rank.t, rank.mesh["tp"].size()
    inputs, outputs, losses, pending = [None] * m, [None] * m, [], []
    for kind, i in _order(plan["schedule"], m, s, rank.pp):
        if kind == "F":
            inp = xs[i]
            if s > 0:
                inp = torch.empty(xs[i].shape[0], xs[i].shape[1], plan["hidden_size"], device=rank.device,
                                  dtype=rank.dtype)
                hetero_recv(rank, inp, s - 1, s).requires_grad_(True)
            h = _SeqScatter.apply(inp, group, index, parts) if sp and s > 0 else inp
            out = model(h)
            if sp and s < last:
                out = _SeqGather.apply(out, group, index, parts)
            inputs[i] = inp
            if s == last:
                loss = loss_fn(out, ys[i])
                losses.append(loss.detach())
                outputs[i] = loss / m
            else:
                outputs[i] = out.to(rank.dtype)  # what the next stage's receive buffer holds
                hetero_send(rank, outputs[i].detach(), s, s + 1, keep=pending)
            continue
        if hasattr(model, "set_requires_gradient_sync"):  # FSDP2: reduce on the last backward only
            model.set_requires_gradient_sync(i == m - 1)
        if s == last:
            outputs[i].backward()
        else:
            grad = hetero_recv(rank, torch.empty_like(outputs[i]), s + 1, s, tag=1)
            outputs[i].backward(grad)
        if s > 0:
            hetero_send(rank, inputs[i].grad, s, s - 1, tag=1, keep=pending)
        inputs[i] = outputs[i] = None
    for work, _ in pending:
        work.wait()
    if rank.manual_dp:
        dp = rank.mesh["dp"]
        for p in model.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad, group=dp.get_group())
                p.grad /= dp.size()
    return torch.stack(losses).mean() if s == last else None
