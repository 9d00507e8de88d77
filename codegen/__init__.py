"""Code generation: a plan becomes a runnable launch directory (torchrun program and the runtime package
it imports, launch script, README, torchtitan job, serving-engine launch scripts) and `apply_plan`
parallelises a user's module the same way.

Only a plan that verifies is rendered: `codegen` runs the verifier it is given (`planner.codegen` and
`planner codegen` give `planner.verify.verify_plan`; codegen itself reads plans only and cannot price them)
and refuses a plan with problems. `verify=False` (`planner codegen --skip-verify`) renders anyway, and
every generated file but plan.json says it was not verified.

>>> from codegen import render_plan
>>> callable(render_plan)
True
"""

from collections.abc import Callable

from codegen.render import UNVERIFIED, render_plan, write_plan_dir
from ir.errors import UserError
from ir.plan import Plan, load_plan


def codegen(plan, out_dir, *, verify: bool = True, verifier: Callable[[Plan], list[str]] | None = None):
    """Write the launch directory of `plan` (a `Plan`, a plan dict or a plan file path) into `out_dir`, after
    `verifier(plan)` (its problems, one line each) finds none; with `verify=False` without checking, and the
    generated files say so. Nothing is written when the plan is refused.

    >>> import planner, tempfile
    >>> p = planner.plan("tiny-llama", "2xcpu", "train", batch=4, seq_len=16, tp=2)
    >>> [f.name for f in codegen(p.plan, tempfile.mkdtemp(), verify=False) if f.parent.name != "aot_runtime"]
    ['README.md', 'launch.sh', 'plan.json', 'run_plan.py']
    >>> codegen(p.plan, tempfile.mkdtemp())
    Traceback (most recent call last):
    ir.errors.UserError: codegen renders only verified plans: give it a verifier (planner.codegen does) or pass verify=False
    """
    if isinstance(plan, (str, bytes)) or hasattr(plan, "__fspath__"):
        plan = load_plan(plan)
    data = plan.to_dict() if hasattr(plan, "to_dict") else plan.to_json() if hasattr(plan, "to_json") else plan
    if not verify:
        return write_plan_dir(data, out_dir, unverified=True)
    if verifier is None:
        raise UserError("codegen renders only verified plans: give it a verifier (planner.codegen does) or pass "
                        "verify=False")
    problems = verifier(plan.plan if hasattr(plan, "plan") else plan)
    if problems:
        raise UserError(f"the plan does not verify, so no launch files were written ({len(problems)} problem(s); "
                        f"first: {problems[0]}); `planner verify PLAN` lists them; re-run `planner plan`, or pass "
                        f"--skip-verify (Python: verify=False) to generate from it anyway")
    return write_plan_dir(data, out_dir)


__all__ = ["UNVERIFIED", "codegen", "render_plan", "write_plan_dir"]
