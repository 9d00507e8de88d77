"""Capture speed and memory: aot-planner capture vs plain torch.export of the whole model.

Prints, per model: our capture time (first capture in this process, after imports, and warm),
plain torch.export of the full meta model measured in the same run, the ratio, and peak RSS;
then `planner inspect llama-3.1-70b` end to end in a fresh process.

Targets (issue [capture]): llama-3.1-70b <= 2 s, llama-3.1-405b <= 4 s, peak RSS <= 3 GB,
`planner inspect llama-3.1-70b` <= 8 s end to end on a 2-core machine.

    python3 benchmarks/bench_capture.py [--skip-baseline]
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


def _inspect_end_to_end(cache: str) -> float:
    env = {**os.environ, "AOT_PLANNER_CACHE": cache}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "planner", "inspect", "llama-3.1-70b", "--json"],
                   check=True, capture_output=True, cwd=ROOT, env=env)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-baseline", action="store_true", help="skip plain torch.export (slow)")
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
