"""Static buffer packing: verifier, heuristics, exact search vs CP-SAT, CSV input and the CLI."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from passes.buffer_packing import (
    Buffer,
    PackingConfig,
    PackingInstance,
    best_fit,
    greedy_by_size,
    pack,
    peak_of,
    read_csv,
    solve_cpsat,
    solve_within,
    verify_packing,
)
from planner.cli import main

DATA = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "minimalloc"
CHALLENGING = DATA / "challenging"


def _random_instance(seed: int) -> PackingInstance:
    rng = random.Random(seed)
    buffers = []
    for i in range(rng.randint(3, 12)):
        lower = rng.randint(0, 10)
        buffers.append(Buffer(f"b{i}", lower, lower + rng.randint(1, 6), rng.randint(1, 6)))
    return PackingInstance(tuple(buffers))


# --- verifier ----------------------------------------------------------------------------------


def test_verifier_accepts_valid_and_names_clashing_buffers():
    inst = PackingInstance((Buffer("x", 0, 4, 3), Buffer("y", 2, 6, 3), Buffer("z", 4, 8, 3)), capacity=6)
    assert verify_packing(inst, {"x": 0, "y": 3, "z": 0}) == []
    problems = verify_packing(inst, {"x": 0, "y": 2, "z": 0})
    assert len(problems) == 2 and "x and y" in problems[0] and "y and z" in problems[1]


def test_verifier_catches_capacity_breach_and_missing_offsets():
    inst = PackingInstance((Buffer("x", 0, 4, 3), Buffer("y", 4, 6, 3)), capacity=4)
    problems = verify_packing(inst, {"x": 2})
    assert any("x ends at 5" in p and "capacity 4" in p for p in problems)
    assert any("y has no offset" in p for p in problems)


def test_upper_is_exclusive():
    inst = PackingInstance((Buffer("a", 0, 3, 4), Buffer("b", 3, 5, 4)), capacity=4)
    assert verify_packing(inst, {"a": 0, "b": 0}) == []
    assert inst.liveness_lower_bound() == 4


# --- heuristics and pack -----------------------------------------------------------------------


def test_example_packs_into_12():
    inst = read_csv(DATA / "examples" / "input.12.csv")
    assert inst.capacity == 12  # from the file name
    sol = pack(inst, PackingConfig(time_limit_s=5))
    assert sol.found and sol.peak_bytes == 12 and sol.lower_bound_bytes == 12
    assert verify_packing(inst, sol.offsets) == []


@pytest.mark.parametrize("seed", range(10))
def test_heuristics_always_valid_and_above_bound(seed):
    inst = _random_instance(seed)
    for offsets in (greedy_by_size(inst), best_fit(inst, "size"), best_fit(inst, "start")):
        assert verify_packing(inst, offsets) == []
        assert peak_of(inst, offsets) >= inst.liveness_lower_bound()


@pytest.mark.parametrize("seed", range(5))
def test_min_peak_without_capacity(seed):
    inst = _random_instance(100 + seed)
    sol = pack(inst, PackingConfig(time_limit_s=5, workers=1))
    assert verify_packing(inst, sol.offsets) == []
    assert sol.peak_bytes >= sol.lower_bound_bytes
    cp_status, cp_offsets, _ = solve_cpsat(inst, PackingConfig(time_limit_s=5, workers=1))
    if sol.status == "optimal" and cp_status == "optimal":
        assert sol.peak_bytes == peak_of(inst, cp_offsets)


def test_impossible_capacity_is_reported():
    inst = PackingInstance((Buffer("a", 0, 2, 4), Buffer("b", 1, 3, 4)), capacity=7)
    sol = pack(inst, PackingConfig(time_limit_s=2))
    assert sol.status == "infeasible" and sol.offsets == {}


# --- exact search vs CP-SAT --------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(36))
def test_search_and_cpsat_agree_at_lower_bound(seed):
    inst = _random_instance(seed)
    for cap in (inst.liveness_lower_bound(), inst.liveness_lower_bound() + 1):
        status, offsets = solve_within(list(inst.buffers), cap, time.monotonic() + 10)
        cp_status, cp_offsets, _ = solve_cpsat(inst, PackingConfig(time_limit_s=10, workers=1), capacity=cap)
        assert status in ("feasible", "infeasible") and cp_status in ("optimal", "infeasible")
        assert (status == "feasible") == (cp_status == "optimal"), (seed, cap)
        fixed = PackingInstance(inst.buffers, cap)
        for found in (offsets, cp_offsets):
            if found:
                assert verify_packing(fixed, found) == []


# --- the MiniMalloc challenging suite (the two fastest instances) --------------------------------


@pytest.mark.parametrize("name", ["G", "J"])
def test_challenging_instance_packs_exactly(name):
    inst = read_csv(CHALLENGING / f"{name}.1048576.csv")
    assert inst.capacity == 1_048_576
    sol = pack(inst, PackingConfig(time_limit_s=10))
    assert sol.found, sol.status
    assert verify_packing(inst, sol.offsets) == []
    assert sol.peak_bytes <= 1_048_576


# --- CSV input and the CLI ---------------------------------------------------------------------

BAD_INPUTS = {
    "missing": ("id,lower,size\nb1,0,4\n", "missing column"),
    "not_int": ("id,lower,upper,size\nb1,0,x,4\n", "line 2"),
    "empty_life": ("id,lower,upper,size\nb1,0,4,4\nb2,5,5,4\n", "line 3"),
    "negative": ("id,lower,upper,size\nb1,0,4,-4\n", "negative size"),
    "too_big": ("id,lower,upper,size\nb1,0,4,4\nb17,0,4,2000\n", "buffer b17 needs 2,000 bytes; capacity is 1,024"),
    "duplicate": ("id,lower,upper,size\nb1,0,4,4\nb1,1,4,4\n", "duplicate id b1"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_csv_exits_2_with_one_line(case, tmp_path, capsys):
    text, expected = BAD_INPUTS[case]
    path = tmp_path / f"{case}.csv"
    path.write_text(text)
    assert main(["memory", "pack", str(path), "--capacity", "1024"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert expected in err and path.name in err


def test_cli_no_packing_exits_2(tmp_path, capsys):
    path = tmp_path / "two.csv"
    path.write_text("id,lower,upper,size\na,0,2,4\nb,1,3,4\n")
    assert main(["memory", "pack", str(path), "--capacity", "7"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "lower bound is 8" in err


def test_cli_json_and_output_csv(tmp_path, capsys):
    src = tmp_path / "in.csv"
    src.write_text("id,lower,upper,size\nb1,0,3,4\nb2,3,9,4\nb3,0,9,4\nb4,9,21,4\nb5,0,21,4\n")
    out = tmp_path / "out.csv"
    assert main(["memory", "pack", str(src), "--capacity", "12", "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["peak_bytes"] == 12 and summary["lower_bound_bytes"] == 12 and summary["buffers"] == 5
    lines = out.read_text().splitlines()
    assert lines[0] == "id,lower,upper,size,offset" and len(lines) == 6
    packed = read_csv(out, capacity=12)  # the extra offset column is ignored on input
    offsets = {line.split(",")[0]: int(line.split(",")[4]) for line in lines[1:]}
    assert verify_packing(packed, offsets) == []
