"""Calibration guard: the GPU efficiency defaults keep the published GEMM/operator and collective
rows within the [cost] targets (GEMM/operator MAPE <= 15%, collectives <= 25%).

Uses the same row -> prediction code as `benchmarks/bench_validation.py` (which refits the defaults
and covers the per-layer rows too); only rows that need no model capture are checked here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from validation_rows import Params, build_cases

TARGETS = {"gemm": 0.15, "collective": 0.25}


@pytest.fixture(scope="module")
def cases():
    return build_cases()


def _mape(cases, group: str) -> tuple[float, int]:
    params = Params.defaults()
    rows = [c for c in cases if c.group == group and c.predict is not None]
    errors = [abs(c.predict(params) - c.measured) / c.measured for c in rows]
    return sum(errors) / len(errors), len(errors)


@pytest.mark.parametrize("group", sorted(TARGETS))
def test_defaults_meet_target(cases, group):
    mape, n = _mape(cases, group)
    assert n >= 10, f"only {n} {group} rows predicted: the CSV or the row parser changed"
    assert mape <= TARGETS[group], f"{group} MAPE {mape:.1%} over {n} rows exceeds {TARGETS[group]:.0%}; " \
                                   f"rerun benchmarks/bench_validation.py and refit cost_models/efficiency.py"


def test_every_unused_row_says_why(cases):
    for c in cases:
        if c.predict is None:
            assert c.role == "excluded" and c.reason, c.id
