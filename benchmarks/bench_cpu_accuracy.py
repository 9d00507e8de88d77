"""Accuracy of calibrated CPU predictions: measured eager latency of real models on this machine
against `planner.estimate` with a calibrated profile.

Models (`tiny-llama`, `gpt2`) are built from their presets with random weights (seed 0) in float32,
in eval mode under `torch.inference_mode()`. Prefill: one forward of `batch` prompts of `seq`
tokens without a cache. Decode: the prompt of `context - 1` tokens runs once with `use_cache=True`,
then one step of one new token per sequence is timed with that cache (the cache is cropped back
after each step), so the step attends to `context` tokens as `ir.phases` defines decode. Times are
best (minimum) wall-clock time of repeats after warm-up, as timeit recommends, at the torch thread
count the profile was calibrated with. Run it on an otherwise idle machine: other processes inflate
the measurements (the load average is printed).

    python benchmarks/bench_cpu_accuracy.py                       # calibrate, then measure
    python benchmarks/bench_cpu_accuracy.py --profile cpu.yaml    # use an existing profile
    python benchmarks/bench_cpu_accuracy.py --write               # store the 80% error bands
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PREFILL = {"tiny-llama": [(1, 32), (1, 128), (4, 64), (4, 256), (1, 512)],
           "gpt2": [(1, 32), (1, 128), (4, 64), (2, 256), (1, 512)]}
DECODE = {"tiny-llama": [(1, 64), (1, 512), (8, 128), (16, 256)],
          "gpt2": [(1, 64), (1, 512), (4, 128), (8, 256), (16, 64)]}
BANDS_FILE = ROOT / "cost_models" / "data" / "uncertainty_cpu.yaml"


def build(name: str):
    """The preset's transformers model on CPU in float32 with seeded random weights, in eval mode."""
    import torch

    from ir.hf_models import model_class
    from planner.presets import get_preset, preset_config

    config = preset_config(get_preset(name))
    torch.manual_seed(0)
    return model_class(config)(config).float().eval(), config


def timed(fn, repeats: int) -> float:
    """Best seconds of `fn` over repeats; cheap calls get more repeats (up to 60, about 1 s)."""
    from cost_models.microbench import median_time

    once = median_time(fn, repeats=1, warmup=2)
    return median_time(fn, repeats=max(repeats, min(60, int(1.0 / max(once, 1e-6)))), warmup=0)


def measure_model(name: str, repeats: int) -> list[dict]:
    """Median prefill and decode-step seconds of one model at every shape of PREFILL / DECODE."""
    import torch

    model, config = build(name)
    gen = torch.Generator().manual_seed(1)
    rows = []
    with torch.inference_mode():
        for batch, seq in PREFILL[name]:
            ids = torch.randint(0, config.vocab_size, (batch, seq), generator=gen)
            seconds = timed(lambda ids=ids: model(input_ids=ids, use_cache=False), repeats)
            rows.append({"model": name, "phase": "prefill", "batch": batch, "len": seq, "measured_s": seconds})
        for batch, context in DECODE[name]:
            prompt = torch.randint(0, config.vocab_size, (batch, context - 1), generator=gen)
            cache = model(input_ids=prompt, use_cache=True).past_key_values
            token = torch.randint(0, config.vocab_size, (batch, 1), generator=gen)

            def step(token=token, cache=cache):
                model(input_ids=token, past_key_values=cache, use_cache=True)
                cache.crop(-1)

            seconds = timed(step, repeats)
            rows.append({"model": name, "phase": "decode", "batch": batch, "len": context, "measured_s": seconds})
    return rows


