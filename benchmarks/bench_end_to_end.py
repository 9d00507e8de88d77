"""End-to-end validation: the planner's predictions against published end-to-end measurements.

Runs every row of the development set (`benchmarks/data/validation/`: 115 published end-to-end rows and
23 paper-artifact timings, each with its source; see `end_to_end_rows.py` and `end_to_end_predict.py` for how a row becomes a
prediction with its source's conventions) through `cost_models.estimator.estimate_graph` and prints:

- each row: measured, the baseline rule, the prediction and the relative error;
- MAPE per group and overall (and the mean signed error: a group biased one way shows it), next to a
  baseline computed in the same run: a constant-efficiency roofline (50% of peak FLOP/s, 80% of peak
  HBM bandwidth, no communication or overheads);
- layout-ratio error: within a family (one source table, one model or a weak-scaling series, rows
  differing in tp/pp/dp or scale), for every pair of rows |predicted ratio / measured ratio - 1|;
- leave-one-source-out error: the fitted parameters (`cost_models/data/fitted_gpu.yaml`) refitted
  without a source's rows, scored on that source's rows (`--loso`; `end_to_end_fit.py`).

Targets (issue #14): every group <= 12% MAPE, overall <= 10%, layout-ratio error <= 8%,
leave-one-source-out <= 15%.

    python3 benchmarks/bench_end_to_end.py [--loso] [--rows] [--write-bands]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import end_to_end_rows as e2e  # noqa: E402
from end_to_end_baseline import baseline  # noqa: E402
from end_to_end_predict import predict  # noqa: E402

TARGET_GROUP, TARGET_OVERALL, TARGET_RATIO, TARGET_LOSO = 0.12, 0.10, 0.08, 0.15
GROUP_WHAT = {
    "train_megatron": "Megatron-LM / MT-NLG training (Narayanan 2021, Korthikanti 2022, MT-NLG)",
    "train_fp8": "fp8 training (NeMo, Transformer Engine)",
    "train_other": "bf16 training: llm-foundry FSDP, Llama 3 405B, FlashAttention-2 GPT",
    "decode_b1": "batch-1 decode (gpt-fast, FasterTransformer)",
    "prefill": "batch-1 prefill (FasterTransformer)",
    "serve_offline": "offline serving throughput (TensorRT-LLM max batch, H200 launch static batches)",
    "serve_low_load": "low-load TTFT / ITL (TensorRT-LLM + Triton, 2 req/s)",
    "paper_distserve": "DistServe artifact: per-iteration latency model (OPT-13B/66B)",
    "paper_sarathi": "Sarathi-Serve artifact: Yi-34B per-iteration timings (A100-PCIe, tp 2)",
    "paper_apex": "APEX artifact: vLLM TPOT of Llama-3.1-70B at batch 1",
}


def evaluate(rows: list[e2e.Row], predictor=predict) -> dict[str, float]:
    """Predicted value per scored row id."""
    return {r.id: predictor(r) for r in rows if r.scored}


def rel_errors(rows: list[e2e.Row], predicted: dict[str, float]) -> dict[str, float]:
    return {r.id: (predicted[r.id] - r.measured) / r.measured for r in rows if r.id in predicted}


def group_table(rows: list[e2e.Row], errors: dict[str, float], base: dict[str, float]) -> dict[str, float]:
    print(f"\n{'group':16} {'n':>3} {'baseline':>9} {'MAPE':>7} {'bias':>7} {'max':>7} {'target':>7}  what")
    out = {}
    for group in GROUP_WHAT:
        ids = [r.id for r in rows if r.group == group and r.id in errors]
        if not ids:
            continue
        e = np.array([errors[i] for i in ids])
        b = np.array([base[i] for i in ids])
        out[group] = float(np.mean(np.abs(e)))
        ok = "ok" if out[group] <= TARGET_GROUP else "MISS"
        print(f"{group:16} {len(ids):3d} {np.mean(np.abs(b)):9.1%} {out[group]:7.1%} {np.mean(e):+7.1%} "
              f"{np.max(np.abs(e)):7.1%} {ok:>7}  {GROUP_WHAT[group]}")
    every = np.array(list(errors.values()))
    base_all = np.array(list(base.values()))
    out["overall"] = float(np.mean(np.abs(every)))
    print(f"{'overall':16} {len(every):3d} {np.mean(np.abs(base_all)):9.1%} {out['overall']:7.1%} "
          f"{np.mean(every):+7.1%} {np.max(np.abs(every)):7.1%} "
          f"{'ok' if out['overall'] <= TARGET_OVERALL else 'MISS':>7}")
    return out


def ratio_pairs(rows: list[e2e.Row], predicted: dict[str, float]) -> list[tuple[str, str, str, float, float]]:
    """(family, id_a, id_b, measured ratio b/a, predicted ratio b/a) for every pair within a family."""
    families: dict[str, list[e2e.Row]] = {}
    for r in rows:
        if r.family and r.id in predicted:
            families.setdefault(r.family, []).append(r)
    pairs = []
    for family, members in sorted(families.items()):
        members.sort(key=lambda r: (r.n_gpus, r.tp, r.pp, r.dp, r.id))
        for a, b in itertools.combinations(members, 2):
            pairs.append((family, a.id, b.id, b.measured / a.measured, predicted[b.id] / predicted[a.id]))
    return pairs


def ratio_table(rows: list[e2e.Row], predicted: dict[str, float], base: dict[str, float], verbose: bool) -> float:
    pairs = ratio_pairs(rows, predicted)
    base_pairs = {(p[1], p[2]): p[4] for p in ratio_pairs(rows, base)}
    err = [abs(p[4] / p[3] - 1) for p in pairs]
    base_err = [abs(base_pairs[(p[1], p[2])] / p[3] - 1) for p in pairs]
    by_family: dict[str, list[float]] = {}
    for p, e in zip(pairs, err):
        by_family.setdefault(p[0], []).append(e)
    print(f"\nLayout-ratio error: {len(pairs)} pairs in {len(by_family)} families (same model or weak-scaling "
          f"series, different tp/pp/dp/scale)")
    if verbose:
        for p, e in zip(pairs, err):
            print(f"  {p[1]:>20} -> {p[2]:20} measured x{p[3]:6.3f} predicted x{p[4]:6.3f} error {e:6.1%}  {p[0][:60]}")
    for family, e in sorted(by_family.items(), key=lambda kv: -np.mean(kv[1])):
        print(f"  {np.mean(e):6.1%} over {len(e):3d} pairs  {family[:100]}")
    wrong = [p for p in pairs if (p[3] - 1) * (p[4] - 1) < 0 and abs(p[3] - 1) > 0.05]
    mean = float(np.mean(err)) if err else 0.0
    print(f"layout-ratio error: mean {mean:.1%} (baseline {np.mean(base_err):.1%}); pairs going the wrong way "
          f"(measured change > 5%): {len(wrong)} {'ok' if mean <= TARGET_RATIO else 'MISS'}")
    for p in wrong:
        print(f"  wrong way: {p[1]} -> {p[2]} measured x{p[3]:.3f} predicted x{p[4]:.3f}")
    return mean


def print_rows(rows: list[e2e.Row], predicted: dict[str, float], base: dict[str, float]) -> None:
    print(f"{'id':20} {'group':15} {'what':34} {'layout':16} {'unit':12} {'measured':>10} {'baseline':>10} "
          f"{'predicted':>10} {'error':>7}")
    for r in rows:
        if not r.scored:
            continue
        p, m = predicted[r.id], r.measured
        layout = f"tp{r.tp} pp{r.pp} dp{r.dp}" + (f" cp{r.cp}" if r.cp > 1 else "")
        print(f"{r.id:20} {r.group:15} {r.what[:34]:34} {layout:16} {r.unit[:12]:12} {m:10.4g} {base[r.id]:10.4g} "
              f"{p:10.4g} {(p - m) / m:+7.1%}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", action="store_true", help="print every row and every ratio pair")
    ap.add_argument("--loso", action="store_true", help="leave-one-source-out refits (slower)")
    ap.add_argument("--write-bands", action="store_true",
                    help="write cost_models/data/uncertainty.yaml's end-to-end bands from the leave-one-source-out errors")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows = e2e.load_rows()
    scored = [r for r in rows if r.scored]
    print(f"development set: {len(rows)} rows ({e2e.END_TO_END_CSV.name}, {e2e.PAPER_TIMINGS_CSV.name}), "
          f"{len(scored)} scored")
    for r in rows:
        if not r.scored:
            print(f"  not scored: {r.id:8} {r.what[:40]:40} {r.reason}")
        elif r.fit_reason:
            print(f"  scored, kept out of the fit: {r.id:8} {r.what[:30]:30} {r.fit_reason}")
    predicted = evaluate(rows)
    base_pred = evaluate(rows, baseline)
    errors, base = rel_errors(rows, predicted), rel_errors(rows, base_pred)
    if args.rows:
        print()
        print_rows(rows, predicted, base_pred)
    mapes = group_table(rows, errors, base)
    ratio = ratio_table(rows, predicted, base_pred, args.rows)
    loso = None
    if args.loso or args.write_bands:
        from end_to_end_fit import leave_one_source_out

        loso = leave_one_source_out(rows, write_bands=args.write_bands)
    missed = [g for g, m in mapes.items() if g != "overall" and m > TARGET_GROUP]
    print(f"\nsummary: overall MAPE {mapes['overall']:.1%} (target {TARGET_OVERALL:.0%}), groups over "
          f"{TARGET_GROUP:.0%}: {', '.join(missed) or 'none'}; layout-ratio error {ratio:.1%} (target "
          f"{TARGET_RATIO:.0%})" + (f"; leave-one-source-out {loso:.1%} (target {TARGET_LOSO:.0%})" if loso is not None
                                    else "") + f"; {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
