"""Inference through pipeline stages, interleaved pipeline stages and sequence parallelism of a
generated plan program.

Inlined into every generated run_plan.py after codegen/runtime.py (render.py keeps what follows the
first "# --- " line: the imports above it are for the repository only); depends on nothing of
runtime.py, which calls it.

Interleaved 1F1B (Narayanan et al. 2021, Sec. 2.2.2): a plan stage with `chunks` holds v model
chunks; chunk c of pipeline rank s is virtual stage c * pp + s of pp * v (Megatron-LM's round-robin,
what torch's ScheduleInterleaved1F1B expects), one PipelineStage each. A microbatch's forward
visits rank 0 chunk 0, rank 1 chunk 0, ..., rank pp - 1 chunk 0, rank 0 chunk 1, ...

Sequence parallelism (Korthikanti et al. 2022, Sec. 4.2.2) with DTensor, the plan of torchtitan's
llama `apply_tp`: norms run on sequence shards (`SequenceParallel`), the attention and MLP inputs
are all-gathered (`PrepareModuleInput` Shard(1) -> Replicate), the row-wise projections
reduce-scatter to sequence shards (`output_layouts=Shard(1)`), the vocabulary-parallel embedding
reduce-scatters its output and the head all-gathers its input. q/k/v heads and grouped k/v heads
are split column-wise as without sequence parallelism.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from codegen.runtime_hetero import hetero_forward, hetero_next_tokens

# --- pipeline inference, interleaved stages, sequence parallelism (codegen/runtime_pipeline.py) ------


class ChunkedStage(nn.Module):
    """The v model chunks (each a `Stage`) one pipeline rank runs with interleaved 1F1B.

    Parameter names are `chunks.<c>.<stage name>`; `stage_param_name` strips the prefix.
    """

    def __init__(self, chunks: list[nn.Module]):
        super().__init__()
        self.chunks = nn.ModuleList(chunks)


def stage_param_name(name: str) -> str:
    """A parameter's Stage name: drops the `chunks.<c>.` and DDP `module.` prefixes.

    >>> stage_param_name("chunks.1.module.layers.3.mlp.up_proj.weight")
    'layers.3.mlp.up_proj.weight'
    """
    parts = name.split(".")
    if parts[0] == "chunks" and len(parts) > 2:
        parts = parts[2:]
    if parts[0] == "module":
        parts = parts[1:]
    return ".".join(parts)


def chunk_modules(model: nn.Module) -> list[nn.Module]:
    """The stage modules of a rank: its chunks with interleaving, else the model itself."""
    return list(model.chunks) if isinstance(model, ChunkedStage) else [model]


def interleaved_forward(rank, model: ChunkedStage, inp: torch.Tensor, cache, past: int, hidden: int):
    """One forward through all ranks' chunks in model order with point-to-point sends (inference);
    returns this rank's last chunk output (the logits on the last rank)."""
    out = inp
    count = len(model.chunks)
    for c, chunk in enumerate(model.chunks):
        x = inp
        if rank.s > 0 or c > 0:
            x = torch.empty(inp.shape[0], inp.shape[1], hidden, device=rank.device, dtype=rank.dtype)
            dist.recv(x, src=rank.peer(rank.s - 1 if rank.s > 0 else rank.pp - 1))
        out = chunk(x, cache, past)
        if rank.s < rank.pp - 1 or c < count - 1:
            dist.send(out.contiguous(), dst=rank.peer(rank.s + 1 if rank.s < rank.pp - 1 else 0))
    return out


def interleaved_schedule(model: ChunkedStage, rank, microbatches: int, loss_fn):
    """ScheduleInterleaved1F1B over one PipelineStage per chunk (stage index c * pp + s)."""
    from torch.distributed.pipelining import PipelineStage, ScheduleInterleaved1F1B

    group = rank.mesh["pp"].get_group()
    total = rank.pp * len(model.chunks)
    stages = [PipelineStage(chunk, c * rank.pp + rank.s, total, rank.device, group=group)
              for c, chunk in enumerate(model.chunks)]
    return ScheduleInterleaved1F1B(stages, n_microbatches=microbatches, loss_fn=loss_fn)


def sp_plan(stage: nn.Module) -> dict:
    """The sequence-parallel TP plan of a Stage (module docstring); heads were checked by the caller."""
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
        if not all(hasattr(layer.mlp, q) for q in ("gate_proj", "up_proj", "down_proj")):
            raise ValueError(f"sequence parallelism needs gated MLPs (gate/up/down_proj); block {name} has "
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


# inference through the stages: point-to-point forward, greedy tokens, prefill + decode
def pipe_forward(rank, model: nn.Module, inp: torch.Tensor, cache, past: int, hidden: int):
    """Run one forward through all stages with point-to-point sends (keeps each stage's KV cache)."""
    if isinstance(model, ChunkedStage):
        return interleaved_forward(rank, model, inp, cache, past, hidden)
    if rank.hetero:
        return hetero_forward(rank, model, inp, cache, past, hidden)
    if rank.s > 0:
        inp = torch.empty(inp.shape[0], inp.shape[1], hidden, device=rank.device, dtype=rank.dtype)
        dist.recv(inp, src=rank.peer(rank.s - 1))
    out = model(inp, cache, past)
    if rank.s < rank.pp - 1:
        dist.send(out.contiguous(), dst=rank.peer(rank.s + 1))
    return out


def next_tokens(rank, logits, rows: int) -> torch.Tensor:
    """Greedy tokens from the last stage, handed to the first stage (all ranks get a tensor)."""
    if rank.hetero:
        return hetero_next_tokens(rank, logits, rows)
    tok = logits[:, -1].argmax(-1, keepdim=True) if logits is not None and rank.s == rank.pp - 1 \
        else torch.empty(rows, 1, dtype=torch.long, device=rank.device)
    if rank.pp > 1 and rank.s == rank.pp - 1:
        dist.send(tok, dst=rank.peer(0))
    elif rank.pp > 1 and rank.s == 0:
        dist.recv(tok, src=rank.peer(rank.pp - 1))
    return tok


@torch.no_grad()
def infer(plan: dict, rank, model: nn.Module, x: torch.Tensor, new_tokens: int) -> dict:
    """Prefill the prompt, then greedy-decode `new_tokens` with a KV cache per stage."""
    from transformers import DynamicCache

    model.eval()
    cache = DynamicCache()
    logits = pipe_forward(rank, model, x, cache, 0, plan["hidden_size"])
    out = {"logits": logits.float().cpu() if rank.s == rank.pp - 1 else None, "tokens": []}
    past, last = x.shape[1], logits
    for _ in range(new_tokens):
        tok = next_tokens(rank, last, x.shape[0])
        out["tokens"].append(tok.cpu())
        last = pipe_forward(rank, model, tok, cache, past, plan["hidden_size"])
        past += 1
    out["tokens"] = torch.cat(out["tokens"], 1) if out["tokens"] else None
    return out
