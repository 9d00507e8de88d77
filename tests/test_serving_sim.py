"""Invariants of the serving simulator (cost_models.serving) on small seeded workloads."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import planner
from cost_models.cluster import parse_cluster
from cost_models.serving.deployment import CostCache, Deployment, simulate
from cost_models.serving.iteration_cost import causal_pairs
from cost_models.serving.metrics import attainment, goodput, slo_scale, summarize
from cost_models.serving.policies import Chunked, Disaggregated, Layered, PrefillFirst, group_sizes, groups_for
from cost_models.serving.simulator import simulate_instance
from cost_models.serving.workload import make_workload, read_trace
from ir.errors import UserError

POLICIES = [PrefillFirst(), Chunked(64), Chunked(512), Layered(), Layered(2)]


@pytest.fixture(scope="module")
def costs():
    return CostCache(planner.capture("tiny-llama", seq_len=64), parse_cluster("2xH100-SXM"))


def _small_cache(cost, tokens: int):
    small = object.__new__(type(cost))
    small.__dict__.update(cost.__dict__)
    small.kv_capacity_tokens = tokens
    return small


def _check(r, w):
    assert np.all(r.first_token_s >= w.arrival_s - 1e-12)
    assert np.all(r.finish_s >= r.first_token_s)
    assert r.max_kv_blocks <= r.kv_capacity_blocks
    assert r.decode_tokens == int((w.output_tokens - 1).sum())  # every output token after the first, once
    assert r.prefill_tokens >= int(w.prompt_tokens.sum())


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.describe())
def test_invariants_and_conservation(costs, policy):
    w = make_workload("chat", 200, rate=40.0, seed=3)
    r = simulate_instance(costs.get(1, 1), policy, w)
    _check(r, w)
    if r.preemptions == 0:
        assert r.prefill_tokens == int(w.prompt_tokens.sum())


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.describe())
def test_kv_capacity_respected_with_preemption(costs, policy):
    w = make_workload("chat", 150, rate=200.0, seed=1)
    cost = _small_cache(costs.get(1, 1), 30_000)
    r = simulate_instance(cost, policy, w)
    _check(r, w)
    assert r.max_kv_blocks <= 30_000 // 16
    assert r.rejected == int((w.prompt_tokens + w.output_tokens + 16 + 288 > 30_000).sum())


def test_ttft_at_least_prefill_alone(costs):
    cost = costs.get(1, 1)
    w = make_workload("chat", 100, rate=20.0, seed=2)
    alone = np.array([cost.time(prefill_tokens=int(p), prefill_pairs=causal_pairs(int(p), 0), prompts_done=1)
                      for p in w.prompt_tokens])
    for policy in POLICIES:
        r = simulate_instance(cost, policy, w)
        assert np.all(r.first_token_s - w.arrival_s >= alone * 0.999), policy


def test_deterministic_per_seed(costs):
    a = simulate(costs, Deployment(Chunked(256), replicas=2), make_workload("code", 120, rate=10.0, seed=5))
    b = simulate(costs, Deployment(Chunked(256), replicas=2), make_workload("code", 120, rate=10.0, seed=5))
    c = make_workload("code", 120, rate=10.0, seed=6)
    assert np.array_equal(a.finish_s, b.finish_s) and np.array_equal(a.first_token_s, b.first_token_s)
    assert not np.array_equal(a.workload.arrival_s, c.arrival_s)


def test_fast_forward_matches_stepping(costs):
    w = make_workload("chat", 150, rate=30.0, seed=4)
    fast = simulate_instance(costs.get(1, 1), Chunked(128), w)
    slow = simulate_instance(costs.get(1, 1), Chunked(128), w, fast_forward=False)
    assert np.allclose(fast.finish_s, slow.finish_s, rtol=1e-9)
    assert fast.decode_tokens == slow.decode_tokens


def test_token_iterations_leave_out_chunks_that_output_nothing(costs):
    """vLLM's iteration_tokens histogram counts only steps that output a token; a prompt split into chunks outputs
    nothing until its last chunk, so on an idle engine one 1,000-token prompt under a 256-token budget runs 4
    iterations to its first token of which 1 outputs it, then one per further output token."""
    from cost_models.serving.workload import Workload

    w = Workload(np.array([0.0, 10.0]), np.array([1000, 100]), np.array([5, 3]), "test")
    for policy, chunk_steps in ((Chunked(256), 4), (PrefillFirst(), 1)):
        r = simulate_instance(costs.get(1, 1), policy, w)
        assert r.iterations == chunk_steps + 4 + 1 + 2, policy  # the second request: one prefill step, 2 decodes
        assert r.token_iterations == 1 + 4 + 1 + 2, policy
    mixed = make_workload("chat", 200, rate=40.0, seed=3)
    r = simulate_instance(costs.get(1, 1), Chunked(64), mixed)
    assert 0 < r.token_iterations < r.iterations  # chat prompts over 64 tokens take chunk-only steps
    merged = simulate(costs, Deployment(Chunked(64), replicas=2), mixed)
    assert merged.token_iterations <= merged.iterations



def test_each_request_is_stamped_when_an_iteration_first_takes_it_in(costs):
    """`scheduled_s` is vLLM's scheduled stamp (the engine's prefill-time histogram runs from it to the first
    token): the start of the iteration that first takes the request in. On an idle engine one 1,000-token prompt
    under a 256-token budget is taken in at its arrival and outputs its first token 4 chunk iterations later; a
    request arriving while another runs waits for the iteration in flight; replicas and disaggregated instances
    keep the first instance's stamp."""
    from cost_models.serving.workload import Workload

    w = Workload(np.array([0.0, 10.0]), np.array([1000, 100]), np.array([5, 3]), "test")
    r = simulate_instance(costs.get(1, 1), Chunked(256), w)
    assert r.scheduled_s.tolist()[0] == 0.0 and r.scheduled_s[1] >= 10.0
    assert np.all(r.first_token_s > r.scheduled_s)
    busy = make_workload("chat", 200, rate=40.0, seed=3)
    r = simulate_instance(costs.get(1, 1), Chunked(256), busy)
    assert np.all(busy.arrival_s <= r.scheduled_s) and np.all(r.scheduled_s < r.first_token_s)
    assert np.any(r.scheduled_s > busy.arrival_s)  # some waited for the iteration in flight
    for d in (Deployment(Chunked(256), replicas=2), Deployment(Disaggregated(1, 1))):
        merged = simulate(costs, d, busy)
        assert np.all(busy.arrival_s <= merged.scheduled_s) and np.all(merged.scheduled_s < merged.first_token_s)

