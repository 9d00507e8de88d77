"""The runtime of generated plan programs: a small package that every launch directory carries as
files (`aot_runtime/`, copied verbatim by codegen) and `run_plan.py` imports; `codegen.apply` uses
the same code for `Plan.apply`. It depends only on torch, transformers, safetensors and numpy.

Modules: base (errors, names, loss), model (meta-built model, stages, chunks), parallel (mesh, TP/SP,
recomputation, FSDP2 per block, pipeline schedules), ep (expert parallelism), hetero (stages of
different tp), weights (materialising shards: checkpoint, seeded, local), data (token files,
tokenizers), train (loop, LR schedule, clipping, logging), checkpoint (DCP save and resume), infer
(prefill and greedy decode through the stages), program (options and the per-rank entry point).
"""

from .base import PlanError
from .program import main

__all__ = ["PlanError", "main"]
