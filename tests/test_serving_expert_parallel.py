"""Expert parallelism in serving plans: wide-EP units (attention groups of tp ranks, routed experts over all
of them; `cost_models.serving.expert_parallel`) are searched for MoE models, --ep pins them, dense models
refuse --ep, and DeepSeek-V3 on two 8-GPU H100 nodes plans wide EP with the MLA latent as its KV cache."""

from __future__ import annotations

import pytest

import planner
from ir.errors import UserError
from planner.cli import main
from planner.verify import verify_plan


@pytest.fixture(scope="module")
def deepseek_plan():
    return planner.plan("deepseek-v3", "2x8xH100-SXM", "chat")


def test_deepseek_v3_on_two_h100_nodes_plans_wide_expert_parallelism(deepseek_plan):
    d = deepseek_plan.to_dict()["decision"]
    groups = d["serving"]["expert_parallel_groups"]
    assert d["ep"] == d["tp"] * groups and d["ep"] > 8  # the experts span both nodes
    assert d["dp"] % groups == 0 and deepseek_plan.verify() == []
    assert deepseek_plan.predicted.goodput_rps > 0 and deepseek_plan.predicted.fits


def test_deepseek_v3_kv_capacity_is_the_mla_latent(deepseek_plan):
    """Per token and rank, MLA caches the compressed latent plus the rope key of every layer (replicated on the
    tp ranks of an attention group): 61 x (512 + 64) x 2 bytes = 70,272 B in bf16."""
    config = planner.capture("deepseek-v3").config
    kv = deepseek_plan.to_dict()["memory_map"]["kv_cache"]
    assert kv["block_bytes"] / kv["block_tokens"] == 61 * (512 + 64) * 2
    assert config["num_experts"] == 256


def test_pinned_ep_is_honoured_and_refused_where_it_cannot_be():
    p = planner.plan("tiny-mixtral", "4xH100-SXM", "chat", slo={"ttft": 0.5, "tpot": 0.02}, input_len=256,
                     output_len=64, ep=4)
    assert p.decision.ep == 4 and p.to_dict()["decision"]["serving"]["expert_parallel_groups"] == 4 / p.decision.tp
    assert p.verify() == []
    with pytest.raises(UserError, match="has no experts"):
        planner.plan("tiny-llama", "2xH100-SXM", "chat", input_len=128, output_len=16, ep=2)


def test_cli_ep_on_a_dense_model_is_one_line(capsys):
    assert main(["plan", "tiny-llama", "--cluster", "2xH100-SXM", "--input-len", "128", "--output-len", "16",
                 "--ep", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--ep 2" in err[0] and "no experts" in err[0]


def test_tampered_expert_parallel_size_is_caught(deepseek_plan):
    bad = deepseek_plan.to_dict()
    bad["decision"]["ep"] = bad["decision"]["tp"]
    problems = verify_plan(bad)
    assert any("expert-parallel attention groups" in p for p in problems), problems
