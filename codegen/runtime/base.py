"""What every part of the runtime shares: the one-line error, dtypes, batch rows, the LM loss and names.

>>> split_rows(8, 2, 1)
(4, 8)
>>> stage_param_name("chunks.1.module.layers.3.mlp.up_proj.weight")
'layers.3.mlp.up_proj.weight'
>>> hf_name("layers.3.mlp.up_proj.weight"), hf_name("lm_head.weight")
('model.layers.3.mlp.up_proj.weight', 'lm_head.weight')
>>> expand_ranks({"first": 4, "rows": 2, "cols": 2, "row_step": 2, "col_step": 1})
[[4, 5], [6, 7]]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class PlanError(Exception):
    """A mismatch between the plan and this run (world size, heads vs tp, a missing file): one line, exit 2."""


def split_rows(batch: int, parts: int, index: int) -> tuple[int, int]:
    """Rows [lo, hi) of a batch that data-parallel replica `index` of `parts` owns."""
    if batch % parts:
        raise PlanError(f"batch {batch} is not divisible by dp={parts}; use --batch a multiple of {parts}")
    size = batch // parts
    return index * size, (index + 1) * size


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross entropy (fp32 whatever the logits' dtype)."""
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())


def stage_param_name(name: str) -> str:
    """A parameter's Stage name: drops the `chunks.<c>.` (interleaving) and DDP `module.` prefixes."""
    parts = name.split(".")
    if parts[0] == "chunks" and len(parts) > 2:
        parts = parts[2:]
    if parts[0] == "module":
        parts = parts[1:]
    return ".".join(parts)


def hf_name(stage_name: str) -> str:
    """Name in the full Hugging Face model (and its checkpoints) of a Stage parameter name."""
    return stage_name if stage_name.startswith("lm_head") else "model." + stage_name


def expand_ranks(ranks) -> list[list[int]]:
    """A stage's [dp][tp] grid of global ranks from its compact form (run_plan.py's PLAN writes regular grids
    as first + d * row_step + t * col_step); a grid given in full is returned as it is."""
    if isinstance(ranks, list):
        return ranks
    return [[ranks["first"] + d * ranks["row_step"] + t * ranks["col_step"] for t in range(ranks["cols"])]
            for d in range(ranks["rows"])]


def expand_plan(plan: dict) -> dict:
    """The PLAN of a run_plan.py with every stage's ranks in full (`expand_ranks`)."""
    stages = [{**stage, "ranks": expand_ranks(stage["ranks"])} for stage in plan["stages"]]
    return {**plan, "stages": stages}


def is_sharded(placement) -> bool:
    """Whether a DTensor placement splits the tensor over its mesh dimension (Shard, and FSDP's strided
    shards on top of tensor parallelism, which `is_shard()` does not count)."""
    return not (placement.is_replicate() or placement.is_partial())
