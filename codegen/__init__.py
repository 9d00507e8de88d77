"""Code generation: a plan becomes a runnable launch directory (torchrun program and the runtime package
it imports, launch script, README, torchtitan job, serving-engine launch scripts) and `apply_plan`
parallelises a user's module the same way.

>>> from codegen import render_plan
>>> callable(render_plan)
True
"""

from codegen.render import render_plan, write_plan_dir
from ir.plan import load_plan


def codegen(plan, out_dir):
    """Write the launch directory of `plan` (a `Plan`, a plan dict or a plan file path) into `out_dir`.

    >>> import planner, tempfile
    >>> p = planner.plan("tiny-llama", "2xcpu", "train", batch=4, seq_len=16, tp=2)
    >>> [f.name for f in codegen(p, tempfile.mkdtemp()) if f.parent.name != "aot_runtime"]
    ['README.md', 'launch.sh', 'plan.json', 'run_plan.py']
    """
    if isinstance(plan, (str, bytes)) or hasattr(plan, "__fspath__"):
        plan = load_plan(plan)
    data = plan.to_dict() if hasattr(plan, "to_dict") else plan.to_json() if hasattr(plan, "to_json") else plan
    return write_plan_dir(data, out_dir)


__all__ = ["codegen", "render_plan", "write_plan_dir"]
