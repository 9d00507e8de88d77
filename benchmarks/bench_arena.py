"""Static activation arenas of captured graphs: packed peak against the liveness lower bound.

For each graph, buffers come from `passes.buffer_lifetimes` (the captured op order, and the order of
`reorder_for_peak` when it lowers the bound), are packed by `passes.buffer_packing.pack` (greedy,
then exact search) and checked by `verify_packing`. Targets (issue [memory]): peak <= 1.02 x lower
bound, solve <= 10 s per graph of up to 5,000 buffers; the ratio over greedy-by-size is printed too.

    python benchmarks/bench_arena.py [--time-limit 10] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time

import planner
from passes.buffer_lifetimes import forward_lifetimes, reorder_for_peak, training_lifetimes
from passes.buffer_packing import PackingConfig, greedy_by_size, pack, peak_of, verify_packing

# (label, preset, capture kwargs, layer (None = whole graph), training fwd+bwd)
CASES = (
    ("gpt2 fwd s1024", "gpt2", {"seq_len": 1024}, None, False),
    ("bert-base fwd s512", "bert-base", {"seq_len": 512}, None, False),
    ("llama-3-8b block prefill s2048", "llama-3-8b", {"seq_len": 2048}, 1, False),
    ("llama-3-8b fwd s2048", "llama-3-8b", {"seq_len": 2048}, None, False),
    ("resnet-50 fwd b8", "resnet-50", {"batch": 8}, None, False),
    ("vit-b-16 fwd b8", "vit-b-16", {"batch": 8}, None, False),
    ("gpt2 train fwd+bwd s1024", "gpt2", {"seq_len": 1024}, None, True),
    ("tiny-llama train fwd+bwd s256", "tiny-llama", {"seq_len": 256}, None, True),
)


def run_case(label: str, model: str, kwargs: dict, layer: int | None, train: bool, time_limit: float) -> dict:
    graph = planner.capture(model, **kwargs)
    if train:
        inst = training_lifetimes(graph, layer)
        reordered = False
    else:
        inst = forward_lifetimes(graph, layer)
        alt = forward_lifetimes(graph, layer, order=reorder_for_peak(graph, layer))
        reordered = alt.liveness_lower_bound() < inst.liveness_lower_bound()
        inst = alt if reordered else inst
    start = time.perf_counter()
    sol = pack(inst, PackingConfig(time_limit_s=time_limit))
    solve_s = time.perf_counter() - start
    problems = verify_packing(inst, sol.offsets)
    greedy = peak_of(inst, greedy_by_size(inst))
    lb = inst.liveness_lower_bound()
    return {"label": label, "buffers": len(inst.buffers), "lower_bound": lb, "peak": sol.peak_bytes,
            "ratio": sol.peak_bytes / lb, "greedy_ratio": greedy / lb, "gain_over_greedy": greedy / sol.peak_bytes,
            "solve_s": solve_s, "method": sol.method, "reordered": reordered, "valid": not problems}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--time-limit", type=float, default=10.0)
    ap.add_argument("--quick", action="store_true", help="skip the whole llama-3-8b graph and the trainings")
    args = ap.parse_args(argv)
    cases = [c for c in CASES if not args.quick or ("fwd s2048" not in c[0] and not c[4])]
    print(f"{'graph':34} {'buffers':>7} {'lower bound':>14} {'peak':>14} {'peak/LB':>8} {'greedy/LB':>9} "
          f"{'greedy/peak':>11} {'solve s':>8}  method")
    ok = True
    for case in cases:
        r = run_case(*case, time_limit=args.time_limit)
        ok &= r["valid"] and r["ratio"] <= 1.02 and r["solve_s"] <= 10.0
        print(f"{r['label']:34} {r['buffers']:7d} {r['lower_bound']:14,d} {r['peak']:14,d} {r['ratio']:8.4f} "
              f"{r['greedy_ratio']:9.4f} {r['gain_over_greedy']:11.4f} {r['solve_s']:8.2f}  {r['method']}"
              f"{' (reordered)' if r['reordered'] else ''}{'' if r['valid'] else ' INVALID'}")
    print("all within 1.02 x lower bound and 10 s:", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
