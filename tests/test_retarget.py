"""Re-targeting a plan (`Plan.retarget`, `planner plan --warm-start`): the previous layout is evaluated
first; the answer is as good as a cold plan's within the goodput search's tolerance (the bisection's
estimates depend on the pruning probes, so near-equal layouts may swap), and progress displays respect
--quiet."""

from __future__ import annotations

import json

import pytest

import planner
from ir.errors import UserError
from planner.cli import main
from planner.plan_handle import PlanHandle


@pytest.fixture(scope="module")
def chat_plan():
    return planner.plan("llama-3-8b", "4xH100-SXM", "chat", rate=2.0)


def _as_good(warm, cold) -> None:
    from passes.serving_search import SEARCH_TOLERANCE

    w, c = warm.data, cold.data
    assert w["predicted"]["gpus_used"] == c["predicted"]["gpus_used"]
    assert w["predicted"]["goodput_per_gpu"] >= c["predicted"]["goodput_per_gpu"] * (1 - SEARCH_TOLERANCE)


def test_retarget_to_a_new_rate_is_as_good_as_a_cold_plan(chat_plan):
    warm = chat_plan.retarget(rate=3.0)
    cold = planner.plan("llama-3-8b", "4xH100-SXM", "chat", rate=3.0)
    _as_good(warm, cold)
    assert warm.data["solver"]["warm_start"] is True and cold.data["solver"]["warm_start"] is False
    assert warm.data["solver"]["simulations"] <= cold.data["solver"]["simulations"]
    assert warm.data["inputs"] == cold.data["inputs"]  # a warm start is not an input: same fingerprint
    assert warm.verify() == []


def test_retarget_keeps_unnamed_inputs_and_rejects_unknown_ones(chat_plan):
    other = chat_plan.retarget(cluster="8xH100-SXM")
    assert other.data["inputs"]["cluster"] == "8xH100-SXM"
    assert other.data["inputs"]["workload"]["rate"] == 2.0 and other.data["inputs"]["workload"]["kind"] == "chat"
    with pytest.raises(UserError, match="retarget takes"):
        chat_plan.retarget(gpus=3)


def test_cli_warm_start_writes_the_cold_answer(tmp_path, chat_plan, capsys):
    previous = chat_plan.save(tmp_path / "prev.json")
    out = tmp_path / "next.json"
    assert main(["--quiet", "plan", "llama-3-8b", "--cluster", "4xH100-SXM", "--rate", "3", "--warm-start",
                 str(previous), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # --quiet: no progress display, no logs
    warm = json.loads(out.read_text())
    assert warm["solver"]["warm_start"] is True
    _as_good(PlanHandle.from_json(warm), planner.plan("llama-3-8b", "4xH100-SXM", "chat", rate=3.0))


def test_cli_warm_start_from_a_bad_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["plan", "llama-3-8b", "--cluster", "4xH100-SXM", "--warm-start", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.json" in err[0]


def test_training_retarget_evaluates_the_previous_layout_first_and_seeds_cp_sat():
    import planner
    from passes.layer_grouping import GroupingInstance
    from passes.layer_grouping_cpsat import solve_cpsat

    old = planner.plan("llama-2-7b", "4xA100-SXM-80GB+4xH100-SXM", "train", batch=64, seq_len=4096)
    assert old.to_dict()["solver"]["warm_start"] is False
    new = old.retarget(batch=128)
    fresh = planner.plan("llama-2-7b", "4xA100-SXM-80GB+4xH100-SXM", "train", batch=128, seq_len=4096)
    assert new.to_dict()["solver"]["warm_start"] is True and new.verify() == []
    assert new.predicted.tokens_per_s == pytest.approx(fresh.predicted.tokens_per_s, rel=1e-9)
    # a prior grouping better than the min-max hint is kept as CP-SAT's hint (and never loses to it)
    inst = GroupingInstance(((4, 4, 4, 4), (1, 1, 1, 1)), ((1,) * 4,) * 2, (10, 10), (0, 0), 8)
    assert solve_cpsat(inst, prior_cuts=(0, 1, 4)).objective_us == solve_cpsat(inst).objective_us == 35
    assert solve_cpsat(inst, prior_cuts=(0, 9, 4)).cuts == (0, 1, 4)  # an invalid prior is ignored
