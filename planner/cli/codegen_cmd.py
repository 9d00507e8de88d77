"""`planner codegen PLAN.json -o DIR`: write a plan's runnable launch directory, once the plan verifies."""

from __future__ import annotations

import click

from planner.cli import cli
from planner.cli.output import emit_json


@cli.command("codegen")
@click.argument("plan_file")
@click.option("-o", "--output", "out_dir", required=True, help="Folder to write the launch directory into.")
@click.option("--skip-verify", is_flag=True,
              help="Generate without verifying the plan first (every generated file then says it was not verified).")
@click.option("--trust-model-code", is_flag=True,
              help="Verifying a plan whose model is Python code (pkg.module:factory) imports and runs it; allow that.")
@click.option("--json", "as_json", is_flag=True, help="Print {out_dir, files, verified} as JSON.")
def codegen_command(plan_file: str, out_dir: str, as_json: bool, skip_verify: bool, trust_model_code: bool) -> None:
    """Generate launch.sh, run_plan.py, plan.json, README.md (and serving scripts) for PLAN_FILE.

    The plan is verified first (`planner verify`); a plan that does not verify is refused and nothing is
    written, unless --skip-verify is given.

    Example: planner codegen plan.json -o out/ && out/launch.sh --mode train
    """
    import planner
    from codegen.render import UNVERIFIED
    from ir.errors import UserError
    from planner.plan_handle import load_plan

    if not out_dir.strip():
        raise UserError("-o names no folder; give the folder to write the launch directory into")
    written = planner.codegen(load_plan(plan_file), out_dir, verify=not skip_verify, trust_model_code=trust_model_code)
    if as_json:
        emit_json({"out_dir": out_dir, "files": [p.name for p in written], "verified": not skip_verify})
        return
    if skip_verify:
        click.echo(UNVERIFIED)
    for path in written:
        click.echo(f"wrote {path}")
