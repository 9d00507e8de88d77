"""`planner plan`, `planner explain`, `planner verify`."""

from __future__ import annotations

import click

from cost_models.cluster import MAX_DEVICES
from ir.errors import UserError
from planner.cli import cli
from planner.cli.output import check_cluster_text, emit_json, output_path, report_folder
from planner.input_bounds import (
    MAX_BATCH,
    MAX_RATE,
    MAX_SECONDS,
    MAX_TOKENS,
    MAX_VIRTUAL_STAGES,
    Count,
    Positive,
    check_number,
)


def parse_slo(text: str | None) -> dict:
    """'ttft=0.5,tpot=0.05' -> {'ttft': 0.5, 'tpot': 0.05}; bad text (unknown key, not a positive finite number of
    seconds) is a UserError."""
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        key = key.strip().lower()
        if key not in ("ttft", "tpot"):
            raise UserError(f"--slo takes ttft=SECONDS,tpot=SECONDS; got {part!r}")
        try:
            out[key] = float(value)
        except ValueError:
            raise UserError(f"--slo {key} must be a number of seconds, got {value!r}") from None
        check_number(f"--slo {key}", out[key], MAX_SECONDS)
    return out


@cli.command("plan")
@click.argument("model")
@click.option("--cluster", default=None, help="Shorthand or YAML [default: 8xH100-SXM].")
@click.option("--workload", default="chat", show_default=True,
              help="train, prefill, decode, chat, summarize, code or a trace .csv")
@click.option("--objective", type=click.Choice(["throughput", "latency", "cost"]), default=None)
@click.option("--slo", default=None, help="ttft=SECONDS,tpot=SECONDS")
@click.option("--batch", type=Count(MAX_BATCH), default=None)
@click.option("--seq-len", type=Count(MAX_TOKENS), default=None)
@click.option("--input-len", type=Count(MAX_TOKENS), default=None)
@click.option("--output-len", type=Count(MAX_TOKENS), default=None)
@click.option("--rate", type=Positive(MAX_RATE), default=None, help="Serving: requests per second (Poisson).")
@click.option("--tp", type=Count(MAX_DEVICES), default=None)
@click.option("--pp", type=Count(MAX_DEVICES), default=None)
@click.option("--dp", type=Count(MAX_DEVICES), default=None)
@click.option("--ep", type=Count(MAX_DEVICES), default=None)
@click.option("--dtype", type=click.Choice(["bf16", "fp16", "fp8", "fp32"]), default="bf16", show_default=True)
@click.option("--schedule", type=click.Choice(["1f1b", "interleaved", "gpipe"]), default=None,
              help="Training: pin the pipeline schedule [default: searched].")
@click.option("--virtual-stages", type=Count(MAX_VIRTUAL_STAGES), default=None,
              help="Training: virtual stages per rank (interleaved 1F1B).")
@click.option("--sequence-parallel/--no-sequence-parallel", default=None,
              help="Training: pin Megatron sequence parallelism [default: on when tp > 1].")
@click.option("--engine-profile", default=None,
              help="Serving: price iterations with a measured engine profile (a name such as vllm-0.2-a100-80gb, or "
                   "a YAML file; see cost_models/serving/engine_profile.py) instead of the cost model; "
                   "colocated=NAME,disaggregated=NAME gives each kind of deployment its own engine.")
@click.option("-o", "--output", default=None, help="Write the plan JSON here.")
@click.option("--report", "report_dir", default=None, help="Write a Markdown + HTML report with figures into DIR.")
@click.option("--warm-start", "warm_start", default=None,
              help="A previous plan (JSON) of this model to start the search from: re-targeting to a new batch, "
                   "length, rate or cluster evaluates its layout first.")
@click.option("--trust-model-code", is_flag=True,
              help="Allow MODEL to be Python code (pkg.module:factory), which is imported and run.")
@click.option("--keep-interrupted", is_flag=True,
              help="If the search is interrupted (Ctrl-C), still write the best plan found so far (marked interrupted).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan JSON on stdout.")
def plan_command(model, cluster, workload, objective, slo, as_json, output, report_dir, warm_start, keep_interrupted,
                 **options):
    """Choose parallelism, layer grouping and placement for MODEL, and write the plan."""
    from planner.cli.output import working
    from planner.plan_handle import plan

    # every destination is checked before any work, and the plan file is written last: a failure leaves it unwritten
    target = output_path(output, "-o") if output is not None else None
    report = report_folder(report_dir) if report_dir is not None else None
    check_cluster_text(cluster)
    slos = parse_slo(slo)
    previous = None
    if warm_start:
        from planner.plan_handle import load_plan

        previous = load_plan(warm_start)
    with working(f"planning {model} ({workload})"):
        result = plan(model, cluster, workload, objective=objective, slo=slos, warm_start=previous, **options)
    interrupted = result.solver.status == "interrupted"
    if interrupted and not keep_interrupted:
        click.echo("error: search interrupted: the best plan so far was not written (pass --keep-interrupted to "
                   "write it, marked interrupted)", err=True)
        raise click.exceptions.Exit(130)
    if report is not None:
        from planner.report import write_report

        write_report(result.plan, report)
    if target is not None:
        result.save(target)
    if as_json:
        emit_json(result.to_dict())
        if interrupted:
            raise click.exceptions.Exit(130)
        return
    click.echo(result.explain(), nl=False)
    if result.search_time_s is not None:
        click.echo(f"searched in {result.search_time_s:.2f} s")
    if target is not None:
        click.echo(f"wrote {target}")
    if interrupted:
        raise click.exceptions.Exit(130)


@cli.command("explain")
@click.argument("plan_file")
@click.option("--plot", "plot_path", default=None, help="Write the per-device memory bars as a PNG figure.")
def explain_command(plan_file, plot_path):
    """Explain a plan: why it was chosen, per-stage time and memory, runners-up, schedule."""
    from planner.plan_handle import load_plan

    plan = load_plan(plan_file)
    text = plan.explain()
    if plot_path:
        output_path(plot_path, "--plot")
        from planner.report import memory_figure

        memory_figure(plan.to_dict(), plot_path)
    click.echo(text, nl=False)


@cli.command("verify")
@click.argument("plan_file")
@click.option("--trust-model-code", is_flag=True,
              help="Allow rebuilding a model the plan names as Python code (pkg.module:factory): imports and runs it.")
@click.option("--json", "as_json", is_flag=True)
def verify_command(plan_file, as_json, trust_model_code):
    """Recompute every claim of a plan from its inputs; exit 2 (problems listed) when one does not hold."""
    from planner.plan_handle import load_plan

    problems = load_plan(plan_file).verify(trust_model_code=trust_model_code)
    if as_json:
        emit_json({"ok": not problems, "problems": problems})
    else:
        for line in problems:
            click.echo(f"problem: {line}")
        if not problems:
            click.echo("plan verified: every check holds")
    if problems:
        raise UserError(f"{plan_file} does not verify: {len(problems)} problem(s), the first: {problems[0]}")


@cli.command("diff")
@click.argument("plan_a")
@click.argument("plan_b")
@click.option("--json", "as_json", is_flag=True)
def diff_command(plan_a, plan_b, as_json):
    """What changed between two plans and what it does to the predictions."""
    from planner.plan_diff import diff_plans, format_diff
    from planner.plan_handle import load_plan

    d = diff_plans(load_plan(plan_a).to_dict(), load_plan(plan_b).to_dict())
    if as_json:
        emit_json(d)
    else:
        click.echo(format_diff(d), nl=False)
