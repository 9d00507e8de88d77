"""aot-planner's public Python API.

>>> import planner
>>> graph = planner.capture("tiny-llama", seq_len=16)
>>> graph.param_count
250432
"""

from ir.plan import PLANNER_VERSION
from planner.api import capture, estimate, inspect
from planner.plan_handle import PlanHandle, load_plan, plan


def codegen(plan_or_path, out_dir):
    """Write the runnable launch directory of a plan (see `codegen.codegen`)."""
    from codegen import codegen as _codegen  # imports jinja2 and the runtime's templates only when asked

    return _codegen(plan_or_path, out_dir)


__version__ = PLANNER_VERSION
__all__ = ["PlanHandle", "__version__", "capture", "codegen", "estimate", "inspect", "load_plan", "plan"]
