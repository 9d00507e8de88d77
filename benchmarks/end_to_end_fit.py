"""Fit of the GPU cost model's parameters (`cost_models/data/fitted_gpu.yaml`) and the
leave-one-source-out check of the end-to-end benchmark.

Two stages, each parameter fitted on the rows it governs (physics, not rows: one value per device
family or shared by all GPUs, never one per row):

1. kernel level (`benchmarks/bench_validation.py`'s fit, unchanged): GEMM efficiency curve, flash
   attention, HBM and link efficiency, kernel overhead per device family, on the kernel and
   collective rows of `benchmarks/data/calibration/published_measurements.csv`;
2. end to end (`E2E_PARAMS` below), on the development set's rows each parameter acts on: the fp8
   GEMM share of the 16-bit efficiency (fp8 rows), the serving engine's host time per iteration
   (inference rows) and per request (TTFT rows), the per-call collective launch and the custom
   all-reduce latency (multi-GPU inference rows), the sustained-load compute clock (training rows, and inference
   rows for the engines' own).

Each stage-2 parameter is a 1-D search (a coarse log or linear grid, then a finer one around the best)
of the mean |relative error| of its rows, in two sweeps, starting from the prior (the values before
any fit: `PRIOR`). `leave_one_source_out` refits stage 2 without one source's rows and scores that
source's rows with the refitted values; parameters none of the source's rows act on are unchanged.

    python3 benchmarks/end_to_end_fit.py [--write] [--kernel]

`--write` stores the fitted values with their rows, fit errors and sources in
`cost_models/data/fitted_gpu.yaml`; `--kernel` also reruns stage 1 (else its values are kept).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import end_to_end_rows as e2e  # noqa: E402
from end_to_end_predict import predict, with_efficiency  # noqa: E402

from cost_models.efficiency import FAMILIES, FITTED_FILE, Efficiency, family_efficiency, fitted_records  # noqa: E402

GPU_FAMILIES = ("A100", "H100", "H200", "MI300X", "GPU")
INFERENCE = ("decode", "prefill", "serve", "serve_qps", "static_batch")


@dataclass(frozen=True)
class E2EParam:
    """A stage-2 parameter: its families, the rows it acts on, its search range and why it exists."""

    name: str
    families: tuple[str, ...]
    rows: Callable[[e2e.Row], bool]
    low: float
    high: float
    log: bool
    why: str


def _family(*names: str) -> Callable[[e2e.Row], bool]:
    from cost_models.efficiency import family_of
    from cost_models.hardware import get_device

    return lambda r: r.device is not None and family_of(get_device(r.device)) in names


_A100, _H100 = _family("A100"), _family("H100", "H200")
E2E_PARAMS = (
    E2EParam("iteration_overhead_s", GPU_FAMILIES, lambda r: r.phase in INFERENCE and r.runtime == "engine",
             1e-5, 2e-2, True,
             "host time of one serving-engine iteration (scheduling, sampling, launch) not hidden behind the GPU"),
    E2EParam("cpp_iteration_overhead_s", GPU_FAMILIES, lambda r: r.phase in INFERENCE and r.runtime == "cpp-engine",
             1e-5, 2e-2, True,
             "host time of one iteration of an engine with a C++ executor (TensorRT-LLM) not hidden behind the GPU"),
    E2EParam("request_overhead_s", GPU_FAMILIES, lambda r: r.metric == "mean_TTFT", 1e-4, 5e-2, True,
             "serving front end per request, on its first token (HTTP, tokenisation, detokenisation)"),
    E2EParam("collective_launch_s", GPU_FAMILIES, lambda r: r.tp > 1 and r.phase in INFERENCE, 1e-7, 4e-5, True,
             "per collective call beyond NCCL's own latency model: host launch and rank skew"),
    E2EParam("custom_allreduce_latency_s", GPU_FAMILIES,
             lambda r: r.tp > 1 and r.phase in INFERENCE and r.collectives != "nccl", 1e-6, 3e-5, True,
             "barrier + launch of an inference engine's one-shot all-reduce"),
    E2EParam("kernel_overhead_s", ("A100",), lambda r: r.phase in INFERENCE and _A100(r), 5e-7, 1.5e-5, True,
             "fixed time per kernel of an engine's forward pass (launch gap and ramp; CUDA graphs)"),
    E2EParam("kernel_overhead_s", ("H100", "H200"), lambda r: r.phase in INFERENCE and _H100(r), 5e-7, 1.5e-5, True,
             "fixed time per kernel of an engine's forward pass (launch gap and ramp; CUDA graphs)"),
    E2EParam("fp8_gemm", ("H100", "H200", "GPU", "MI300X"), lambda r: r.dtype == "fp8", 0.4, 1.0, False,
             "fp8 GEMMs (Transformer Engine, TensorRT-LLM) reach this share of the 16-bit GEMM efficiency against "
             "the fp8 peak: per-op gains of 1.3-1.6x, not 2x"),
    E2EParam("grouped_gemm", GPU_FAMILIES, lambda r: r.model is not None and r.model.name.startswith("mixtral"),
             0.3, 1.0, False,
             "MoE grouped expert GEMMs (fused MoE kernels over gathered rows) reach this share of a dense GEMM's "
             "efficiency at the same per-expert shape"),
    E2EParam("sustained_compute", ("A100",), lambda r: r.phase == "train" and _A100(r), 0.6, 1.0, False,
             "training keeps this share of the kernel benchmarks' FLOP/s (clocks under hours of load at the "
             "board power limit)"),
    E2EParam("sustained_compute", ("H100", "H200"), lambda r: r.phase == "train" and _H100(r), 0.5, 1.0, False,
             "training keeps this share of the kernel benchmarks' FLOP/s (clocks under hours of load at the "
             "board power limit)"),
    E2EParam("engine_sustained_compute", ("A100",), lambda r: r.phase in INFERENCE and _A100(r), 0.6, 1.0, False,
             "an inference engine's iterations keep this share of the kernel benchmarks' FLOP/s (clocks under load "
             "at the board power limit; compute-bound prefill feels it, memory-bound decode hardly)"),
    E2EParam("engine_sustained_compute", ("H100", "H200"), lambda r: r.phase in INFERENCE and _H100(r), 0.5, 1.0,
             False, "an inference engine's iterations keep this share of the kernel benchmarks' FLOP/s (clocks under "
             "load at the board power limit; compute-bound prefill feels it, memory-bound decode hardly)"),
)
LOSO_SWEEPS = 1  # one coordinate sweep per left-out source (the full fit's second sweep moves values by < 10%)
ROBUST_CAP = 0.3  # a row off by more than this counts as this much: rows no parameter explains do not steer


def param_key(p: E2EParam) -> str:
    return f"{p.name}[{'/'.join(p.families)}]"


def _families_now() -> dict[str, Efficiency]:
    return {f: family_efficiency(f) for f in FAMILIES}


PRIOR = {"fp8_gemm": 0.8, "iteration_overhead_s": 0.0, "cpp_iteration_overhead_s": 0.0, "request_overhead_s": 0.0,
         "collective_launch_s": 0.0, "grouped_gemm": 0.7,
         "custom_allreduce_latency_s": 3e-6, "sustained_compute": 1.0,
         "engine_sustained_compute": 1.0}


def _prior_of(p: E2EParam, family: str) -> float:
    """Where the fit starts: the stage-2 prior, or (memory, kernel overhead) the stage-1 kernel value."""
    if p.name in PRIOR:
        return PRIOR[p.name]
    return float(fitted_records()[family][p.name].get("kernel_value", fitted_records()[family][p.name]["value"]))


def prior_families(params=E2E_PARAMS) -> dict[str, Efficiency]:
    """Stage-1 values from the data file, stage-2 parameters at their priors (the fit's start)."""
    families = _families_now()
    for p in params:
        families = {f: replace(eff, **{p.name: _prior_of(p, f)}) if f in p.families else eff
                    for f, eff in families.items()}
    return families


def _set(families: dict[str, Efficiency], p: E2EParam, value: float) -> dict[str, Efficiency]:
    return {f: replace(eff, **{p.name: value}) if f in p.families else eff for f, eff in families.items()}


def score(rows: list[e2e.Row], families: dict[str, Efficiency]) -> float:
    """Mean |relative error| of `rows` predicted with `families`, each capped at `ROBUST_CAP`."""
    if not rows:
        return 0.0
    with_efficiency(families)
    try:
        return float(np.mean([min(abs(predict(r) - r.measured) / r.measured, ROBUST_CAP) for r in rows]))
    finally:
        with_efficiency(None)


def _grid(p: E2EParam, center: float | None) -> np.ndarray:
    if center is None:
        return np.geomspace(p.low, p.high, 9) if p.log else np.linspace(p.low, p.high, 9)
    if p.log:
        center = max(center, p.low)
        step = (p.high / p.low) ** (1 / 8)
        return np.geomspace(max(p.low, center / step), min(p.high, center * step), 5)
    span = (p.high - p.low) / 8
    return np.linspace(max(p.low, center - span), min(p.high, center + span), 5)


def fit_e2e(rows: list[e2e.Row], start: dict[str, Efficiency], params=E2E_PARAMS, sweeps: int = 2,
            log=print) -> tuple[dict[str, Efficiency], dict[str, dict]]:
    """Stage 2 (module docstring); returns the families and, per parameter, {value, rows, error}."""
    families = dict(start)
    report: dict[str, dict] = {}
    for sweep in range(sweeps):
        for p in params:
            mine = [r for r in rows if r.scored and not r.fit_reason and p.rows(r)]
            if not mine:
                continue
            current = getattr(families[p.families[0]], p.name)
            best_value, best = current, score(mine, families)
            for fine in (False, True):
                for value in _grid(p, best_value if fine else None):
                    trial = score(mine, _set(families, p, float(value)))
                    if trial < best - 1e-9:
                        best_value, best = float(value), trial
            families = _set(families, p, best_value)
            with_efficiency(families)
            try:
                mape = float(np.mean([abs(predict(r) - r.measured) / r.measured for r in mine]))
            finally:
                with_efficiency(None)
            report[param_key(p)] = {"value": best_value, "rows": [r.id for r in mine], "error": mape}
            log(f"  sweep {sweep + 1}: {param_key(p):44} = {best_value:.4g}  its {len(mine)} rows: MAPE {mape:.1%}")
    return families, report


def leave_one_source_out(rows: list[e2e.Row], write_bands: bool = False) -> float:
    """Refit stage 2 without each source's rows; MAPE of every source's rows under its own refit."""
    scored = [r for r in rows if r.scored]
    print("\nLeave-one-source-out: stage-2 parameters refitted from the prior without the source's rows, "
          "scored on them (stage-1 kernel parameters come from another data set and stay)")
    errors: dict[str, float] = {}
    for source in sorted({r.source for r in scored}):
        mine = [r for r in scored if r.source == source]
        touched = [p for p in E2E_PARAMS if any(p.rows(r) for r in mine)]
        families = _families_now()
        if touched:
            others = [r for r in scored if r.source != source]
            families, _ = fit_e2e(others, prior_families(touched), touched, sweeps=LOSO_SWEEPS, log=lambda *_: None)
        with_efficiency(families)
        try:
            for r in mine:
                errors[r.id] = (predict(r) - r.measured) / r.measured
        finally:
            with_efficiency(None)
        mape = np.mean([abs(errors[r.id]) for r in mine])
        print(f"  {source:30} rows {len(mine):3d}  MAPE {mape:6.1%}  refitted {', '.join(map(param_key, touched)) or '-'}")
    overall = float(np.mean([abs(e) for e in errors.values()]))
    print(f"leave-one-source-out MAPE over {len(errors)} rows: {overall:.1%}")
    if write_bands:
        from uncertainty_bands import write_end_to_end_bands

        write_end_to_end_bands(scored, errors)
    return overall


def _kernel_stage() -> dict[str, dict[str, dict]]:
    """Stage 1: bench_validation's fit on the published kernel and collective rows."""
    import bench_validation as bv

    cases = [c for c in bv.build_cases() if c.predict is not None and c.role == "fit"]
    fitted = bv.fit_all(cases, bv.prior())
    records: dict[str, dict[str, dict]] = {}
    for family in GPU_FAMILIES:
        eff = fitted.eff.get(family, fitted.eff["GPU"])
        mine = [c for c in cases if c.family == family] or cases
        err = float(np.mean([abs(bv.rel_error(c, fitted)) for c in mine]))
        for name in bv.GRID:
            records.setdefault(family, {})[name] = {
                "value": float(getattr(eff, name)), "fitted_on": sorted({c.id for c in mine}), "fit_error": round(err, 4),
                "source": "benchmarks/bench_validation.py fit (coordinate grid search, mean |relative error|) on the "
                          "kernel and collective rows of benchmarks/data/calibration/published_measurements.csv"
                          + ("" if family in ("A100", "H100") else f"; {family}: " + _family_rule(family))}
    return records


def _family_rule(family: str) -> str:
    return {"H200": "the H100 values (same SM and NVLink, no H200 kernel rows)",
            "MI300X": "gemm_max from its MAMF row GT174, the rest the GPU default",
            "GPU": "geometric mean of the A100 and H100 values (devices without rows: L4, L40S, A10G, B200)"}[family]


def write(kernel: dict | None, report: dict[str, dict], families: dict[str, Efficiency]) -> None:
    records = {f: dict(v) for f, v in fitted_records().items()}
    if kernel:
        for family, params in kernel.items():
            records[family].update(params)
    for p in E2E_PARAMS:
        rec = report.get(param_key(p))
        if rec is None:
            continue
        for family in p.families:
            old = records[family].get(p.name, {})
            entry = {"value": float(getattr(families[family], p.name)), "fitted_on": rec["rows"],
                     "fit_error": round(rec["error"], 4),
                     "source": f"benchmarks/end_to_end_fit.py stage 2 on the development set "
                               f"(benchmarks/data/validation): {p.why}"}
            if p.name not in PRIOR:  # refits a stage-1 value: keep that value as the prior
                entry["kernel_value"] = old.get("kernel_value", old.get("value"))
            records[family][p.name] = entry
    _derived_families(records)
    header = "# Written by `python3 benchmarks/end_to_end_fit.py --write`; do not edit by hand.\n"
    FITTED_FILE.write_text(header + yaml.safe_dump({"families": records}, sort_keys=True, width=200))
    print(f"\nwrote {FITTED_FILE.relative_to(ROOT)}")


def _derived_families(records: dict) -> None:
    """Families without rows of their own: the GPU default takes the geometric mean of A100 and H100
    for per-family stage-2 parameters, MI300X the GPU default (as in stage 1)."""
    for name in {p.name for p in E2E_PARAMS if "GPU" not in p.families}:
        a, h = records["A100"][name]["value"], records["H100"][name]["value"]
        value = float(np.sqrt(a * h)) if a > 0 and h > 0 else (a + h) / 2
        for family in ("GPU", "MI300X"):
            records[family][name] = {"value": value, "fitted_on": [], "fit_error": None,
                                     "source": f"geometric mean of the A100 and H100 fits of {name} (no rows of its own)"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="write cost_models/data/fitted_gpu.yaml")
    ap.add_argument("--kernel", action="store_true", help="also refit stage 1 (kernel rows)")
    args = ap.parse_args(argv)
    kernel = _kernel_stage() if args.kernel else None
    start = prior_families()
    if kernel:
        start = {f: replace(eff, **{k: v["value"] for k, v in kernel[f].items()}) if f in kernel else eff
                 for f, eff in start.items()}
    rows = e2e.load_rows()
    print(f"stage 2 on {sum(r.scored for r in rows)} scored rows of the development set")
    families, report = fit_e2e(rows, start)
    print(f"all scored rows: MAPE {score([r for r in rows if r.scored], families):.1%}")
    if args.write:
        write(kernel, report, families)
    return 0


if __name__ == "__main__":
    sys.exit(main())
