"""Uncertainty bands of GPU estimates from the end-to-end development set's leave-one-source-out errors.

A band is the relative error that covers 80% of a kind's points. Computed from in-sample residuals it
covers 80% of the rows it was fitted on and less of anything else; computed from leave-one-source-out
errors (every row predicted with parameters fitted without its source) it is an out-of-sample band.
`write_end_to_end_bands` stores, per kind of estimate (train_step, prefill, decode, serve), the 80th
percentile of |error| in `cost_models/data/uncertainty.yaml` (the kernel-level `gemm` and `collective`
bands of `bench_validation.py` stay), and prints the nested check: for each source, the band computed
without that source's errors and the share of the source's rows it covers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
BANDS_FILE = ROOT / "cost_models" / "data" / "uncertainty.yaml"
COVERAGE = 0.8
KIND_OF_GROUP = {"train_megatron": "train_step", "train_fp8": "train_step", "train_other": "train_step",
                 "decode_b1": "decode", "paper_apex": "decode", "prefill": "prefill",
                 "serve_offline": "serve", "serve_low_load": "serve"}


def kind_of(row) -> str:
    """The estimate kind a development-set row validates (paper timings by their phase)."""
    if row.group in KIND_OF_GROUP:
        return KIND_OF_GROUP[row.group]
    return "prefill" if row.phase == "prefill" else "decode"


def band(errors: list[float]) -> float:
    return float(np.quantile(np.abs(errors), COVERAGE)) if errors else float("nan")


def nested_coverage(rows, errors: dict[str, float]) -> dict[str, float]:
    """Per source: the share of its rows within the band (of their kind) computed without them."""
    out = {}
    for source in sorted({r.source for r in rows if r.id in errors}):
        mine = [r for r in rows if r.source == source and r.id in errors]
        covered = 0
        for r in mine:
            others = [errors[o.id] for o in rows
                      if o.id in errors and o.source != source and kind_of(o) == kind_of(r)]
            covered += abs(errors[r.id]) <= band(others)
        out[source] = covered / len(mine)
    return out


def write_end_to_end_bands(rows, errors: dict[str, float], path: Path = BANDS_FILE) -> dict:
    """Write the out-of-sample bands per kind; keep the other bands of the file. Returns the new bands."""
    data = yaml.safe_load(path.read_text()) if path.exists() else {}
    bands = dict(data.get("bands", {}))
    new = {}
    for kind in sorted({kind_of(r) for r in rows if r.id in errors}):
        errs = [errors[r.id] for r in rows if r.id in errors and kind_of(r) == kind]
        sources = sorted({r.source for r in rows if r.id in errors and kind_of(r) == kind})
        new[f"gpu:{kind}"] = {
            "relative_error_80": round(band(errs), 3), "points": len(errs),
            "basis": (f"benchmarks/bench_end_to_end.py --write-bands: 80% of |predicted - measured| / measured over "
                      f"{len(errs)} development-set rows ({', '.join(sources)}), each predicted with the end-to-end "
                      f"parameters refitted without its source (leave-one-source-out), MAPE {np.mean(np.abs(errs)):.1%}")}
    bands.update(new)
    header = ("# Written by `python3 benchmarks/bench_validation.py --write` (gemm, collective) and\n"
              "# `python3 benchmarks/bench_end_to_end.py --write-bands` (train_step, prefill, decode, serve:\n"
              "# leave-one-source-out errors of the development set); do not edit by hand.\n")
    path.write_text(header + yaml.safe_dump({"bands": bands}, sort_keys=True, width=200))
    coverage = nested_coverage(rows, errors)
    counts = {s: sum(1 for r in rows if r.source == s and r.id in errors) for s in coverage}
    covered = sum(coverage[s] * counts[s] for s in coverage) / max(sum(counts.values()), 1)
    print(f"\nwrote {path.relative_to(ROOT)}: " + ", ".join(f"{k} {v['relative_error_80']:.1%} ({v['points']} rows)"
                                                   for k, v in new.items()))
    print("coverage of each source's rows by the 80% band computed without that source: "
          + ", ".join(f"{s} {c:.0%}" for s, c in coverage.items())
          + f"; {covered:.0%} of all rows (mean over sources {np.mean(list(coverage.values())):.0%})")
    return new
