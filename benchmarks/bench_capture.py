"""Capture speed and memory: aot-planner capture vs plain torch.export of the whole model.

Prints, per model: our capture time (first capture in this process, after imports, and warm),
plain torch.export of the full meta model measured in the same run, the ratio, and peak RSS;
then `planner inspect llama-3.1-70b` end to end in a fresh process.

Targets (issue [capture]): llama-3.1-70b <= 2 s, llama-3.1-405b <= 4 s, peak RSS <= 3 GB,
`planner inspect llama-3.1-70b` <= 8 s end to end on a 2-core machine.

Today's architectures (issue 19): every new preset and Mamba-130m (its published config.json,
tests/data/configs/mamba_130m.json) captured cold in-process (no graph cache, transformers module
already imported) at 2048 tokens in <= 5 s, against plain torch.export of the same full meta model
in the same run (for Mamba that export unrolls the selective scan once per token).

    python3 benchmarks/bench_capture.py [--skip-baseline] [--today-only] [--models a,b]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = ("llama-3.1-70b", "llama-3.1-405b")
TARGETS_S = {"llama-3.1-70b": 2.0, "llama-3.1-405b": 4.0}
TODAY = ("deepseek-v3", "deepseek-r1", "kimi-k2", "qwen3-235b-a22b", "gpt-oss-20b", "gpt-oss-120b", "llama-4-scout",
         "llama-4-maverick", "gemma-3-27b", "mistral-7b", "qwen3-next-80b-a3b",
         str(ROOT / "tests" / "data" / "configs" / "mamba_130m.json"))
TODAY_TARGET_S = 5.0


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # ru_maxrss is KiB on Linux


def _ours(name: str) -> tuple[float, float, int]:
    import planner

    planner.api._CACHE.clear()
    started = time.perf_counter()
    graph = planner.capture(name, seq_len=2048)
    first = time.perf_counter() - started
    planner.api._CACHE.clear()
    started = time.perf_counter()
    planner.capture(name, seq_len=2048)
    return first, time.perf_counter() - started, len(graph.ops)


def _plain_export(name: str) -> tuple[float, int]:
    import torch

    from planner.model_source import resolve

    source = resolve(name, seq_len=2048)
    started = time.perf_counter()
    program = torch.export.export(source.module, source.args, kwargs=source.kwargs, strict=False)
    return time.perf_counter() - started, len(program.graph.nodes)


def _cold(name: str) -> tuple[float, int, int]:
    """Seconds of a first capture with no graph cache (its transformers module imported first)."""
    import planner
    from ir.hf_models import model_class
    from planner.model_source import resolve

    model_class(resolve(name, seq_len=16).module.config)  # import the modeling module outside the timing
    planner.api._CACHE.clear()
    previous = os.environ.get("AOT_PLANNER_CACHE")
    os.environ["AOT_PLANNER_CACHE"] = "off"
    try:
        started = time.perf_counter()
        graph = planner.capture(name, seq_len=2048)
        elapsed = time.perf_counter() - started
    finally:
        os.environ.pop("AOT_PLANNER_CACHE") if previous is None else os.environ.update(AOT_PLANNER_CACHE=previous)
    return elapsed, len(graph.ops), sum(1 for layer in graph.layers if layer.caches)


def today(names: list[str], skip_baseline: bool) -> None:
    print(f"\n{'model (2048 tokens, cold)':28} {'ours':>7} {'target':>7} {'ops':>7} {'plain export':>13} "
          f"{'nodes':>7} {'speed-up':>9}")
    for name in names:
        ours, ops, _ = _cold(name)
        label = Path(name).stem if name.endswith(".json") else name
        ok = "ok" if ours <= TODAY_TARGET_S else "MISS"
        baseline = f"{'-':>13} {'-':>7} {'-':>9}"
        if not skip_baseline:
            base, nodes = _plain_export(name)
            baseline = f"{base:12.2f}s {nodes:7d} {base / ours:8.1f}x"
        print(f"{label:28} {ours:6.2f}s {TODAY_TARGET_S:6.1f}s {ops:7d} {baseline}  {ok}", flush=True)


def _inspect_end_to_end(cache: str) -> float:
    env = {**os.environ, "AOT_PLANNER_CACHE": cache}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "planner", "inspect", "llama-3.1-70b", "--json"],
                   check=True, capture_output=True, cwd=ROOT, env=env)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-baseline", action="store_true", help="skip plain torch.export (slow)")
    parser.add_argument("--today-only", action="store_true", help="only today's architectures (issue 19)")
    parser.add_argument("--models", help="comma-separated subset of today's architectures")
    args = parser.parse_args()
    if args.today_only or args.models:
        names = [m for m in TODAY if not args.models or Path(m).stem in args.models.split(",")
                 or m in args.models.split(",")]
        today(names, args.skip_baseline)
        return
    import transformers.models.llama.modeling_llama  # noqa: F401

    import planner  # noqa: F401  (imports are not part of the timed capture)

    rows = []
    for name in MODELS:
        first, warm, ops = _ours(name)
        rows.append((name, first, warm, ops))
    rss = _peak_rss_gb()
    print(f"{'model':16} {'ours first':>10} {'ours warm':>10} {'target':>7} {'ops':>6} "
          f"{'plain export':>13} {'nodes':>6} {'speed-up':>9}")
    for name, first, warm, ops in rows:
        if args.skip_baseline:
            base, nodes = float("nan"), 0
        else:
            base, nodes = _plain_export(name)
        ok = "ok" if first <= TARGETS_S[name] else "MISS"
        print(f"{name:16} {first:9.2f}s {warm:9.2f}s {TARGETS_S[name]:6.1f}s {ops:6d} "
              f"{base:12.2f}s {nodes:6d} {base / first:8.1f}x  {ok}")
    print(f"peak RSS during our captures: {rss:.2f} GB (target <= 3 GB) "
          f"{'ok' if rss <= 3 else 'MISS'}")
    cold = _inspect_end_to_end("off")
    print(f"planner inspect llama-3.1-70b end to end, cold (no graph cache): {cold:.2f} s "
          f"(target <= 8 s) {'ok' if cold <= 8 else 'MISS'}")
    with tempfile.TemporaryDirectory() as cache:
        _inspect_end_to_end(cache)
        warm = _inspect_end_to_end(cache)
    print(f"planner inspect llama-3.1-70b end to end, graph cached on disk: {warm:.2f} s "
          f"({cold / warm:.1f}x faster than cold)")
    today(list(TODAY), args.skip_baseline)


if __name__ == "__main__":
    main()
