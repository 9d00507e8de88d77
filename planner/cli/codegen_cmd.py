"""`planner codegen PLAN.json -o DIR`: write a plan's runnable launch directory."""

from __future__ import annotations

import click

from planner.cli import cli
from planner.cli.output import emit_json


@cli.command("codegen")
@click.argument("plan_file")
@click.option("-o", "--output", "out_dir", required=True, help="Folder to write the launch directory into.")
@click.option("--json", "as_json", is_flag=True, help="Print {files: [...]} as JSON.")
def codegen_command(plan_file: str, out_dir: str, as_json: bool) -> None:
    """Generate launch.sh, run_plan.py, plan.json, README.md (and serving scripts) for PLAN_FILE.

    Example: planner codegen plan.json -o out/ && out/launch.sh --mode train
    """
    from codegen import codegen
    from planner.plan_handle import load_plan

    written = codegen(load_plan(plan_file), out_dir)
    if as_json:
        emit_json({"out_dir": out_dir, "files": [p.name for p in written]})
        return
    for path in written:
        click.echo(f"wrote {path}")
