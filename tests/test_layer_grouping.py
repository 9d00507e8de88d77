"""Layer grouping: CP-SAT and min-max against brute force on seeded small instances."""

from __future__ import annotations

import itertools
import random

import pytest

from passes.layer_grouping import GroupingInstance, segments, solve_minmax
from passes.layer_grouping_cpsat import solve_cpsat


def brute_force(inst: GroupingInstance) -> int | None:
    best = None
    L, S = inst.num_layers, inst.num_stages
    for inner in itertools.combinations(range(1, L), S - 1):
        value = inst.objective((0, *inner, L))
        if value is not None and (best is None or value < best):
            best = value
    return best


def random_instance(seed: int) -> tuple[GroupingInstance, bool]:
    rng = random.Random(seed)
    layers = rng.randint(2, 12)
    stages = rng.randint(1, min(8, layers))
    heterogeneous = seed % 2 == 1
    base = [rng.randint(1, 50) for _ in range(layers)]
    mem = [rng.randint(1, 20) for _ in range(layers)]
    speed = [rng.choice([1, 2, 3]) if heterogeneous else 1 for _ in range(stages)]
    times = tuple(tuple(t * f for t in base) for f in speed)
    mems = tuple(tuple(mem) for _ in range(stages))
    # capacities that bind: a little above an even share of the total memory
    share = sum(mem) / stages
    caps = tuple(int(share * rng.uniform(1.0, 1.6)) + (max(mem) if rng.random() < 0.3 else 0) for _ in range(stages))
    overhead = tuple(rng.randint(0, 5) if heterogeneous else 3 for _ in range(stages))
    return GroupingInstance(times, mems, caps, overhead, rng.randint(1, 16)), heterogeneous


@pytest.mark.parametrize("seed", range(60))
def test_cpsat_matches_brute_force(seed):
    inst, _ = random_instance(seed)
    expected = brute_force(inst)
    got = solve_cpsat(inst)
    if expected is None:
        assert got.status == "infeasible" and got.cuts is None
        return
    assert got.status == "optimal"
    assert got.objective_us == expected
    assert inst.objective(got.cuts) == expected
    assert got.bound_us <= got.objective_us


@pytest.mark.parametrize("seed", range(0, 60, 2))
def test_minmax_is_exact_for_homogeneous_stages(seed):
    inst, heterogeneous = random_instance(seed)
    assert not heterogeneous
    expected = brute_force(inst)
    got = solve_minmax(inst)
    assert (got.objective_us == expected) if expected is not None else got.status == "infeasible"


def test_identical_blocks_compress_so_depth_does_not_matter():
    # embedding + 126 identical blocks + head, 16 stages: 3 segments whatever the depth
    def inst(blocks):
        row = (30, *([100] * blocks), 60)
        mem = (5, *([10] * blocks), 8)
        return GroupingInstance((row,) * 16, (mem,) * 16, (10_000,) * 16, (2,) * 16, 64)

    assert len(segments(inst(126))) == 3
    small, big = solve_cpsat(inst(30)), solve_cpsat(inst(126))
    assert small.status == big.status == "optimal"
    assert big.solve_time_s < 5
