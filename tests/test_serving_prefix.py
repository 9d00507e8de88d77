"""Prefix caching in the serving simulator and workloads with shared prefixes (cost_models.serving)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import planner
from cost_models.cluster import parse_cluster
from cost_models.serving.deployment import CostCache, Deployment, simulate
from cost_models.serving.metrics import summarize
from cost_models.serving.policies import Chunked, Disaggregated, PrefillFirst
from cost_models.serving.prefix_cache import PrefixCache
from cost_models.serving.prefixes import chat_sessions
from cost_models.serving.simulator import kv_cache_tokens, simulate_instance
from cost_models.serving.trace_files import write_timed_trace, write_trace
from cost_models.serving.workload import Workload, hash_lists, longest_request_tokens, make_workload, read_trace
from ir.errors import UserError

POLICIES = [PrefillFirst(), Chunked(256), Chunked(2048)]


@pytest.fixture(scope="module")
def costs():
    return CostCache(planner.capture("llama-3-8b", seq_len=2048), parse_cluster("1xH100-SXM"))


def _small(cost, tokens: int):
    small = object.__new__(type(cost))
    small.__dict__.update(cost.__dict__)
    small.kv_capacity_tokens = tokens
    return small


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.describe())
def test_caching_skips_shared_prefixes_and_lowers_ttft_and_kv(costs, policy):
    w = chat_sessions(600, rate=20.0, seed=1)
    on, off = simulate_instance(costs.get(1, 1), policy, w), simulate_instance(costs.get(1, 1), policy, w, prefix_caching=False)
    bound = w.shared_prefix_tokens().sum() / w.prompt_tokens.sum()
    assert 0.5 < on.prefix_hit_rate <= bound + 1e-12 and off.prefix_hit_rate == 0.0
    assert on.prefill_tokens == int(w.prompt_tokens.sum()) - on.prefix_hit_tokens  # cached tokens are not computed
    assert on.decode_tokens == off.decode_tokens == int((w.output_tokens - 1).sum())
    s_on, s_off = summarize(on), summarize(off)
    assert s_on["ttft_mean"] < 0.8 * s_off["ttft_mean"] and on.max_kv_blocks < off.max_kv_blocks
    assert np.all(on.finish_s >= on.first_token_s) and np.all(on.first_token_s >= w.arrival_s)


def test_unbounded_cache_reaches_the_shared_prefix_bound_in_engine_blocks(costs):
    """One request at a time, nothing evicted: every shared whole block is a hit (block 16 = hash block)."""
    w = chat_sessions(200, rate=0.5, seed=2)
    r = simulate_instance(costs.get(1, 1), Chunked(2048), w)
    expected = np.minimum(w.shared_prefix_tokens(), w.prompt_tokens - 1) // 16 * 16
    assert r.prefix_hit_tokens == int(expected.sum())
    coarse = simulate_instance(costs.get(1, 1), Chunked(2048), w, block_size=128)  # vLLM's CPU block
    assert coarse.prefix_hit_tokens == int((np.minimum(w.shared_prefix_tokens(), w.prompt_tokens - 1) // 128 * 128).sum())


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.describe())
def test_eviction_under_a_small_cache_keeps_the_invariants(costs, policy):
    w = chat_sessions(300, rate=40.0, seed=3)
    cost = _small(costs.get(1, 1), 3_000)  # a few prompts: shared prefixes are evicted, hits fall
    r = simulate_instance(cost, policy, w)
    big = simulate_instance(costs.get(1, 1), policy, w)
    assert r.max_kv_blocks <= r.kv_capacity_blocks and r.prefix_hit_tokens < big.prefix_hit_tokens
    assert np.all(np.isfinite(r.finish_s)) and np.all(r.finish_s >= r.first_token_s) and r.rejected == 0


def test_fast_forward_matches_stepping_with_prefixes(costs):
    w = chat_sessions(200, rate=15.0, seed=4)
    fast = simulate_instance(costs.get(1, 1), Chunked(512), w)
    slow = simulate_instance(costs.get(1, 1), Chunked(512), w, fast_forward=False)
    assert np.allclose(fast.finish_s, slow.finish_s, rtol=1e-9) and fast.prefix_hit_tokens == slow.prefix_hit_tokens


def test_replicas_and_disaggregated_prefill_instances_cache_too(costs):
    w = chat_sessions(300, rate=20.0, seed=5)
    two = simulate(costs, Deployment(Chunked(2048), replicas=2), w)
    assert two.prefix_hit_tokens > 0 and two.prefix_hit_rate <= w.shared_prefix_tokens().sum() / w.prompt_tokens.sum()
    big = CostCache(planner.capture("llama-3-8b", seq_len=2048), parse_cluster("2xH100-SXM"))
    assert simulate(big, Deployment(Disaggregated(1, 1)), w).prefix_hit_tokens > 0


def test_prefix_cache_holds_shared_nodes_once_and_evicts_tails_first():
    cache = PrefixCache(block_tokens=16, block_size=16)
    cache.hold([1, 2, 3])
    cache.hold([1, 2])
    assert cache.held_tokens == 48
    cache.release([1, 2, 3])
    assert cache.held_tokens == 32 and cache.evictable_tokens == 16
    cache.release([1, 2])
    cache.evict(32)  # room for two nodes: the tail (3) goes first
    assert cache.hit_nodes([1, 2, 3], 100) == 2


def test_kv_pool_is_what_max_num_seqs_longest_requests_need():
    assert kv_cache_tokens(10**9, 256, 1276, 16) >= 256 * 1280
    assert kv_cache_tokens(1000, 256, 1276, 16) == 1000 and kv_cache_tokens(500, 8, None) == 500


def test_traces_round_trip_with_hash_ids(tmp_path):
    w = chat_sessions(50, rate=3.0, seed=6)
    write_trace(tmp_path / "t.csv", w)
    write_timed_trace(tmp_path / "t.jsonl", w)
    for path in ("t.csv", "t.jsonl"):
        back = read_trace(tmp_path / path)
        assert np.array_equal(back.prompt_tokens, w.prompt_tokens) and np.allclose(back.arrival_s, w.arrival_s, atol=1e-6)
        assert np.array_equal(back.shared_prefix_tokens(), w.shared_prefix_tokens())
    assert longest_request_tokens(str(tmp_path / "t.csv")) == int((w.prompt_tokens + w.output_tokens).max())
    again = make_workload(str(tmp_path / "t.csv"), 120, rate=2.0)  # cycled: repeats get fresh content
    assert len(again) == 120 and again.shared_prefix_tokens()[50:].sum() <= again.shared_prefix_tokens().sum()


def test_bad_hash_rows_name_their_line(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("arrived_at,num_prefill_tokens,num_decode_tokens,hash_ids\n0.0,32,4,1 2\n1.0,32,4,1 x\n")
    with pytest.raises(UserError, match=r"t\.csv:3:"):
        read_trace(f)
    g = tmp_path / "t.jsonl"
    g.write_text('{"timestamp": 0, "input_length": 32, "output_length": 4, "hash_ids": [1, 2]}\n{"timestamp": 1}\n')
    with pytest.raises(UserError, match=r"t\.jsonl:2:"):
        read_trace(g)


def test_workload_without_hashes_is_simulated_as_before(costs):
    w = make_workload("chat", 150, rate=10.0, seed=7)
    hashed = dataclasses.replace(w, block_hashes=hash_lists([[i * 1000 + k for k in range(int(p) // 16 + 1)]
                                                              for i, p in enumerate(w.prompt_tokens)]))
    a, b = simulate_instance(costs.get(1, 1), Chunked(512), w), simulate_instance(costs.get(1, 1), Chunked(512), hashed)
    assert b.prefix_hit_tokens == 0 and np.allclose(a.finish_s, b.finish_s, rtol=1e-12)
    assert isinstance(w, Workload) and w.context_tokens == longest_request_tokens("chat")
