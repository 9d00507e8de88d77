"""`planner calibrate`: measure this machine and write a device profile YAML (cost_models.calibration), or, with
`--engine vllm`, measure a running vLLM server and write its engine profile (planner.engines.calibrate)."""

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


def _host() -> str:
    """This machine in a few words: CPU model and logical CPUs."""
    import os

    try:
        name = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        name = "an unknown CPU"
    return f"{name}, {os.cpu_count()} logical CPUs"


def _engine_profile(url, model, model_name, output, budget, profile_device, vllm_python, quick, nice, passes,
                    as_json) -> None:
    """`--engine vllm`: the loads of planner.engines.calibrate against the server at `url`, fit, profile + rows."""
    import tempfile

    import yaml

    from ir.errors import UserError
    from ir.fileio import write_atomic
    from planner.engines.calibrate import calibrate_vllm, profile_document, write_rows
    from planner.engines.server import raise_group_priority
    from planner.engines.vllm_env import vllm_python as default_python
    from planner.engines.vllm_env import why_not_vllm

    python = vllm_python or default_python()
    if python is None:
        raise UserError(f"{why_not_vllm()}; or give --vllm-python")
    if model_name is None:
        import planner

        model_name = planner.capture(model, seq_len=16).model
    with tempfile.TemporaryDirectory() as folder:
        prefix = ["nice", "-n", str(nice)] if nice else None
        if nice:
            raise_group_priority(nice)  # the client's session group too (kernel autogroups)
        fit, rows, block, speeds = calibrate_vllm(python, url.rstrip("/"), model, Path(folder), budget, quick, prefix,
                                                  passes)
    out = Path(output)
    rows_file = out.with_suffix(".rows.csv")
    write_rows(rows_file, rows, fit)
    source = (f"measured by `planner calibrate --engine vllm` with vLLM's benchmark client against a server serving "
              f"{Path(model).name} (token budget {budget}) on {_host()}"
              + (f", {passes} passes at their mean speed (each pass's: {', '.join(f'x{v:.3f}' for v in speeds)})"
                 if passes > 1 else "") + f"; fit rows in {rows_file.name}")
    document = profile_document(fit, model_name, profile_device, block, rows_file.name, source)
    write_atomic(out, yaml.safe_dump(document, sort_keys=False))
    if as_json:
        emit_json(document)
        return
    c = console()
    coefficients = [[k, f"{v:.6g}"] for k, v in fit.iteration.as_dict().items()]
    coefficients.append(["request_latency_ms", f"{fit.request_latency_ms:.6g}"])
    if fit.client_path_ms is not None:
        coefficients.append(["client_path_ms (of request_latency_ms)", f"{fit.client_path_ms:.6g}"])
    c.print(table(f"{model_name} on {profile_device}: {len(rows)} rows, block size {block}", ["coefficient", "fitted"],
                  coefficients))
    c.print(table("|predicted / measured - 1| by kind of row", ["kind", "rows", "mean", "max"],
                  [[k, str(e["rows"]), f"{e['mean_abs_rel_error']:.1%}", f"{e['max_abs_rel_error']:.1%}"]
                   for k, e in fit.errors.items()]))
    if fit.held_out_errors:
        c.print(table("held out (loads the fit did not see: prompts arriving beside running decodes), "
                      "|predicted / measured - 1|", ["kind", "rows", "mean", "max", "mean signed"],
                      [[k, str(e["rows"]), f"{e['mean_abs_rel_error']:.1%}", f"{e['max_abs_rel_error']:.1%}",
                        f"{e['mean_rel_error']:+.1%}"] for k, e in fit.held_out_errors.items()]))
    if passes > 1:
        c.print(f"{passes} passes, each one's speed against the fit at their mean (over 1 slower): "
                + ", ".join(f"x{v:.3f}" for v in speeds))
    c.print(f"wrote {out} and {rows_file} (use it with --engine-profile {out})")


@cli.command("calibrate")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="What to measure: this host's CPU (fp32) or the first CUDA GPU (bf16).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Profile YAML to write.")
@click.option("--quick", is_flag=True, help="Fewer shapes and repeats (about 20 s instead of 60 s).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch intra-op threads while measuring [default: torch's]; recorded in the profile.")
@click.option("--no-collectives", is_flag=True, help="Skip the 2-process all-reduce benchmark.")
@click.option("--engine", type=click.Choice(["vllm"]), default=None,
              help="Measure a running serving engine instead (with --url, --model) and write its engine profile.")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="Engine: the server's base URL.")
@click.option("--model", default=None, help="Engine: the model folder the server serves (also its tokenizer).")
@click.option("--model-name", default=None, help="Engine: the model's name in the profile [default: the planner's].")
@click.option("--max-num-batched-tokens", "budget", type=click.IntRange(min=1), default=2048, show_default=True,
              help="Engine: the server's token budget per iteration (how long prompts are chunked).")
@click.option("--profile-device", default="cpu", show_default=True,
              help="Engine: the device name the profile is for (a `planner hardware list` name).")
@click.option("--vllm-python", type=click.Path(dir_okay=False), default=None,
              help="Engine: python of the vLLM environment [default: tools/make_vllm_env.sh's].")
@click.option("--nice", type=int, default=0, show_default=True,
              help="Engine: niceness of the benchmark client (a loaded machine delays a client at 0; lowering it needs root).")
@click.option("--passes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Engine: run the loads this many times (about 40 s each) and fit them with one speed per pass, "
                   "priced at their mean speed: a profile of a machine whose speed drifts, over the whole window.")
@click.option("--json", "as_json", is_flag=True, help="Print the profile as one JSON object.")
def calibrate_command(device, output, quick, threads, no_collectives, engine, url, model, model_name, budget,
                      profile_device, vllm_python, nice, passes, as_json):
    """Measure GEMMs, memory, attention, overheads and all-reduce here; fit and write a profile.

    With --engine vllm: drive the vLLM server at --url with vLLM's benchmark client (closed-loop loads) and fit the
    per-iteration costs the serving simulator uses (cost_models/serving/engine_profile.py).
    """
    from cost_models.calibration import calibrate, profile_to_yaml
    from ir.errors import UserError
    from ir.fileio import write_atomic

    folder = Path(output).parent
    if not folder.is_dir():  # before a minute of measuring, not after
        raise UserError(f"cannot write {output}: folder {folder} does not exist; create it first")
    if engine:
        if not model:
            raise UserError("--engine vllm needs --model: the model folder the server serves (its tokenizer too)")
        _engine_profile(url, model, model_name, output, budget, profile_device, vllm_python, quick, nice, passes,
                        as_json)
        return
    profile = calibrate(device, quick=quick, threads=threads, collectives=not no_collectives)
    write_atomic(output, profile_to_yaml(profile))
    if as_json:
        emit_json(profile)
    else:
        _print(profile, output)
