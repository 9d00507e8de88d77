"""Bounds on the sizes, counts, rates and lengths a user may ask for, checked at the edge (the CLI's option
types, `planner.plan`, `planner.estimate` and what-if sweeps), so that a typo is one line and exit 2, not a
search that grows without bound.

The limits sit far above any deployment of today (a global batch of 65,536 sequences, 16M-token sequences,
clusters of 65,536 devices, a hundred million requests per second) and well below what would exhaust memory or time.

>>> check_counts(batch=8, output_len=0)
Traceback (most recent call last):
ir.errors.UserError: output_len must be a positive integer, got 0
>>> check_numbers(rate=float("nan"))
Traceback (most recent call last):
ir.errors.UserError: rate must be a positive finite number, got nan
"""

from __future__ import annotations

import math

import click

from cost_models.cluster import MAX_DEVICES
from ir.errors import UserError

MAX_BATCH = 65_536  # sequences in one batch (training global batch, inference batch)
MAX_TOKENS = 2**24  # sequence, prompt and output lengths (16,777,216 tokens)
MAX_VIRTUAL_STAGES = 64
MAX_RATE = 1e8  # requests per second
MAX_SECONDS = 1e6  # SLO targets, time limits

COUNT_LIMITS = {"batch": MAX_BATCH, "microbatch_size": MAX_BATCH, "seq_len": MAX_TOKENS, "input_len": MAX_TOKENS,
                "output_len": MAX_TOKENS, "context_len": MAX_TOKENS, "tp": MAX_DEVICES, "pp": MAX_DEVICES,
                "dp": MAX_DEVICES, "ep": MAX_DEVICES, "virtual_stages": MAX_VIRTUAL_STAGES}
NUMBER_LIMITS = {"rate": MAX_RATE, "qps": MAX_RATE, "ttft": MAX_SECONDS, "tpot": MAX_SECONDS}


def check_count(name: str, value, limit: int) -> None:
    """UserError unless `value` is an integer in [1, limit] (None: not given)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{name} must be a positive integer, got {value!r}")
    if value > limit:
        raise UserError(f"{name} {value:,} is above the {limit:,} the planner accepts; give a smaller {name}")


def check_number(name: str, value, limit: float) -> None:
    """UserError unless `value` is a finite number in (0, limit] (None: not given)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise UserError(f"{name} must be a positive finite number, got {value!r}")
    if value > limit:
        raise UserError(f"{name} {value:g} is above the {limit:g} the planner accepts; give a smaller {name}")


def check_counts(**values) -> None:
    """Each named count (batch, seq_len, input_len, output_len, tp, pp, dp, ep, ...) within its bounds."""
    for name, value in values.items():
        check_count(name, value, COUNT_LIMITS[name])


def check_numbers(**values) -> None:
    """Each named rate or time (rate, qps, ttft, tpot) positive, finite and within its bound."""
    for name, value in values.items():
        check_number(name, value, NUMBER_LIMITS[name])


def check_slo(slo) -> None:
    """An SLO mapping: keys ttft and tpot only, each a positive finite number of seconds."""
    if slo is None:
        return
    if not isinstance(slo, dict):
        raise UserError(f"slo must be a mapping like {{'ttft': 0.5, 'tpot': 0.05}}, got {slo!r}")
    unknown = sorted(set(slo) - {"ttft", "tpot"})
    if unknown:
        raise UserError(f"slo takes ttft and tpot (seconds); not {', '.join(map(str, unknown))}")
    check_numbers(**{k: v for k, v in slo.items() if v is not None})


class Count(click.ParamType):
    """A click option type: an integer in [1, limit], else a usage error naming the bound."""

    name = "integer"

    def __init__(self, limit: int):
        self.limit = limit

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = int(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not an integer", param, ctx)
        if not 1 <= number <= self.limit:
            self.fail(f"{number} is not between 1 and {self.limit:,}", param, ctx)
        return number


class Positive(click.ParamType):
    """A click option type: a finite number in (0, limit], else a usage error (nan and inf refused)."""

    name = "number"

    def __init__(self, limit: float):
        self.limit = limit

    def convert(self, value, param, ctx):
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or not 0 < number <= self.limit:
            self.fail(f"{value} is not a positive finite number up to {self.limit:g}", param, ctx)
        return number