def measure_in_fresh_process(name: str, repeats: int, threads: int) -> list[dict]:
    """`measure_model` in a new Python process, as a user runs a model: the heap state calibration leaves
    behind (large GEMM buffers) changes eager per-op costs of tiny models by tens of percent."""
    import subprocess

    cmd = [sys.executable, __file__, "--measure", name, "--repeats", str(repeats), "--threads", str(threads or 0)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def predict(rows: list[dict], profile: str) -> None:
    """Add `predicted_s` and `error` (predicted / measured - 1) to every row."""
    import planner

    for row in rows:
        r = planner.estimate(row["model"], profile, row["phase"], batch=row["batch"], input_len=row["len"],
                             dtype="fp32")
        row["predicted_s"] = r["latency_s"] if row["phase"] == "prefill" else r["tpot_s"]
        row["error"] = row["predicted_s"] / row["measured_s"] - 1.0


def coverage_80(errors: list[float]) -> float:
    """The relative error that covers 80% of the points (nearest-rank quantile of |error|)."""
    ranked = sorted(abs(e) for e in errors)
    return ranked[max(0, -(-8 * len(ranked) // 10) - 1)]


def report(rows: list[dict]) -> float:
    print(f"{'model':<11} {'phase':<8} {'shape':<14} {'measured':>11} {'predicted':>11} {'error':>8}")
    for r in rows:
        label = f"b={r['batch']} {'seq' if r['phase'] == 'prefill' else 'ctx'}={r['len']}"
        print(f"{r['model']:<11} {r['phase']:<8} {label:<14} {r['measured_s'] * 1e3:>9.2f}ms "
              f"{r['predicted_s'] * 1e3:>9.2f}ms {r['error']:>+8.1%}")
    for key in sorted({(r["model"], r["phase"]) for r in rows}):
        errs = [abs(r["error"]) for r in rows if (r["model"], r["phase"]) == key]
        print(f"MAPE {key[0]} {key[1]}: {statistics.fmean(errs):.1%} over {len(errs)} points")
    mape = statistics.fmean(abs(r["error"]) for r in rows)
    print(f"MAPE all: {mape:.1%} over {len(rows)} points (target <= 15%)")
    return mape


def write_bands(rows: list[dict], profile_note: str) -> None:
    import yaml

    from ir.fileio import write_atomic

    bands = {}
    for phase in ("prefill", "decode"):
        errs = [r["error"] for r in rows if r["phase"] == phase]
        models = sorted({r["model"] for r in rows if r["phase"] == phase})
        bands[f"cpu:{phase}"] = {
            "relative_error_80": round(coverage_80(errs), 3), "points": len(errs),
            "basis": f"benchmarks/bench_cpu_accuracy.py: {', '.join(models)} eager fp32 on this host "
                     f"against a calibrated profile ({profile_note})"}
    header = "# Written by benchmarks/bench_cpu_accuracy.py --write; read by cost_models/uncertainty.py\n"
    BANDS_FILE.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(BANDS_FILE, header + yaml.safe_dump({"bands": bands}, sort_keys=False, width=120))
    print(f"wrote {BANDS_FILE.relative_to(ROOT)}")


def _profile(args) -> tuple[str, int]:
    """(profile path, torch threads it was calibrated with), calibrating first without --profile."""
    from cost_models.calibration import calibrate, profile_to_yaml
    from cost_models.hardware import load_yaml

    if args.profile:
        data = load_yaml(args.profile)
        return args.profile, int((data.get("calibration") or {}).get("torch_threads") or 0)
    start = time.perf_counter()
    profile = calibrate("cpu", quick=args.quick, threads=args.threads, collectives=False)
    path = Path(tempfile.mkdtemp()) / "cpu-calibrated.yaml"
    path.write_text(profile_to_yaml(profile))
    print(f"calibrated in {time.perf_counter() - start:.0f} s: {path}")
    return str(path), profile["calibration"]["torch_threads"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", help="calibrated profile YAML (default: calibrate now)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads when calibrating here")
    parser.add_argument("--quick", action="store_true", help="quick calibration")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--models", default="tiny-llama,gpt2")
    parser.add_argument("--write", action="store_true", help=f"store the 80%% bands in {BANDS_FILE.name}")
    parser.add_argument("--json", help="also write every point to this JSON file")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: measure one model, print JSON rows
    args = parser.parse_args(argv)
    import torch

    if args.measure:
        if args.threads:
            torch.set_num_threads(args.threads)
        print(json.dumps(measure_model(args.measure, args.repeats)))
        return 0

    profile, threads = _profile(args)
    if threads:
        torch.set_num_threads(threads)
    rows = [row for name in args.models.split(",") for row in measure_in_fresh_process(name, args.repeats, threads)]
    predict(rows, profile)
    print(f"torch threads: {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}, profile: {profile}")
    mape = report(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.write:
        write_bands(rows, Path(profile).name)
    return 0 if mape <= 0.15 else 1


if __name__ == "__main__":
    sys.exit(main())
