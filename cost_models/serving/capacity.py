"""Steady-state capacity of a serving deployment: the request rate it completes when never idle.

A goodput judged on a finite trace can sit above what the deployment sustains: a continuous-batching
engine absorbs arrivals into its KV cache for about one request lifetime before a backlog shows, and
near saturation the backlog grows slowly enough to hide in any one run. The saturated service rate mu is
measured directly: the same requests arrive much faster than they can be served, and mu is the
completion rate over the middle half of the completions (the warm-up while the batch fills and the
drain at the end left out). A rate is sustainable with slack only below MAX_UTILIZATION x mu (queueing
theory: at utilization rho < 1 the queue is stable; its waits grow as 1 / (1 - rho), so the margin also
absorbs Poisson bursts); at rho >= 1 it grows without bound, whatever a short trace shows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

MAX_UTILIZATION = 0.9  # the highest share of the saturated service rate a planned deployment runs at
OVERLOAD = 4.0  # saturation is measured with arrivals at this multiple of the caller's estimate of mu


def saturated_rate(run: Callable[[float], object], estimate: float) -> float:
    """Requests/s a deployment completes when saturated: `run(rate)` simulates it at `rate` (a SimResult with
    `finish_s`); arrivals at OVERLOAD x `estimate` keep it busy. The middle half of the completions gives
    the rate (0 when fewer than 8 requests complete).

    >>> from types import SimpleNamespace as N
    >>> saturated_rate(lambda rate: N(finish_s=np.arange(1, 101) / 5.0), 1.0)  # 5 completions per second
    5.0
    """
    result = run(max(estimate, 1e-6) * OVERLOAD)
    done = np.sort(np.asarray(result.finish_s, dtype=float)[np.isfinite(result.finish_s)])
    if len(done) < 8:
        return 0.0
    lo, hi = len(done) // 4, (3 * len(done)) // 4
    span = float(done[hi] - done[lo])
    return (hi - lo) / span if span > 0 else float("inf")
