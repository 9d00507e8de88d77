"""Serving plans (passes.serving_strategy): simulated goodput search over policies and layouts."""

from __future__ import annotations

import pytest

import planner
from planner.cli import main

SLO = {"ttft": 1.0, "tpot": 0.1}


@pytest.fixture(scope="module")
def chat_plan():
    return planner.plan("llama-3-8b", "8xH100-SXM", "chat", slo=SLO)


def test_chat_plan_verifies_and_meets_the_slo(chat_plan):
    assert chat_plan.verify() == []
    d, p = chat_plan.data["decision"], chat_plan.data["predicted"]
    s = d["serving"]
    assert d["kind"] == "inference" and d["phase"] == "serve"
    assert s["policy"] in ("chunked", "prefill_first", "layered", "disaggregated")
    assert s["chunked_prefill"] == (s["policy"] == "chunked")
    assert {"chunk_tokens", "layer_groups", "disaggregated"} <= set(s)
    assert p["ttft_s"] <= SLO["ttft"] and p["tpot_s"] <= SLO["tpot"]
    assert p["slo_attainment"] >= 0.9 and p["goodput_rps"] > 0 and p["goodput_per_gpu"] > 0
    for key in ("ttft_p90_s", "ttft_p99_s", "tpot_p90_s", "tpot_p99_s", "energy_per_token_j", "memory_per_device_bytes",
                "memory_capacity_bytes", "latency_s", "step_time_s", "max_batch", "output_tokens_per_s", "tokens_per_s"):
        assert p[key] is not None, key
    assert p["fits"] and "memory_map" in chat_plan.data
    assert d["dp"] * d["tp"] * d["pp"] <= 8


def test_named_workloads_keep_to_the_models_context(chat_plan):
    """Requests longer than the model's context (prompt + output) are left out of a named workload, as serving
    benchmarks filter their traces; the plan says how many and verify rebuilds the same workload."""
    from cost_models.serving.workload import make_workload

    p = planner.plan("opt-13b", "4xA100-SXM-80GB", "chat", slo={"ttft": 0.2, "tpot": 0.1})
    s = p.data["decision"]["serving"]
    assert s["context_tokens"] == 2048 and 0.05 < s["requests_over_context"] < 0.5
    assert p.verify() == []
    # the chosen deployment, re-simulated on its own requests, holds the SLO at the goodput it reports (the
    # search's one-unit sample had rated this unit above its steady-state capacity)
    assert p.data["predicted"]["slo_attainment"] >= 0.9
    assert p.data["predicted"]["goodput_rps"] == pytest.approx(s["rate_rps"])
    w = make_workload("chat", s["requests"], 1.0, seed=s["seed"], max_total=2048)
    assert len(w) == s["requests"] and int((w.prompt_tokens + w.output_tokens).max()) <= 2048
    long = chat_plan.data["decision"]["serving"]  # llama-3-8b: 8,192 positions, a few chat requests are longer
    assert long["context_tokens"] == 8192 and 0 < long["requests_over_context"] < 0.05


def test_rate_target_uses_fewer_gpus(chat_plan):
    rate = chat_plan.data["predicted"]["goodput_per_gpu"] * 2.5
    plan = planner.plan("llama-3-8b", "8xH100-SXM", "chat", slo=SLO, rate=rate)
    assert plan.verify() == []
    p = plan.data["predicted"]
    assert p["gpus_used"] < 8 and p["goodput_rps"] >= rate and p["rate_rps"] == rate


