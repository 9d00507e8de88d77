"""Fast greedy packings: a starting point for the exact search and the answer for large graphs.

Both heuristics take buffers one at a time in a fixed order and put each into the address space left
free by its already placed time-neighbours: `greedy_by_size` takes the lowest gap that fits (first
fit, biggest buffers first, as TFLite's and XLA's planners do), `best_fit` the tightest gap that fits
(least wasted bytes, lowest on ties). Neither ever fails: a buffer that fits no gap goes on top, so
the peak may exceed the capacity; callers compare the peak against it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from passes.buffer_packing.model import Buffer, PackingInstance


def overlap_lists(buffers: Sequence[Buffer]) -> list[list[int]]:
    """For each buffer position, the positions of buffers live at some common time (sweep line).

    >>> overlap_lists([Buffer("a", 0, 2, 1), Buffer("b", 1, 3, 1), Buffer("c", 2, 4, 1)])
    [[1], [0, 2], [1]]
    """
    result: list[list[int]] = [[] for _ in buffers]
    order = sorted(range(len(buffers)), key=lambda i: (buffers[i].lower, i))
    active: list[int] = []
    for i in order:
        start = buffers[i].lower
        active = [j for j in active if buffers[j].upper > start]
        for j in active:
            result[i].append(j)
            result[j].append(i)
        active.append(i)
    for row in result:
        row.sort()
    return result


def _gaps(occupied: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Free (start, length) gaps between sorted occupied (lo, hi) ranges; the last one is unbounded."""
    gaps, top = [], 0
    for lo, hi in occupied:
        if lo > top:
            gaps.append((top, lo - top))
        top = max(top, hi)
    gaps.append((top, -1))  # -1: unbounded
    return gaps


def _place(buffers: Sequence[Buffer], order: list[int], choose: Callable,
           ov: list[list[int]] | None = None) -> dict[str, int]:
    ov = overlap_lists(buffers) if ov is None else ov
    offsets: list[int] = [-1] * len(buffers)
    for i in order:
        size = buffers[i].size
        occupied = sorted((offsets[j], offsets[j] + buffers[j].size) for j in ov[i] if offsets[j] >= 0)
        offsets[i] = choose(_gaps(occupied), size)
    return {b.id: off for b, off in zip(buffers, offsets)}


def _first_fit(gaps: list[tuple[int, int]], size: int) -> int:
    return next(start for start, length in gaps if length < 0 or length >= size)


def _tightest_fit(gaps: list[tuple[int, int]], size: int) -> int:
    fitting = [(length - size, start) for start, length in gaps[:-1] if length >= size]
    return min(fitting)[1] if fitting else gaps[-1][0]


def _by_size(buffers: Sequence[Buffer]) -> list[int]:
    return sorted(range(len(buffers)), key=lambda i: (-buffers[i].size, buffers[i].lower - buffers[i].upper, i))


def greedy_by_size(instance: PackingInstance, ov: list[list[int]] | None = None) -> dict[str, int]:
    """Offsets by first fit, biggest buffers first (longer lifetime first on equal size).

    >>> inst = PackingInstance((Buffer("a", 0, 2, 4), Buffer("b", 1, 3, 2), Buffer("c", 2, 4, 4)))
    >>> greedy_by_size(inst)
    {'a': 0, 'b': 4, 'c': 0}
    """
    return _place(instance.buffers, _by_size(instance.buffers), _first_fit, ov)


def best_fit(instance: PackingInstance, order: str = "size", ov: list[list[int]] | None = None) -> dict[str, int]:
    """Offsets by tightest fitting gap; `order` is "size" (biggest first), "area" (size x lifetime)
    or "start" (earliest start first, as a simulated heap would see them).

    >>> inst = PackingInstance((Buffer("a", 0, 2, 4), Buffer("b", 1, 3, 2), Buffer("c", 2, 4, 4)))
    >>> best_fit(inst, order="start")
    {'a': 0, 'b': 4, 'c': 0}
    """
    bufs = instance.buffers
    keys = {
        "size": lambda i: (-bufs[i].size, bufs[i].lower - bufs[i].upper, i),
        "area": lambda i: (-bufs[i].size * (bufs[i].upper - bufs[i].lower), -bufs[i].size, i),
        "start": lambda i: (bufs[i].lower, -bufs[i].size, i),
    }
    if order not in keys:
        raise ValueError(f"unknown order {order!r}; use one of {sorted(keys)}")
    return _place(bufs, sorted(range(len(bufs)), key=keys[order]), _tightest_fit, ov)


def best_heuristic(instance: PackingInstance, deadline: float | None = None) -> tuple[str, dict[str, int]]:
    """The lowest-peak packing among the heuristics above, with its method name (first wins ties).
    With a `deadline` (time.monotonic()), heuristics after the first are skipped once it has passed."""
    ov = overlap_lists(instance.buffers)  # shared by all four
    runs: list[tuple[str, Callable[[], dict[str, int]]]] = [("greedy_by_size", lambda: greedy_by_size(instance, ov))]
    runs += [(f"best_fit_{o}", lambda o=o: best_fit(instance, o, ov)) for o in ("start", "size", "area")]
    best: tuple[int, str, dict[str, int]] | None = None
    for name, run in runs:
        if best is not None and deadline is not None and time.monotonic() > deadline:
            break
        offsets = run()
        peak = max((offsets[b.id] + b.size for b in instance.buffers), default=0)
        if best is None or peak < best[0]:
            best = (peak, name, offsets)
    assert best is not None
    return best[1], best[2]
