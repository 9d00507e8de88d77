"""Inference through a plan's stages: prefill and greedy decode with a KV cache per stage, activations
passed point to point between pipeline ranks (interleaved chunks visit rank 0 chunk 0, rank 1 chunk 0,
..., rank pp - 1 chunk 0, rank 0 chunk 1, ...; stages of different tp through hetero.py).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from .hetero import hetero_forward, hetero_next_tokens
from .model import ChunkedStage


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
