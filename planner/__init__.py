"""aot-planner's public Python API.

>>> import planner
>>> graph = planner.capture("tiny-llama", seq_len=16)
>>> graph.param_count
250432
"""

from ir.plan import PLANNER_VERSION
from planner.api import capture, estimate, inspect
from planner.plan_handle import PlanHandle, load_plan, plan


def codegen(plan_or_path, out_dir, verify: bool = True, trust_model_code: bool = False):
    """Write the runnable launch directory of a plan (see `codegen.codegen`) once `planner.verify` finds every
    claim holds (else a UserError names the first problem); `verify=False` skips the check deliberately and
    the generated files say so. `trust_model_code`: a plan whose model is Python code is rebuilt to verify it.

    >>> import planner, tempfile
    >>> p = planner.plan("tiny-llama", "2xcpu", "train", batch=4, seq_len=16, tp=2)
    >>> [f.name for f in planner.codegen(p, tempfile.mkdtemp()) if f.parent.name != "aot_runtime"]
    ['README.md', 'launch.sh', 'plan.json', 'run_plan.py']
    """
    from codegen import codegen as _codegen  # imports jinja2 and the runtime's templates only when asked
    from planner.verify import verify_plan

    return _codegen(plan_or_path, out_dir, verify=verify,
                    verifier=lambda plan: verify_plan(plan, trust_model_code=trust_model_code))


__version__ = PLANNER_VERSION
__all__ = ["PlanHandle", "__version__", "capture", "codegen", "estimate", "inspect", "load_plan", "plan"]
