"""Several calibration passes of one engine fitted together, with the machine's speed in each pass as a parameter
of its own.

On a shared machine the same closed-loop load runs tens of percent faster or slower minutes apart (measured on this
project's 2-core VM: the 27 calibration rows of one pass 26% faster at the end of a 14-minute benchmark than at its
start). One pass then prices the engine at the speed of the minute it ran in. Passes spread over a benchmark (before
the scored runs and after each round of them) measure the speed over the window instead:

    measured(row of pass p) = s_p x predicted(row)        with prod(s_p) = 1

The iteration terms (the shape: what a token, a cached pair, a sequence costs relative to each other) are fitted on
every pass's rows at once, each row divided by its pass's speed; each s_p is the median over its pass's rows of
measured / predicted; the two alternate until the speeds settle. The fit is priced at the geometric mean speed of
the passes, and the speeds are reported, so the drift is seen, not averaged away silently. Rows stay per pass:
no speed is fitted per row."""

from __future__ import annotations

import logging
import math
from dataclasses import replace

import numpy as np

from cost_models.serving.engine_fit import FitResult, Row, fit_rows
from ir.errors import UserError
from planner.engines.calibration_rows import (
    client_path_from,
    held_out_errors,
    held_out_rows,
    idle_wakeup_from,
    require_decode_rows,
    rows_from,
)

log = logging.getLogger(__name__)
Pass = tuple[list[dict], list[dict]]  # one pass of `calibrate.run_calibration`: (loads, the client's results)


def _slower(rows: list[Row], factor: float) -> list[Row]:
    return [replace(row, measured_s=row.measured_s / factor) for row in rows]


def pass_speeds(fit: FitResult, rows_per_pass: list[list[Row]]) -> np.ndarray:
    """Per pass, the median over its rows of measured / predicted by `fit` (1.0 where a pass has no row)."""
    return np.array([float(np.median([row.measured_s / fit.predict_s(row) for row in rows])) if rows else 1.0
                     for rows in rows_per_pass])


def fit_passes(passes: list[Pass], block_size: int, budget: int, rounds: int = 50) -> tuple[FitResult, list[Row], list[float]]:
    """The profile fit of several calibration passes (each with content of its own: `calibration_loads`' `first_id`)
    at their geometric-mean speed; (fit, every pass's rows, at that speed; each pass's speed, 1.0 the mean, over 1
    slower). Errors are of the rows at their own pass's speed; the held-out `mixed` loads are scored the same way.
    One pass is `fit_calibration`."""
    rows_per_pass = [rows_from(loads, results, block_size, budget) for loads, results in passes]
    require_decode_rows([row for rows in rows_per_pass for row in rows])
    speeds = np.ones(len(passes))
    for _ in range(rounds):
        fit = fit_rows([row for rows, s in zip(rows_per_pass, speeds) for row in _slower(rows, s)])
        found = pass_speeds(fit, rows_per_pass)
        found /= math.exp(float(np.mean(np.log(found))))
        settled = np.abs(found / speeds - 1.0).max() < 1e-6
        speeds = found
        if settled:
            break
    rows = [row for rows, s in zip(rows_per_pass, speeds) for row in _slower(rows, s)]
    fit = fit_rows(rows)
    require_converged(fit)
    loads = [load for pass_loads, _ in passes for load in pass_loads]
    results = [result for _, pass_results in passes for result in pass_results]
    held_out = [row for (pass_loads, pass_results), s in zip(passes, speeds)
                for row in _slower(held_out_rows(pass_loads, pass_results, budget), s)]
    fit = replace(fit, idle_wakeup=idle_wakeup_from(loads, results),
                  client_path_ms=client_path_from(loads, results), held_out=tuple(held_out),
                  held_out_errors=held_out_errors(fit, held_out))
    return fit, rows, [round(float(s), 6) for s in speeds]


def fit_calibration(loads: list[dict], results: list[dict], block_size: int, budget: int) -> tuple[FitResult, list[Row]]:
    """The profile fit (`engine_fit.fit_rows`, idle wake-up, client path, held-out errors) of calibration loads and
    their results as one pass (`fit_passes` of one pass: no speed fitted): one `calibrate.run_calibration`, or
    several passes' lists joined, a fit over the time they span; (fit, the fitted rows)."""
    fit, rows, _ = fit_passes([(loads, results)], block_size, budget)
    log.info("fitted %s from %d rows: %s", fit.iteration, len(rows), fit.errors["all"])
    return fit, rows


def require_converged(fit: FitResult) -> None:
    if not math.isfinite(fit.request_latency_ms):
        raise UserError("the calibration fit did not converge; rerun on a quieter machine")
