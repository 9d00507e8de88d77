"""A short closed-loop check of a running vLLM engine's speed against a calibrated fit: a benchmark on a shared
machine runs one beside each scored run, to see how fast the machine ran then (its speed drifts by tens of
percent within minutes). The probe's loads are calibration loads (`calibrate.fresh_workload`) and its rows are
calibration rows (`calibration_rows.rows_from`), so a fit predicts them as it predicts its own."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from cost_models.serving.engine_fit import FitResult
from planner.engines.calibrate import fresh_workload
from planner.engines.calibration_rows import DECODER_PROMPT, rows_from


def probe_loads(first_id: int) -> list[dict]:
    """A short closed-loop check of the engine's speed now (about 4 s; content from hash id `first_id` on), six
    calibration rows so that their median is not one row's noise: decode iterations of 1, 4 and 16 sequences
    (64-token prompts, 48 output tokens; 4, 8 and 16 requests) and first tokens of 128-, 512- and 1,024-token
    prompts (3 each, one at a time). `speed_factor` compares them with a fit."""
    decode = [{"kind": "decode", "workload": fresh_workload(n, DECODER_PROMPT, 48, first_id + k * 1_000),
               "max_concurrency": b} for k, (b, n) in enumerate(((1, 4), (4, 8), (16, 16)))]
    prefill = [{"kind": "prefill", "workload": fresh_workload(3, prompt, 2, first_id + (3 + k) * 1_000),
                "max_concurrency": 1} for k, prompt in enumerate((128, 512, 1024))]
    return decode + prefill


def speed_factor(fit: FitResult, loads: list[dict], results: list[dict], block_size: int, budget: int) -> float:
    """How much slower than `fit` the engine ran the probe loads (`probe_loads`): the median over their rows of
    measured / predicted (1.0: as fitted; nan where no row timed the engine)."""
    rows = rows_from(loads, results, block_size, budget)
    return float(np.median([row.measured_s / fit.predict_s(row) for row in rows])) if rows else math.nan


def scaled_fit(fit: FitResult, factor: float) -> FitResult:
    """`fit` on a machine `factor` times slower: every iteration term and the request latency scaled alike."""
    terms = {k: v * factor for k, v in fit.iteration.as_dict().items()}
    return replace(fit, iteration=replace(fit.iteration, **terms), request_latency_ms=fit.request_latency_ms * factor,
                   client_path_ms=None if fit.client_path_ms is None else fit.client_path_ms * factor)
