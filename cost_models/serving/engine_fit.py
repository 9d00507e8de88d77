"""Fit a mixed-iteration engine profile (`engine_profile.IterationFit`) to measured rows.

A row is one measurement of a running engine under a controlled load (`planner.engines.calibrate` makes them
with vLLM's benchmark client):
- a first-token row: one request alone on an idle engine; its TTFT = the request latency outside the iterations
  + its prefill iterations (`iterations` chunks of the token budget, `tokens` computed, `pairs` causal query-key
  pairs including its cached prefix, one sequence sampled);
- an inter-token row: the median time between tokens while `sequences` requests decode together (one
  iteration: `tokens` = sequences, `kv_tokens` = the context they read);
- an iteration row: one iteration that computes a prompt, as the engine stamps it (scheduled to first token) or
  as running decodes beside it see it (their gap when it joins them); no request latency in it.
`prefill_iterations` counts a row's iterations that compute prompt tokens. The model is linear in its
coefficients:

    measured = fixed x iterations + per_token x tokens + per_kilo_pair x pairs/1e3
               + per_kilo_kv_token x kv_tokens/1e3 + per_sequence x sequences
               + per_prefill_iteration x prefill_iterations + latency x [first-token row]

and fitted by non-negative least squares on relative errors (each row divided by its measurement, so short and
long iterations weigh alike), Lawson-Hanson active set. The fit error is reported per kind of row, as the mean
and the largest |predicted / measured - 1|.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cost_models.serving.engine_profile import IterationFit

COLUMNS = ("iterations", "tokens", "kilo_pairs", "kilo_kv_tokens", "sequences", "prefill_iterations", "first_token")


@dataclass(frozen=True)
class Row:
    """One measurement (seconds) and its iteration counts (see the module docstring)."""

    kind: str
    measured_s: float
    iterations: float
    tokens: float
    pairs: float
    kv_tokens: float
    sequences: float
    first_token: bool
    prefill_iterations: float = 0.0  # of `iterations`, those computing prompt tokens

    def features(self) -> list[float]:
        return [self.iterations, self.tokens, self.pairs / 1e3, self.kv_tokens / 1e3, self.sequences,
                self.prefill_iterations, 1.0 if self.first_token else 0.0]


def nnls(a: np.ndarray, b: np.ndarray, iterations: int = 200) -> np.ndarray:
    """min ||a x - b|| subject to x >= 0 (Lawson and Hanson's active-set method).

    >>> a = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> np.round(nnls(a, np.array([1.0, -1.0, 0.5])), 6).tolist()
    [0.75, 0.0]
    """
    n = a.shape[1]
    x, passive = np.zeros(n), np.zeros(n, dtype=bool)
    for _ in range(iterations):
        gradient = a.T @ (b - a @ x)
        if passive.all() or gradient[~passive].max(initial=-np.inf) <= 1e-12 * max(1.0, np.abs(gradient).max()):
            break
        passive[np.argmax(np.where(passive, -np.inf, gradient))] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            bad = passive & (z <= 0)
            alpha = np.min(x[bad] / (x[bad] - z[bad]))
            x = x + alpha * (z - x)
            passive &= x > 1e-15
    return x


@dataclass(frozen=True)
class FitResult:
    iteration: IterationFit
    request_latency_ms: float
    errors: dict  # kind -> {"rows", "mean_abs_rel_error", "max_abs_rel_error"}; "all" over every row
    idle_wakeup: dict | None = None  # `fit_idle_wakeup`: max_ms, tau_ms and the measured points
    client_path_ms: float | None = None  # of request_latency_ms, the part outside the engine's own TTFT (HTTP, client)
    held_out: tuple = ()  # rows measured but not fitted (`planner.engines.calibration_rows.held_out_rows`)
    held_out_errors: dict | None = None  # the fit's errors on them, per kind of row

    def predict_s(self, row: Row) -> float:
        coef = np.array([*self.iteration.as_dict().values(), self.request_latency_ms])
        return float(np.dot(row.features(), coef)) / 1e3


def fit_rows(rows: list[Row]) -> FitResult:
    """The non-negative least-squares fit of `rows` on relative errors, with its errors per kind of row.

    >>> def prompt_ms(t): return 1.0 + 0.02 * t + 0.05 + 1.5  # fixed, tokens, one sequence, its prompt iteration
    >>> rows = [Row("prefill", prompt_ms(t) / 1e3 + 0.003, 1, t, t * t / 2, 0, 1, True, 1) for t in (64, 256, 1024)]
    >>> rows += [Row("prefill_engine", prompt_ms(t) / 1e3, 1, t, t * t / 2, 0, 1, False, 1) for t in (64, 512)]
    >>> rows += [Row("decode", (1.0 + 0.02 * b + 0.1 * b * c / 1e3 + 0.05 * b) / 1e3, 1, b, 0, b * c, b, False)
    ...          for b, c in ((1, 100), (8, 400), (32, 50))]
    >>> fit = fit_rows(rows); fit.errors["all"]["max_abs_rel_error"] < 1e-6, round(fit.iteration.per_token_ms, 6)
    (True, 0.02)
    >>> round(fit.iteration.per_prefill_iteration_ms, 6), round(fit.request_latency_ms, 6)
    (1.5, 3.0)
    """
    if len(rows) < len(COLUMNS):
        raise ValueError(f"{len(rows)} rows cannot fit {len(COLUMNS)} coefficients")
    a = np.array([row.features() for row in rows]) * 1e-3  # coefficients in ms
    y = np.array([row.measured_s for row in rows])
    weights = 1.0 / y
    coef = nnls(a * weights[:, None], y * weights)
    result = FitResult(IterationFit(*(float(c) for c in coef[:-1])), float(coef[-1]), {})
    return FitResult(result.iteration, result.request_latency_ms, errors_by_kind(result, rows))


def errors_by_kind(fit: FitResult, rows: list[Row], signed: bool = False) -> dict:
    """|predicted / measured - 1| of `fit` on `rows`: rows, mean and max per kind of row and over all ("all"),
    with the mean signed error too where `signed`."""
    ratio = np.array([fit.predict_s(row) / row.measured_s - 1.0 for row in rows])
    errors = {}
    for kind in [*sorted({row.kind for row in rows}), "all"] if rows else []:
        r = ratio[np.array([kind in ("all", row.kind) for row in rows])]
        errors[kind] = {"rows": int(r.size), "mean_abs_rel_error": round(float(np.abs(r).mean()), 4),
                        "max_abs_rel_error": round(float(np.abs(r).max()), 4),
                        **({"mean_rel_error": round(float(r.mean()), 4)} if signed else {})}
    return errors


def fit_idle_wakeup(gaps_ms: list[float], ttfts_ms: list[float]) -> dict:
    """`idle_wakeup_ms`'s max and tau from median first-token times of identical requests sent after idle gaps;
    the shortest gap is the reference (penalty 0 there). Least squares over tau on a log grid, max closed form.
    Tau stays within the gaps measured (at most the longest): penalties still rising at the longest gap would
    otherwise fit a far longer tau with a far larger max, which prices idle times beyond the data at many times
    the largest penalty seen.

    >>> from cost_models.serving.engine_profile import idle_wakeup_ms
    >>> gaps = [20, 100, 300, 1000]
    >>> fit = fit_idle_wakeup(gaps, [10 + idle_wakeup_ms(g - 20, 6.0, 150.0) for g in gaps])
    >>> abs(fit["max_ms"] - 6.0) < 0.05, abs(fit["tau_ms"] - 150.0) < 3.0
    (True, True)
    >>> rising = fit_idle_wakeup(gaps, [10 + 0.01 * g for g in gaps])  # still rising linearly at the longest gap
    >>> rising["tau_ms"], round(idle_wakeup_ms(3000, rising["max_ms"], rising["tau_ms"]) / 9.8, 2)  # vs penalty at 1 s
    (1000.0, 1.46)
    """
    order = np.argsort(gaps_ms)
    g = np.asarray(gaps_ms, float)[order]
    y = np.asarray(ttfts_ms, float)[order]
    x, penalty = g[1:] - g[0], np.maximum(y[1:] - y[0], 0.0)
    best = (math.inf, 0.0, 1.0)
    for tau in np.exp(np.linspace(math.log(5.0), math.log(max(float(g[-1]), 10.0)), 400)):
        basis = 1.0 - np.exp(-x / tau)
        scale = float(basis @ penalty / max(basis @ basis, 1e-12))
        err = float(((scale * basis - penalty) ** 2).sum())
        if err < best[0]:
            best = (err, max(scale, 0.0), float(tau))
    return {"max_ms": round(best[1], 6), "tau_ms": round(best[2], 3), "reference_gap_ms": float(g[0]),
            "gaps_ms": [float(v) for v in g], "ttft_ms": [round(float(v), 4) for v in y]}