def test_impossible_slo_names_best_ttft_and_tpot(capsys):
    assert main(["plan", "llama-3-8b", "--cluster", "8xH100-SXM", "--workload", "chat",
                 "--slo", "ttft=0.0001,tpot=0.0001"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "best achievable" in err[0] and "TTFT" in err[0] and "TPOT" in err[0]


def test_moe_model_considers_layered_prefill():
    plan = planner.plan("tiny-mixtral", "2xH100-SXM", "chat", slo={"ttft": 2.0, "tpot": 0.2}, input_len=256, output_len=64)
    assert plan.data["decision"]["serving"]["workload"] == "fixed:256:64"
    assert "layered" in plan.data["solver"]["policies_considered"]
    assert plan.verify() == []


def test_disaggregated_decision_verifies():
    from cost_models.cluster import parse_cluster
    from cost_models.serving.policies import Disaggregated
    from passes.serving_candidates import ServingCandidate
    from passes.serving_evaluate import evaluate_serving
    from passes.serving_strategy import serving_decision, serving_section

    graph = planner.capture("llama-3-8b", seq_len=1024)
    cluster = parse_cluster("8xH100-SXM")
    c = ServingCandidate(Disaggregated(2, 1, 1, 1, 2, 1), 2, 1, 4, 1.0)
    decision = serving_decision(graph, cluster, c, 2, 1, 1024, 256, "bf16")
    decision["serving"] = serving_section(c, 2, "chat", 400, 5.0, SLO, cluster)
    r = evaluate_serving(graph, cluster, decision, "bf16")
    assert decision["serving"]["disaggregated"]["prefill_instances"] == 4
    ranks = [x for g in decision["serving"]["disaggregated"]["prefill_ranks"] for x in g]
    ranks += [x for g in decision["stages"][0]["ranks"] for x in g]
    assert len(ranks) == len(set(ranks)) == 8 and r["fits"] and r["ttft_s"] > 0
    assert evaluate_serving(graph, cluster, decision, "bf16")["ttft_s"] == r["ttft_s"]  # deterministic


def test_serving_plan_files_are_byte_identical(tmp_path):
    from planner.cli import main

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    args = ["plan", "llama-3-8b", "--cluster", "2xH100-SXM", "--workload", "chat"]
    assert main([*args, "-o", str(a)]) == 0
    assert main([*args, "-o", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("model, cluster, slo", [("tiny-llama", "2xH100-SXM", {"ttft": 0.05, "tpot": 0.01}),
                                                 ("tiny-mixtral", "4xL4", {"ttft": 0.2, "tpot": 0.02}),
                                                 ("llama-3-8b", "4xA100-SXM-80GB", {"ttft": 1.0, "tpot": 0.05})])
def test_branch_and_bound_finds_what_an_unpruned_search_finds(model, cluster, slo):
    """The serving branch and bound (bound-ordered, incumbent probes prune) against every candidate's goodput
    searched in full: the best cluster goodput (a unit's goodput x the units the cluster holds) agrees within
    the goodput search's tolerance."""
    from cost_models.cluster import parse_cluster
    from cost_models.serving.deployment import costs_for
    from passes.serving_candidates import serving_candidates
    from passes.serving_evaluate import base_workload
    from passes.serving_search import (
        SEARCH_TOLERANCE,
        SERVE_REQUESTS,
        SERVE_SEED,
        GoodputSearch,
        search_serving,
        units_for,
    )

    graph = planner.capture(model, seq_len=min(1024, planner.capture(model).config["max_position_embeddings"]))
    c = parse_cluster(cluster)
    costs = costs_for(graph, c, "bf16")
    w = base_workload("chat", SERVE_REQUESTS, SERVE_SEED, graph.config.get("max_position_embeddings"))
    cands = serving_candidates(graph, c, costs, {}, w)
    assert len(cands) >= 4
    best, search = search_serving(c, costs, "chat", cands, slo, None, {}, context=None)
    full = GoodputSearch(costs, "chat", slo)
    unpruned = max((full.goodput(x, 0.0) or 0.0) * units_for(x, c, {}, None)
                   for x in serving_candidates(graph, c, costs, {}, w))
    found = best.goodput * units_for(best, c, {}, None) if best else 0.0
    assert found <= unpruned * (1 + 1e-9) + 1e-12  # B&B never reports more than exists
    assert found >= unpruned / (1 + SEARCH_TOLERANCE) ** 2  # ... and loses at most the bisection's tolerance
    assert search.simulations <= full.simulations  # and prunes


def test_default_plan_goodput_holds_in_steady_state_on_a_5x_longer_trace():
    """`planner plan llama-3.1-70b` (chat on 8 x H100): the deployment at its reported goodput keeps >= 90% of
    requests within the SLO on a trace 5x longer than the one it was judged on (other requests, same rate), and
    its queue does not grow: the goodput is a steady-state rate, not a burst the KV cache absorbed."""
    from cost_models.cluster import parse_cluster
    from cost_models.serving.deployment import costs_for, simulate
    from cost_models.serving.metrics import attainment, is_sustainable
    from passes.serving_evaluate import base_workload, deployment_of

    plan = planner.plan("llama-3.1-70b")
    d = plan.to_dict()["decision"]
    s = d["serving"]
    assert plan.predicted.rate_rps <= 0.9 * plan.predicted.saturation_rps * (1 + 1e-9)
    graph = planner.capture("llama-3.1-70b", seq_len=1024)
    costs = costs_for(graph, parse_cluster(plan.inputs.cluster), "bf16")
    longer = base_workload(s["workload"], 5 * s["requests"], s["seed"] + 1, s.get("context_tokens"))
    r = simulate(costs, deployment_of(d), longer.with_rate(s["rate_rps"]))
    assert attainment(r, s["slo"]) >= 0.9 and is_sustainable(r)