def test_disaggregated_times(costs):
    w = make_workload("chat", 120, rate=20.0, seed=7)
    d = Deployment(Disaggregated(1, 1))
    r = simulate(costs, d, w)
    assert r.gpus == 2
    assert np.all(r.first_token_s >= w.arrival_s)
    assert np.all(r.finish_s >= r.first_token_s)
    assert r.kv_transfer_s > 0
    s = summarize(r, {"ttft": 1.0, "tpot": 1.0})
    assert s["attainment"] == 1.0 and s["energy_per_token_j"] > 0


def test_layered_group_rule():
    assert [groups_for(t, 48) for t in (512, 513, 1024, 2048, 4096, 4097)] == [1, 2, 2, 4, 8, 16]
    assert groups_for(10_000, 4) == 4
    sizes = group_sizes(48, 16)
    assert sum(sizes) == 48 and max(sizes) - min(sizes) <= 1


def test_goodput_search_brackets(costs):
    w = make_workload("chat", 100, rate=1.0, seed=0)
    slo = {"ttft": 0.05, "tpot": 0.01}
    rate, r = goodput(lambda x: simulate(costs, Deployment(Chunked(512)), w.with_rate(x)), slo, rate_hi=200.0)
    assert rate > 0 and attainment(r, slo) >= 0.9


@pytest.mark.parametrize("slo", [{"ttft": 0.05, "tpot": 0.01}, {"ttft": 0.02}, {"tpot": 0.002, "tbt": 0.01}])
def test_slo_scale_is_the_90_percent_boundary(costs, slo):
    w = make_workload("chat", 200, rate=30.0, seed=1)
    r = simulate(costs, Deployment(PrefillFirst()), w)
    s = slo_scale(r, slo)
    assert 0 < s < np.inf
    assert attainment(r, {k: v * s * (1 + 1e-9) for k, v in slo.items()}) >= 0.9
    assert attainment(r, {k: v * s * (1 - 1e-6) for k, v in slo.items()}) < 0.9


def test_trace_bad_row_names_line(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,10,5\n1.0,abc,5\n")
    with pytest.raises(UserError, match=r"t\.csv:3:"):
        read_trace(f)
    f.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,10,5\n1.0,-3,5\n")
    with pytest.raises(UserError, match=r"t\.csv:3:"):
        read_trace(f)


def test_policy_dataclasses_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Chunked(4).budget = 8
