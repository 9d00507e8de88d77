"""The one goodput search: the highest request rate at which a deployment still meets its SLO, by
log-scale bisection over a predicate `ok(rate)` (a simulation judged by attainment). Serving plans,
fleet profiles and the serving benchmarks all search this way; they differ only in the bracket and
how far they widen it.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def highest_rate(ok: Callable[[float], bool], lo: float, hi: float, *, widen: int, factor: float = 2.0,
                 steps: int, tolerance: float, need: float = 0.0) -> float | None:
    """The highest rate in the bracket for which `ok` holds, to a relative `tolerance`.

    - 0.0 when even `lo` fails (the deployment misses the SLO at light load);
    - `need` > 0 is a pruning probe: None when the rate cannot reach it (`need` >= `hi`, or `ok(need)`
      fails), so a branch and bound skips the candidate after at most two simulations;
    - when `hi` holds, the bracket moves up by `factor` at most `widen` times; if every probe holds,
      the last one is returned (the caller's `hi` is a ceiling, e.g. a steady-state bound);
    - then at most `steps` geometric bisections while hi / lo >= 1 + tolerance.

    >>> highest_rate(lambda r: r <= 3.0, 0.125, 8.0, widen=1, steps=20, tolerance=0.01) // 0.01 / 100
    2.99
    >>> highest_rate(lambda r: r <= 3.0, 0.125, 8.0, widen=1, steps=20, tolerance=0.01, need=4.0) is None
    True
    >>> highest_rate(lambda r: False, 0.125, 8.0, widen=1, steps=5, tolerance=0.01)
    0.0
    """
    if need >= hi:
        return None
    if not ok(lo):
        return 0.0
    if need > lo:
        if not ok(need):
            return None
        lo = need
    for _ in range(widen):
        if not ok(hi):
            break
        lo, hi = hi, hi * factor
    else:
        return lo
    for _ in range(steps):
        if hi / lo < 1 + tolerance:
            break
        mid = math.sqrt(lo * hi)
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo
