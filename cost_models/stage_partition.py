"""Contiguous split of per-layer times into pipeline stages minimising the slowest stage.

The classic linear-partition dynamic program: best[j][s] = min over i of
max(best[i][s-1], sum(times[i:j])); O(L^2 * S) for L layers and S stages, exact.
The layer grouping pass of the planner generalises this (memory caps, heterogeneous devices);
the estimator uses it to place layers for a fixed pp.
"""

from __future__ import annotations

import itertools


def split_layers(times: list[float], stages: int) -> list[tuple[int, int]]:
    """[start, end) layer ranges of `stages` non-empty contiguous stages with the least max time.

    >>> split_layers([1, 1, 1, 1, 4], 2)
    [(0, 4), (4, 5)]
    """
    n = len(times)
    if stages <= 1 or n <= 1:
        return [(0, n)]
    stages = min(stages, n)
    prefix = [0.0, *itertools.accumulate(times)]
    inf = float("inf")
    best = [[inf] * (stages + 1) for _ in range(n + 1)]
    cut = [[0] * (stages + 1) for _ in range(n + 1)]
    best[0][0] = 0.0
    for j in range(1, n + 1):
        for s in range(1, min(stages, j) + 1):
            for i in range(s - 1, j):
                value = max(best[i][s - 1], prefix[j] - prefix[i])
                if value < best[j][s] - 1e-15:
                    best[j][s], cut[j][s] = value, i
    ranges, j = [], n
    for s in range(stages, 0, -1):
        i = cut[j][s]
        ranges.append((i, j))
        j = i
    return ranges[::-1]
