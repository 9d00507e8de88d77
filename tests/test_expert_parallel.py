"""Expert parallelism in training plans: ep is searched for MoE models, its cost terms, forced
degrees that cannot shard the experts, and `verify` catching a corrupted ep."""

from __future__ import annotations

import copy

import pytest

import planner
from cost_models.cluster import parse_cluster
from cost_models.communication import collective_time
from cost_models.estimate_context import layer_expert_bytes, make_context
from cost_models.estimate_infer import forward_pass
from cost_models.estimate_train import stage_params, state_bytes
from cost_models.parallel_config import Options
from ir.errors import UserError
from planner.cli import main
from planner.plan_handle import PlanHandle
from planner.verify import verify_plan


@pytest.fixture(scope="module")
def tiny_ep_plan() -> dict:
    return planner.plan("tiny-mixtral", "4xcpu", "train", batch=8, seq_len=32, ep=2).to_dict()


def test_ep_is_searched_and_wins_for_mixtral_on_16_h100():
    searched = planner.plan("mixtral-8x7b", "2xdgx-h100", "train")
    dense_only = planner.plan("mixtral-8x7b", "2xdgx-h100", "train", ep=1)
    d = searched.decision
    assert d.ep > 1 and d.dp % d.ep == 0 and 8 % d.ep == 0
    assert searched.verify() == [] and dense_only.verify() == []
    # honest: the searched plan is predicted faster than the best plan without expert parallelism
    assert searched.predicted.tokens_per_s > dense_only.predicted.tokens_per_s
    assert f"ep={d.ep}" in searched.explain()


def test_ep_cost_terms_follow_the_formulas():
    graph = planner.capture("mixtral-8x7b", seq_len=4096)
    cluster = parse_cluster("1xdgx-h100")
    block = next(layer.index for layer in graph.layers if layer.is_moe)
    base = Options(tp=1, pp=1, dp=8, batch=8, input_len=4096, microbatch_size=1, ep_over_dp=True)
    ctx1 = make_context(graph, cluster, base)
    ctx8 = make_context(graph, cluster, Options(**{**base.__dict__, "ep": 8}))
    experts = layer_expert_bytes(graph, block) / 2  # parameters (bf16)
    assert ctx8.layer_expert_params_per_rank(block) == pytest.approx(experts / 8)
    assert ctx1.layer_params_per_rank(block) - ctx8.layer_params_per_rank(block) == pytest.approx(experts * 7 / 8)
    assert ctx8.ep_group.size == 8 and ctx8.ep_group.nodes == 1 and ctx8.edp_group.size == 1
    # ZeRO-0: expert weights + grads + Adam = 16 B per parameter, divided by ep
    dense, expert = stage_params(ctx8, block, block + 1)
    assert state_bytes(ctx8, dense, expert).total == pytest.approx(16 * (dense + experts / 8))
    # two all-to-alls (dispatch + combine) of tokens x top-k x hidden x 2 bytes per MoE layer forward
    t1 = forward_pass(ctx1, "prefill", 1, 4096).layer_times[block]
    t8 = forward_pass(ctx8, "prefill", 1, 4096).layer_times[block]
    a2a = collective_time("all_to_all", 4096 * 2 * 4096 * 2, ctx8.ep_group, ctx8.eff)
    assert t8.comm_s - t1.comm_s == pytest.approx(2 * a2a)
    # same expert FLOPs per rank, more rows per expert: GEMM time does not grow
    assert t8.gemm_s <= t1.gemm_s * 1.001


def test_forced_ep_must_divide_the_experts(capsys):
    with pytest.raises(UserError, match="does not divide the 4 experts"):
        planner.plan("tiny-mixtral", "4xcpu", "train", batch=8, seq_len=32, ep=3)
    with pytest.raises(UserError, match="has no experts"):
        planner.plan("tiny-llama", "4xcpu", "train", batch=8, seq_len=32, ep=2)
    assert main(["plan", "tiny-mixtral", "--cluster", "4xcpu", "--workload", "train", "--batch", "8",
                 "--seq-len", "32", "--ep", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--ep 3" in err[0]


def test_forced_ep_plan_is_deterministic_and_verifies(tiny_ep_plan):
    assert tiny_ep_plan["decision"]["ep"] == 2 and tiny_ep_plan["decision"]["dp"] % 2 == 0
    assert verify_plan(tiny_ep_plan) == []
    again = planner.plan("tiny-mixtral", "4xcpu", "train", batch=8, seq_len=32, ep=2).to_dict()
    assert PlanHandle.from_json(again).to_json() == PlanHandle.from_json(tiny_ep_plan).to_json()


@pytest.mark.parametrize("ep, expected", [(3, "does not divide the 4 experts"), (0, "degrees must be positive: ep=0"),
                                          (1, "disagrees with the cost model"), (4, "disagrees with the cost model")])
def test_verify_rejects_a_corrupted_ep(tiny_ep_plan, ep, expected):
    bad = copy.deepcopy(tiny_ep_plan)
    bad["decision"]["ep"] = ep
    problems = verify_plan(bad)
    assert any(expected in p for p in problems), problems
