"""`planner whatif`: sweep clusters and workload settings; table, CSV, JSON and plots."""

from __future__ import annotations

import csv
import io

import click

from ir.errors import UserError
from ir.fileio import write_atomic
from planner.cli import cli
from planner.cli.output import check_cluster_text, console, emit_json, output_path, progress_console, quiet, table
from planner.input_bounds import COUNT_LIMITS, NUMBER_LIMITS, check_count, check_number

MAX_POINTS = 1024  # plans in one sweep (each takes up to seconds)

_COLUMNS = ("cluster", "layout", "ok", "output_tokens_per_s", "ttft_s", "tpot_s", "memory_per_device_bytes",
            "dollars_per_hour", "relative_error_80", "reason")


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _csv(records: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in records for k in r))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow(r)
    return out.getvalue()


@cli.command("whatif")
@click.argument("model")
@click.option("--cluster", "clusters", multiple=True, help="Repeat for each cluster to compare [default: 8xH100-SXM].")
@click.option("--workload", default="chat", show_default=True)
@click.option("--vary", "vary_items", multiple=True,
              help="key=v1,v2 (batch, rate, input_len, output_len, seq_len, tp, pp, dp; SLOs ttft, tpot in seconds)")
@click.option("--slo", default=None, help="ttft=SECONDS,tpot=SECONDS")
@click.option("--objective", type=click.Choice(["throughput", "latency", "cost"]), default=None)
@click.option("--mode", type=click.Choice(["plan", "estimate"]), default="plan", show_default=True)
@click.option("--jobs", type=click.IntRange(1, 64), default=2, show_default=True, help="Parallel processes.")
@click.option("--csv", "csv_path", default=None, help="Write the records as CSV.")
@click.option("--plot", "plot_path", default=None, help="Write a figure (PNG).")
@click.option("--trust-model-code", is_flag=True,
              help="Allow MODEL to be Python code (pkg.module:factory), which is imported and run.")
@click.option("--json", "as_json", is_flag=True)
def whatif_command(model, clusters, workload, vary_items, slo, objective, mode, jobs, csv_path, plot_path, as_json,
                   trust_model_code):
    """Plan MODEL over several clusters and workload settings and compare the answers."""
    from rich.progress import Progress

    from planner.cli.plan_cmd import parse_slo
    from planner.whatif import parse_vary, what_if

    vary = parse_vary(list(vary_items))
    for key, values in vary.items():  # the same bounds as the flags of `planner plan`
        for value in values:
            (check_number if key in NUMBER_LIMITS else check_count)(f"--vary {key}", value,
                                                                   {**COUNT_LIMITS, **NUMBER_LIMITS}[key])
    clusters = list(clusters) or ["8xH100-SXM"]
    for cluster in clusters:
        check_cluster_text(cluster)
    total = len(clusters) * max(1, _count(vary))
    if total > MAX_POINTS:
        raise UserError(f"the sweep has {total:,} points ({len(clusters)} cluster(s) x the --vary combinations), above "
                        f"the {MAX_POINTS:,} one run takes; sweep fewer values")
    outputs = [output_path(p, flag) for p, flag in ((csv_path, "--csv"), (plot_path, "--plot")) if p is not None]
    if len({str(p.resolve()) for p in outputs}) < len(outputs):
        raise UserError("--csv and --plot name the same file; give two paths")
    with Progress(transient=True, disable=as_json or total < 4 or quiet(), console=progress_console()) as bar:
        task = bar.add_task("sweeping", total=total)
        records = what_if(model, clusters, workload=workload, vary=vary, slo=parse_slo(slo), objective=objective,
                          mode=mode, jobs=jobs, progress=lambda: bar.advance(task), trust_model_code=trust_model_code)
    figure = _figure(records, model, workload) if plot_path else None  # fails before anything is written
    if csv_path:
        write_atomic(csv_path, _csv(records))
    if figure is not None:
        from planner.plots import save_figure

        save_figure(figure, plot_path)
    if as_json:
        emit_json({"model": model, "workload": workload, "records": records})
        return
    keys = sorted({k for r in records for k in r} & set(vary))
    columns = _COLUMNS
    if any(r.get("policy") for r in records):  # serving plans: the schedule chosen and what it serves per GPU
        columns = ("cluster", "policy", *_COLUMNS[2:4], "goodput_per_gpu", *_COLUMNS[4:])
    rows = [[_fmt(r.get(k)) for k in (*keys, *columns)] for r in records]
    console().print(table(f"what if: {model} ({workload})", [*keys, *columns], rows,
                          right_from=len(keys) + columns.index("ok") + 1))


def _count(vary: dict) -> int:
    n = 1
    for values in vary.values():
        n *= len(values)
    return n


def _figure(records: list[dict], model: str, workload: str):
    """TTFT vs TPOT when the sweep has both (serving), else throughput vs cluster price."""
    from planner.plots import plot_throughput_cost, plot_ttft_tpot

    if any(r.get("ttft_s") and r.get("tpot_s") for r in records):
        return plot_ttft_tpot(records, None, f"{model} {workload}: TTFT vs TPOT per configuration")
    return plot_throughput_cost(records, None, f"{model} {workload}: throughput vs cluster price")
