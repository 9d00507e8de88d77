"""`planner estimate`: predicted time, throughput, memory and energy of one configuration."""

from __future__ import annotations

import click

from cost_models.cluster import MAX_DEVICES
from cost_models.parallel_config import ATTENTION_KERNELS, COLLECTIVE_IMPLS, RUNTIMES
from planner.cli import cli
from planner.cli.output import check_cluster_text, console, emit_json, human, table
from planner.input_bounds import MAX_BATCH, MAX_RATE, MAX_TOKENS, Count, Positive

_KEYS = [("fits", None), ("memory_per_device_bytes", "B"), ("step_time_s", "s"), ("latency_s", "s"),
         ("ttft_s", "s"), ("tpot_s", "s"), ("tokens_per_s", "tok/s"), ("output_tokens_per_s", "tok/s"),
         ("tflops_per_device", "TFLOP/s"), ("mfu", None), ("max_batch", None), ("energy_per_token_j", "J")]


def _fmt(value, unit):
    if value is None:
        return "-"
    if unit == "B":
        return human(value, "B", 1024)
    if unit == "s":
        return f"{value * 1e3:.3f} ms" if value < 1 else f"{value:.3f} s"
    if isinstance(value, float):
        return f"{value:,.4g} {unit or ''}".strip()
    return str(value)


def _print(r: dict) -> None:
    p = r["parallel"]
    rows = [[k, _fmt(r.get(k), unit)] for k, unit in _KEYS if r.get(k) is not None]
    title = (f"{r['model']} {r['phase']} on {r['cluster']} ({r.get('device')}): "
             f"dp={p['dp']} tp={p['tp']} pp={p['pp']} ep={p['ep']}")
    c = console()
    c.print(table(title, ["metric", "value"], rows))
    c.print("breakdown: " + ", ".join(f"{k} {_fmt(v, 's')}" for k, v in r["breakdown"].items()))
    mem = r.get("memory_breakdown_bytes") or {}
    c.print("memory per device: " + ", ".join(f"{k} {human(v, 'B', 1024)}" for k, v in mem.items())
            + f" of {human(r.get('memory_capacity_bytes', 0), 'B', 1024)}")
    band = r.get("uncertainty") or {}
    if band.get("relative_error_80") is not None:
        c.print(f"uncertainty: +-{band['relative_error_80']:.0%} at 80% coverage ({band['basis']})")
    else:
        c.print(f"uncertainty: {band.get('basis', 'unknown')}")


@cli.command("estimate")
@click.argument("model")
@click.option("--cluster", default=None, help="Shorthand (8xH100-SXM, 2x8xA100-SXM-80GB, 4xcpu) or YAML [default: 8xH100-SXM].")
@click.option("--phase", type=click.Choice(["train", "prefill", "decode", "serve"]), default="decode", show_default=True)
@click.option("--tp", type=Count(MAX_DEVICES), default=1, show_default=True)
@click.option("--pp", type=Count(MAX_DEVICES), default=1, show_default=True)
@click.option("--dp", type=Count(MAX_DEVICES), default=None, help="[default: devices left after tp x pp]")
@click.option("--ep", type=Count(MAX_DEVICES), default=1, show_default=True)
@click.option("--batch", type=Count(MAX_BATCH), default=1, show_default=True, help="Global batch (sequences).")
@click.option("--input-len", type=Count(MAX_TOKENS), default=None,
              help="Prompt / training sequence / decode context length.")
@click.option("--output-len", type=Count(MAX_TOKENS), default=128, show_default=True)
@click.option("--microbatch-size", type=Count(MAX_BATCH), default=None)
@click.option("--recompute", type=click.Choice(["none", "selective", "full"]), default="none", show_default=True)
@click.option("--sequence-parallel", is_flag=True)
@click.option("--zero-stage", type=click.IntRange(0, 3), default=0, show_default=True)
@click.option("--dtype", type=click.Choice(["bf16", "fp16", "fp8", "fp32"]), default="bf16", show_default=True)
@click.option("--weight-dtype", type=click.Choice(["bf16", "fp16", "fp8", "int8", "int4", "fp32"]), default=None)
@click.option("--kv-dtype", type=click.Choice(["bf16", "fp16", "fp8", "int8", "fp32"]), default=None)
@click.option("--qps", type=Positive(MAX_RATE), default=None, help="Serve: Poisson arrival rate (requests/s).")
@click.option("--collectives", type=click.Choice(COLLECTIVE_IMPLS), default="auto", show_default=True,
              help="All-reduce implementation: NCCL's own choice, or an inference engine's custom all-reduce.")
@click.option("--attention", type=click.Choice(ATTENTION_KERNELS), default="flash", show_default=True,
              help="Attention kernel: fused (flash) or unfused (the score matrix in memory, pre-FlashAttention).")
@click.option("--runtime", type=click.Choice(RUNTIMES), default="engine", show_default=True,
              help="Host side: a Python-scheduled engine, a C++ engine (TensorRT-LLM) or a compiled program.")
@click.option("--trust-model-code", is_flag=True,
              help="Allow MODEL to be Python code (pkg.module:factory), which is imported and run.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def estimate_command(model, cluster, phase, as_json, trust_model_code, **options):
    """Predict one configuration of MODEL on a cluster: time, throughput, memory, energy."""
    import planner

    check_cluster_text(cluster)
    input_len = options.get("input_len")
    result = planner.estimate(model, cluster, phase, seq_len=input_len if input_len and input_len <= 8192 else None,
                              trust_model_code=trust_model_code, **options)
    if as_json:
        emit_json(result)
    else:
        _print(result)
