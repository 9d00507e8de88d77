"""`planner inspect`: per-layer parameters, FLOPs, activation and KV bytes of a model."""

from __future__ import annotations

import click

from planner.cli import cli
from planner.cli.output import console, emit_json, human, table
from planner.input_bounds import MAX_BATCH, MAX_TOKENS, Count
from planner.presets import PRESETS


def _runs(rows: list[dict]) -> list[tuple[dict, int, int]]:
    """Consecutive layers with one signature folded: (first row, first index, count)."""
    runs: list[tuple[dict, int, int]] = []
    for row in rows:
        if runs and runs[-1][0]["signature"] == row["signature"]:
            first, start, count = runs[-1]
            runs[-1] = (first, start, count + 1)
        else:
            runs.append((row, row["index"], 1))
    return runs


def _name(first: dict, count: int, rows: list[dict], start: int) -> str:
    if count == 1:
        return first["name"]
    return f"{first['name']} .. {rows[start + count - 1]['name']}"


def _print_report(report: dict, all_layers: bool) -> None:
    rows = report["layers"]
    runs = [(r, r["index"], 1) for r in rows] if all_layers else _runs(rows)
    out = []
    for first, start, count in runs:
        out.append([
            f"{start}" if count == 1 else f"{start}-{start + count - 1}",
            _name(first, count, rows, start) + (" (moe)" if first["is_moe"] else ""),
            f"x{count}", human(first["param_count"]), human(first["flops"], "FLOP"),
            human(first["activation_bytes"], "B", 1024), human(first["kv_bytes_per_token"], "B", 1024),
        ])
    shape = f"batch {report['batch']}" + (f", seq {report['seq_len']}" if report["seq_len"] else "")
    if report["context_len"]:
        shape += f", context {report['context_len']}"
    act = "activations kept for backward" if report["phase"] == "train" else "activations written"
    t = table(f"{report['model']} ({report['architecture']}, {report['dtype']}) {report['phase']}: {shape}",
              ["layers", "name", "count", "params/layer", "FLOPs/layer", "act/layer", "KV/token/layer"],
              out, right_from=2)
    c = console()
    c.print(t)
    tot = report["totals"]
    c.print(f"totals: {tot['param_count']:,} parameters ({human(tot['param_bytes'], 'B', 1024)}), "
            f"{human(tot['flops'], 'FLOP')}, {act} {human(tot['activation_bytes'], 'B', 1024)}, "
            f"KV cache {human(tot['kv_bytes_per_token'], 'B', 1024)} per token")
    c.print(f"{len(rows)} layers, {report['distinct_blocks']} distinct block(s), {report['num_ops']} ops, "
            f"captured with {report['capture_method']}")


def _list_presets() -> None:
    rows = [[p.name, p.architecture, p.description or p.source] for p in PRESETS.values()]
    console().print(table("model presets", ["name", "architecture", "source"], rows, right_from=9))


@cli.command("inspect")
@click.argument("model", required=False)
@click.option("--batch", type=Count(MAX_BATCH), default=1, show_default=True, help="Sequences (or images) per batch.")
@click.option("--seq-len", type=Count(MAX_TOKENS), default=None,
              help="Tokens per sequence [default: min(2048, max positions)].")
@click.option("--phase", type=click.Choice(["prefill", "decode", "train"]), default="prefill", show_default=True)
@click.option("--context-len", type=Count(MAX_TOKENS), default=None,
              help="Decode: tokens in the KV cache [default: seq-len].")
@click.option("--dtype", type=click.Choice(["bf16", "fp16", "fp32"]), default="bf16", show_default=True)
@click.option("--all-layers", is_flag=True, help="One row per layer (default folds identical runs).")
@click.option("--ops", "show_ops", is_flag=True, help="Print the graph's ops (repeated blocks folded).")
@click.option("--list", "list_presets", is_flag=True, help="List the model presets and exit.")
@click.option("--trust-model-code", is_flag=True,
              help="Allow MODEL to be Python code (pkg.module:factory), which is imported and run.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def inspect_command(model, batch, seq_len, phase, context_len, dtype, all_layers, show_ops, list_presets, as_json,
                    trust_model_code):
    """Per-layer table of MODEL: parameters, FLOPs, activation bytes, KV bytes per token.

    MODEL is a preset name, a Hugging Face config.json (or its folder) or pkg.module:factory
    (with --trust-model-code).
    """
    import planner

    if list_presets:
        if as_json:
            emit_json({"presets": {p.name: {"architecture": p.architecture, "source": p.source}
                                   for p in PRESETS.values()}})
        else:
            _list_presets()
        return
    if not model:
        raise click.UsageError("missing MODEL (a preset name, config.json path or pkg.module:factory)")
    report = planner.inspect(model, batch=batch, seq_len=seq_len, phase=phase,
                             context_len=context_len, dtype=dtype, trust_model_code=trust_model_code)
    if as_json:
        emit_json(report)
        return
    _print_report(report, all_layers)
    if show_ops:
        from ir.printer import format_graph

        click.echo(format_graph(planner.capture(model, batch=batch, seq_len=seq_len, dtype=dtype,
                                                trust_model_code=trust_model_code)))
