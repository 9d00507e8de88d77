"""`planner calibrate`: measure this machine and write a device profile YAML (cost_models.calibration)."""

from __future__ import annotations

from pathlib import Path

import click

from planner.cli import cli
from planner.cli.output import console, emit_json, human, table


def _rows(profile: dict) -> list[list[str]]:
    spec = profile["device"]
    dtype, peak = next(iter(spec["peak_flops"].items()))
    rows = [[f"peak_flops.{dtype}", human(peak, "FLOP/s")],
            ["memory_bandwidth_bytes_per_s", human(spec["memory_bandwidth_bytes_per_s"], "B/s")]]
    for key, value in spec["efficiency"].items():
        if key == "kernel_overhead_s":
            rows.append([f"efficiency.{key}", f"{value * 1e6:.2f} us"])
        elif key != "source":
            rows.append([f"efficiency.{key}", f"{value:.4g}"])
    link = profile["nodes"][0]["intra_link"]
    if isinstance(link, dict):
        rows.append([f"{link['name']} bandwidth", human(link["bandwidth_bytes_per_s"], "B/s")])
        rows.append([f"{link['name']} latency", f"{link['latency_s'] * 1e6:.1f} us"])
    return rows


def _print(profile: dict, path: str) -> None:
    cal = profile["calibration"]
    c = console()
    title = (f"{profile['device']['name']}: {cal['points']} points in {cal['seconds']} s "
             f"({cal['dtype']}, {cal['torch_threads']} torch threads)")
    c.print(table(title, ["parameter", "fitted"], _rows(profile)))
    residuals = [[kind, f"{err:.1%}"] for kind, err in cal["residual_by_kind"].items()]
    c.print(table("mean |predicted / measured - 1| by kind", ["kind", "residual"], residuals))
    c.print(f"fit residual {cal['fit_residual']:.1%}; wrote {path} (use it with --cluster {path})")


@cli.command("calibrate")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="What to measure: this host's CPU (fp32) or the first CUDA GPU (bf16).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Profile YAML to write.")
@click.option("--quick", is_flag=True, help="Fewer shapes and repeats (about 20 s instead of 60 s).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch intra-op threads while measuring [default: torch's]; recorded in the profile.")
@click.option("--no-collectives", is_flag=True, help="Skip the 2-process all-reduce benchmark.")
@click.option("--json", "as_json", is_flag=True, help="Print the profile as one JSON object.")
def calibrate_command(device, output, quick, threads, no_collectives, as_json):
    """Measure GEMMs, memory, attention, overheads and all-reduce here; fit and write a profile."""
    from cost_models.calibration import calibrate, profile_to_yaml
    from ir.errors import UserError
    from ir.fileio import write_atomic

    folder = Path(output).parent
    if not folder.is_dir():  # before a minute of measuring, not after
        raise UserError(f"cannot write {output}: folder {folder} does not exist; create it first")
    profile = calibrate(device, quick=quick, threads=threads, collectives=not no_collectives)
    write_atomic(output, profile_to_yaml(profile))
    if as_json:
        emit_json(profile)
    else:
        _print(profile, output)
