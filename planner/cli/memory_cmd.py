"""`planner memory pack INPUT.csv`: static buffer packing of a MiniMalloc-format CSV.

Prints buffers, capacity, liveness lower bound, peak, status and time (or one JSON object with
`--json`, bytes and seconds), writes `id,lower,upper,size,offset` with `-o`, and exits 2 with one
line when no packing is found within the time limit.
"""

from __future__ import annotations

from pathlib import Path

import click

from ir.errors import UserError
from passes.buffer_packing import PackingConfig, pack, read_csv, verify_packing, write_csv
from planner.cli import cli
from planner.cli.output import console, emit_json, output_path, table
from planner.input_bounds import MAX_SECONDS, Count, Positive


@cli.group()
def memory() -> None:
    """Memory planning tools: static buffer packing."""


def _limit(seconds: float) -> str:
    return f"{seconds:g} s"


@memory.command("pack")
@click.argument("input_csv", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--capacity", type=Count(2**62), default=None,
              help="Address capacity in bytes (default: the number in the file name, else minimise the peak).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the packing as CSV with an offset column.")
@click.option("--time-limit", type=Positive(MAX_SECONDS), default=10.0, show_default=True, help="Seconds to search.")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True,
              help="Random seed of the CP-SAT fallback.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def pack_cmd(input_csv: Path, capacity: int | None, output: Path | None, time_limit: float, seed: int,
             as_json: bool) -> None:
    """Give every buffer of INPUT_CSV (id,lower,upper,size) an offset within the capacity."""
    if output is not None:
        output_path(str(output), "-o")
    instance = read_csv(input_csv, capacity)
    solution = pack(instance, PackingConfig(time_limit_s=time_limit, seed=seed))
    if not solution.found:
        cap = f"{instance.capacity:,}" if instance.capacity is not None else "?"
        proof = "none exists" if solution.status == "infeasible" else f"none found in {_limit(time_limit)}"
        way_out = "raise --capacity" + (" or --time-limit" if solution.status == "unknown" else "")
        raise UserError(
            f"no packing of {input_csv.name} within capacity {cap}: {proof}; the liveness lower bound is "
            f"{solution.lower_bound_bytes:,}; {way_out}"
        )
    problems = verify_packing(instance, solution.offsets)
    if problems:  # a solver bug, never the user's fault
        raise RuntimeError(f"packing failed verification: {problems[0]}")
    if output is not None:
        write_csv(output, instance, solution)
    summary = {
        "input": str(input_csv),
        "buffers": len(instance.buffers),
        "capacity_bytes": instance.capacity,
        "lower_bound_bytes": solution.lower_bound_bytes,
        "peak_bytes": solution.peak_bytes,
        "status": solution.status,
        "method": solution.method,
        "solve_time_s": round(solution.solve_time_s, 6),
        "output": str(output) if output is not None else None,
    }
    if as_json:
        emit_json(summary)
        return
    cap_text = f"{instance.capacity:,}" if instance.capacity is not None else "none (minimise peak)"
    rows = [["buffers", f"{len(instance.buffers):,}"], ["capacity (bytes)", cap_text],
            ["liveness lower bound (bytes)", f"{solution.lower_bound_bytes:,}"],
            ["peak (bytes)", f"{solution.peak_bytes:,}"], ["status", solution.status],
            ["method", solution.method], ["time", f"{solution.solve_time_s:.2f} s"]]
    if output is not None:
        rows.append(["written", str(output)])
    console().print(table(f"Packing of {input_csv.name}", ["", "value"], rows))
