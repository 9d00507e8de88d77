"""Expert parallelism of a generated plan program (Mixtral-style fused experts, transformers >= 5).

Layout, as in Megatron-Core and torchtitan: the ep ranks are data-parallel replicas (ep | dp).
Within a stage, the plan's dp index d splits into (edp, ep) = divmod(d, ep): consecutive replicas
form one ep group; replicas with the same ep index hold the same experts and form an edp group.

Each rank keeps experts [e * E/ep, (e + 1) * E/ep) of every MoE block. The router runs on every rank
on its own tokens (the gate weight is replicated), each (token, expert) pair is sent to the rank
owning the expert with a differentiable all-to-all (`all_to_all_single_autograd`; gloo and NCCL
both implement all_to_all_single), the expert MLPs run there, and a second all-to-all brings the
outputs back to be weighted by the routing weights and summed: the single-process result up to the
order of additions. Gradients: FSDP2 averages the experts over the edp group (dp / ep replicas) and
the rest over dp. An expert's local gradient already sums the losses of its ep group's dp replicas
(the all-to-all's backward brings them), so it is scaled by 1 / ep as it is formed: the average is
then over all dp replicas, as for the rest. (torchtitan sets FSDP's gradient divide factor to dp
instead; that uses NCCL's PREMUL_SUM, which gloo lacks.)

Expert tensor parallelism (Megatron-Core's expert-tensor-parallel, on the stage's tp group): with tp > 1
each tp rank keeps a 1/tp slice of every local expert's intermediate dimension (its rows of the gate and
of the up projection, its columns of the down projection), so a rank holds E/ep x 1/tp of the expert
weights, as the plan's memory assumes. Hidden states are replicated over tp; each tp rank runs the same
routing and all-to-alls with its ep peers of the same tp index, computes partial expert outputs, and the
partial outputs are summed over tp (all-reduce) before the routing weights apply, so the router's
gradient is whole; in backward the expert input's gradient is summed over tp (Megatron's f and g
operators). Without expert parallelism (ep = 1) the same slicing applies with no all-to-all.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _exchange(x: torch.Tensor, out_splits: list[int], in_splits: list[int], group) -> torch.Tensor:
    """Differentiable all-to-all of rows: `in_splits[r]` rows go to rank r, `out_splits[r]` come back."""
    import torch.distributed._functional_collectives as fc

    return fc.wait_tensor(fc.all_to_all_single_autograd(x.contiguous(), out_splits, in_splits, group))


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the gradient by `scale` in backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


class _ToTensorParallel(torch.autograd.Function):
    """Identity forward; the gradient is summed over the tp group (Megatron's f operator)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class _FromTensorParallel(torch.autograd.Function):
    """Sum over the tp group forward; identity backward (Megatron's g operator)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        x = x.contiguous().clone()
        dist.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def tp_slice_experts(gate_up: torch.Tensor, down: torch.Tensor, tp: int, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank t's slice of fused experts (gate_up [E, 2I, H]: gate rows, then up rows; down [E, H, I]).

    >>> g, d = tp_slice_experts(torch.arange(8.).view(1, 4, 2), torch.arange(4.).view(1, 2, 2), 2, 1)
    >>> g.flatten().tolist(), d.flatten().tolist()
    ([2.0, 3.0, 6.0, 7.0], [1.0, 3.0])
    """
    inter = down.shape[-1]
    width = inter // tp
    gate, up = gate_up[:, t * width:(t + 1) * width], gate_up[:, inter + t * width:inter + (t + 1) * width]
    return torch.cat([gate, up], 1), down[:, :, t * width:(t + 1) * width]


class ExpertShard(nn.Module):
    """This rank's E/ep experts of a fused experts module (gate_up_proj [E, 2I, H], down_proj [E, H, I]),
    each sliced 1/tp over the intermediate dimension when tp > 1 (module docstring).

    Called like the module it replaces: forward(hidden [T, H], top_k_index [T, k], top_k_weights [T, k]).
    """

    def __init__(self, experts: nn.Module, group, ep: int, index: int, tp_group=None, tp: int = 1, tp_index: int = 0):
        super().__init__()
        total, inter = experts.gate_up_proj.shape[0], experts.down_proj.shape[-1]
        if inter % tp:
            raise ValueError(f"tp={tp} does not divide the experts' intermediate size {inter}; re-plan with a tp "
                             f"dividing it")
        self.per_rank, self.ep, self.group = total // ep, ep, group
        self.tp, self.tp_group, self.tp_index = tp, tp_group, tp_index
        lo, hi = index * self.per_rank, (index + 1) * self.per_rank
        self.first, self.index = lo, index
        gate_up, down = tp_slice_experts(experts.gate_up_proj.detach()[lo:hi], experts.down_proj.detach()[lo:hi],
                                         tp, tp_index)
        self.gate_up_proj = nn.Parameter(gate_up.clone())
        self.down_proj = nn.Parameter(down.clone())
        self.act_fn = experts.act_fn

    def local_pieces(self, gate_up: torch.Tensor, down: torch.Tensor, all_experts: bool = True) -> dict[str, torch.Tensor]:
        """This rank's slices of fused expert tensors (of all E experts, or of this rank's E/ep only), by name."""
        if all_experts:
            gate_up, down = gate_up[self.first:self.first + self.per_rank], down[self.first:self.first + self.per_rank]
        gate_up, down = tp_slice_experts(gate_up, down, self.tp, self.tp_index)
        return {"gate_up_proj": gate_up, "down_proj": down}

    def _route(self, expert: torch.Tensor):
        """(send splits, receive splits, expert of each received row) over the ep group."""
        if self.ep == 1:
            return [expert.numel()], [expert.numel()], expert
        send = torch.bincount(expert // self.per_rank, minlength=self.ep)
        recv = torch.empty_like(send)
        dist.all_to_all_single(recv, send, group=self.group)
        send_splits, recv_splits = send.tolist(), recv.tolist()
        got = torch.empty(sum(recv_splits), dtype=expert.dtype, device=expert.device)
        dist.all_to_all_single(got, expert, recv_splits, send_splits, group=self.group)
        return send_splits, recv_splits, got

    def forward(self, hidden: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor) -> torch.Tensor:
        k = top_k_index.shape[1]
        flat = top_k_index.reshape(-1)
        order = torch.argsort(flat, stable=True)  # (token, expert) pairs grouped by expert, hence by rank
        expert, token = flat[order], order // k
        send_splits, recv_splits, got = self._route(expert)
        if self.tp > 1:
            hidden = _ToTensorParallel.apply(hidden, self.tp_group)
        x = hidden[token]
        if self.ep > 1:
            x = _exchange(x, recv_splits, send_splits, self.group)
        gate_up = _ScaleGrad.apply(self.gate_up_proj, 1.0 / self.ep)  # see the module docstring
        down = _ScaleGrad.apply(self.down_proj, 1.0 / self.ep)
        perm = torch.argsort(got, stable=True)  # received rows grouped by local expert
        counts = torch.bincount(got - self.first, minlength=self.per_rank).tolist()
        pieces = []
        for j, part in enumerate(x[perm].split(counts)):
            if part.shape[0]:  # an expert without tokens gets no gradient, as in the reference module
                gate, up = F.linear(part, gate_up[j]).chunk(2, dim=-1)
                part = F.linear(self.act_fn(gate) * up, down[j])
            pieces.append(part)
        # y always depends on x (even with no rows), so every rank runs both all-to-alls' backward
        y = torch.cat(pieces)[torch.argsort(perm)]
        back = _exchange(y, send_splits, recv_splits, self.group) if self.ep > 1 else y
        if self.tp > 1:  # partial sums over the intermediate slices: whole before the routing weights apply
            back = _FromTensorParallel.apply(back, self.tp_group)
        weighted = back * top_k_weights.reshape(-1)[order].unsqueeze(1)
        return torch.zeros_like(hidden).index_add(0, token, weighted.to(hidden.dtype))


def ep_mesh(plan: dict, device_type: str):
    """DeviceMesh (pp, edp, ep, tp) of the plan's ranks: dp index d = edp * ep + ep index."""
    from torch.distributed.device_mesh import DeviceMesh

    ranks = torch.tensor([stage["ranks"] for stage in plan["stages"]], dtype=torch.int)
    pp, dp, tp = ranks.shape
    return DeviceMesh(device_type, ranks.reshape(pp, dp // plan["ep"], plan["ep"], tp),
                      mesh_dim_names=("pp", "edp", "ep", "tp"))


def has_fused_experts(stage: nn.Module) -> bool:
    return any(hasattr(getattr(getattr(layer, "mlp", None), "experts", None), "gate_up_proj")
               for layer in stage.layers.values())


def shard_experts(stage: nn.Module, mesh, ep: int, tp_mesh=None) -> None:
    """Replace every block's `mlp.experts` by this rank's ExpertShard (in place): E/ep experts over the
    ep mesh (None when ep = 1), each sliced over `tp_mesh` when it has more than one rank. A no-op
    without expert parallelism when tp is 1 or the stage has no fused experts."""
    tp = tp_mesh.size() if tp_mesh is not None else 1
    if ep == 1 and (tp == 1 or not has_fused_experts(stage)):
        return
    index = int(mesh.get_coordinate()[2]) if ep > 1 else 0
    group = mesh["ep"].get_group() if ep > 1 else None
    tp_group = tp_mesh.get_group() if tp > 1 else None
    tp_index = int(tp_mesh.get_local_rank()) if tp > 1 else 0
    for layer in stage.layers.values():
        experts = getattr(getattr(layer, "mlp", None), "experts", None)
        if experts is None or not hasattr(experts, "gate_up_proj"):
            raise ValueError(f"expert parallelism needs Mixtral-style fused experts (mlp.experts.gate_up_proj); "
                             f"{type(getattr(layer, 'mlp', layer)).__name__} has none")
        layer.mlp.experts = ExpertShard(experts, group, ep, index, tp_group, tp, tp_index)


def apply_ep_dp(stage: nn.Module, mesh, dp_mesh, zero_stage: int, compute: torch.dtype = torch.float32) -> nn.Module:
    """FSDP2 per block with the experts on the edp sub-mesh and everything else on dp (any ZeRO stage:
    ZeRO-0 and 1/2 keep parameters gathered between forward and backward, ZeRO-3 reshards them)."""
    from torch.distributed.fsdp import fully_shard

    from .parallel import mixed_precision, shard_blocks

    reshard, policy = zero_stage >= 3, mixed_precision(compute)

    def shard_experts_of(layer: nn.Module) -> None:
        for module in layer.modules():
            if isinstance(module, ExpertShard):
                fully_shard(module, mesh=mesh["edp"], reshard_after_forward=reshard, mp_policy=policy)

    return shard_blocks(stage, dp_mesh, reshard, policy, before_block=shard_experts_of)


def _gather(local: torch.Tensor, parts: int, group, dim: int) -> torch.Tensor:
    if parts == 1:
        return local
    pieces = [torch.empty_like(local) for _ in range(parts)]
    dist.all_gather(pieces, local.contiguous(), group=group)
    return torch.cat(pieces, dim)


def gather_expert_state(model: nn.Module, state: dict, hf_name) -> dict:
    """Replace this rank's expert slices in `state` (Hugging Face names) by all experts (collective):
    the tp slices are joined first (gate rows, up rows, down columns), then the ep groups' experts."""
    for name, module in model.named_modules():
        if not isinstance(module, ExpertShard):
            continue
        keys = {p: hf_name(f"{name}.{p}".removeprefix("module.")) for p in ("gate_up_proj", "down_proj")}
        device = module.gate_up_proj.device
        gate, up = state[keys["gate_up_proj"]].to(device).chunk(2, dim=1)
        gate_up = torch.cat([_gather(gate, module.tp, module.tp_group, 1), _gather(up, module.tp, module.tp_group, 1)], 1)
        down = _gather(state[keys["down_proj"]].to(device), module.tp, module.tp_group, 2)
        state[keys["gate_up_proj"]] = _gather(gate_up, module.ep, module.group, 0).cpu()
        state[keys["down_proj"]] = _gather(down, module.ep, module.group, 0).cpu()
    return state
