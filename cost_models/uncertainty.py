"""Uncertainty bands of estimates, from the residuals of the validation benchmark.

`benchmarks/bench_end_to_end.py --write-bands` (GPU training steps, prefill, decode and serving: the
leave-one-source-out errors of the end-to-end development set, so that the 80% holds on data the
parameters were not fitted on), `benchmarks/bench_validation.py --write` (GPU kernels and collectives)
and `benchmarks/bench_cpu_accuracy.py --write` (measurements on this machine) store, per device kind
and kind of work, the relative error that covers 80% of their points (|predicted - measured| /
measured) in `data/uncertainty*.yaml`, under `bands: {"gpu:decode": {relative_error_80, points,
basis}}`. An estimate carries the band of its kind; kinds without validation data say so.
"""

from __future__ import annotations

import functools
from pathlib import Path

import yaml

DATA_DIR = Path(__file__).parent / "data"
_KIND_OF_PHASE = {"train": "train_step", "prefill": "prefill", "decode": "decode", "serve": "serve"}


@functools.cache
def _bands() -> dict:
    bands: dict = {}
    for path in sorted(DATA_DIR.glob("uncertainty*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        bands.update(data.get("bands", {}))
    return bands


def band_for(phase: str, device_kind: str) -> dict:
    """{'relative_error_80': x | None, 'basis': '...', 'points': n} for a phase on a device kind."""
    kind = _KIND_OF_PHASE.get(phase, phase)
    key = f"{device_kind}:{kind}"
    band = _bands().get(key) or _bands().get(f"any:{kind}")
    if not band:
        return {"relative_error_80": None, "points": 0,
                "basis": f"no validation data for {kind} on {device_kind}; treat as unvalidated"}
    return {"relative_error_80": band["relative_error_80"], "points": band["points"], "basis": band["basis"]}
