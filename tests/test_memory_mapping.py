"""Memory maps, buffer lifetimes and offload: invariants, the verifier on planner plans, 70B decode."""

from __future__ import annotations

import itertools
import random

import pytest

import planner
from cost_models.cluster import parse_cluster
from ir.errors import UserError
from passes.buffer_lifetimes import forward_lifetimes, reorder_for_peak, training_lifetimes
from passes.buffer_packing import PackingConfig, pack, verify_packing
from passes.memory_mapping import kv_cache_sizing, memory_map_for_plan, schedule_order, verify_memory_map
from passes.offload import (
    OffloadConfig,
    OffloadInstance,
    OffloadItem,
    Tier,
    _cost_s,
    inference_offload,
    solve_offload,
)

PLANS = (
    ("tiny-llama", "2xcpu", "train", {"batch": 8, "seq_len": 64}),
    ("gpt2", "8xH100-SXM", "train", {"batch": 64, "seq_len": 1024, "pp": 4}),
    ("llama-3.1-70b", "2xH100-SXM", "decode", {"batch": 8}),
    ("gpt2", "1xH100-SXM", "chat", {}),
)


def _graph_for(plan) -> object:
    d = plan.data
    seq = d["inputs"]["workload"].get("seq_len") or min(d["decision"].get("input_len", 2048), 8192)
    return planner.capture(d["inputs"]["model"], seq_len=seq)


@pytest.mark.parametrize("model,cluster,workload,kw", PLANS)
def test_verifier_passes_on_planner_plans(model, cluster, workload, kw):
    plan = planner.plan(model, cluster=cluster, workload=workload, **kw)
    mem = memory_map_for_plan(plan.data, _graph_for(plan), parse_cluster(cluster))
    assert verify_memory_map(mem) == []
    assert len(mem["devices"]) == len(plan.data["decision"]["stages"])
    predicted = plan.data["predicted"]["memory_per_device_bytes"]
    assert max(d["total_bytes"] for d in mem["devices"]) == pytest.approx(predicted, abs=64)
    assert any(a["name"].endswith("layer_forward") for a in mem["arenas"])


def test_one_f_one_b_keeps_pp_minus_stage_microbatches_in_flight():
    plan = planner.plan("gpt2", cluster="8xH100-SXM", workload="train", batch=64, seq_len=1024, pp=4)
    mem = memory_map_for_plan(plan.data, _graph_for(plan), parse_cluster("8xH100-SXM"))
    for dev in mem["devices"]:
        acts = [r for r in dev["regions"] if r["name"].startswith("activations")]
        steps = range(max(r["upper"] for r in acts))
        live = max(sum(1 for r in acts if r["lower"] <= t < r["upper"]) for t in steps)
        assert live == min(4 - dev["stage"], plan.data["decision"]["microbatches"])
    assert schedule_order(2, 1, 2) == ["F0", "B0", "F1", "B1"]


def test_verifier_reports_overlap_and_capacity():
    bad = {"arenas": [{"name": "hbm", "capacity_bytes": 10, "buffers": [
        {"id": "a", "lower": 0, "upper": 3, "size": 6, "offset": 0},
        {"id": "b", "lower": 2, "upper": 4, "size": 7, "offset": 4}]}], "devices": []}
    problems = verify_memory_map(bad)
    assert any("overlap" in p for p in problems) and any("beyond the capacity" in p for p in problems)


def test_lifetimes_views_own_no_storage_and_pack_near_bound():
    g = planner.capture("tiny-llama", seq_len=32)
    fwd = forward_lifetimes(g)
    views = {op.name for op in g.ops if op.kind == "view"}
    assert not views & {b.id for b in fwd.buffers}
    assert all(b.lower < b.upper for b in fwd.buffers)
    train = training_lifetimes(g)
    assert train.liveness_lower_bound() > fwd.liveness_lower_bound()
    for inst in (fwd, train, forward_lifetimes(g, layer=1)):
        sol = pack(inst, PackingConfig(time_limit_s=5))
        assert verify_packing(inst, sol.offsets) == []
        assert sol.peak_bytes <= 1.02 * inst.liveness_lower_bound()


def test_reorder_is_a_topological_order():
    g = planner.capture("tiny-llama", seq_len=32)
    ops = g.layer_ops(g.layers[1])
    order = reorder_for_peak(g, 1)
    seen = set()
    ids = {op.id for op in ops}
    for p in order:
        assert all(src in seen for src in ops[p].inputs if src in ids)
        seen.add(ops[p].id)
    assert forward_lifetimes(g, 1, order=order).buffers


def test_kv_cache_sizing():
    kv = kv_cache_sizing(16 * 100 * 10, 10, 32)  # 100 blocks of 16 tokens, 2 blocks per sequence
    assert (kv["blocks"], kv["max_tokens"], kv["max_sequences"]) == (100, 1600, 50)


def test_llama70b_decode_offload_on_one_h100_and_fits_on_two():
    graph = planner.capture("llama-3.1-70b", seq_len=2048)
    with pytest.raises(UserError):
        planner.plan("llama-3.1-70b", cluster="1xH100-SXM", workload="decode", batch=8)
    one = inference_offload(graph, parse_cluster("1xH100-SXM"), batch=8, input_len=2048, output_len=128,
                            config=OffloadConfig(time_limit_s=2))
    assert not one["fits_without_offload"] and one["fits"], one["message"]
    pcie = 64e9 * 0.8
    assert one["offloaded_bytes"] >= one["needed_bytes"] - one["capacity_bytes"]
    assert one["tpot_s"] == pytest.approx(max(one["offloaded_bytes"] / pcie, one["base_tpot_s"]), rel=0.02)
    assert one["tpot_s"] > 10 * one["base_tpot_s"] and "only with offload" in one["message"]
    two = inference_offload(graph, parse_cluster("2xH100-SXM"), batch=8, input_len=2048, output_len=128, tp=2)
    assert two["fits_without_offload"] and two["offloaded_bytes"] == 0
    plan = planner.plan("llama-3.1-70b", cluster="2xH100-SXM", workload="decode", batch=8)
    assert plan.data["predicted"]["fits"]


def test_offload_bad_input_is_one_line():
    items = (OffloadItem("w", "weights", 100, 100),)
    zero = OffloadInstance(items, (Tier("hbm", 10, 1e12), Tier("host", 0, 1e9)), window_s=0.0)
    with pytest.raises(UserError, match="zero capacity") as err:
        solve_offload(zero)
    assert "\n" not in str(err.value)
    small = OffloadInstance(items, (Tier("hbm", 10, 1e12), Tier("host", 50, 1e9)), window_s=0.0)
    with pytest.raises(UserError, match="more than any memory tier") as err:
        solve_offload(small)
    assert "\n" not in str(err.value)


def test_offload_cpsat_matches_brute_force():
    rng = random.Random(7)
    for _ in range(6):
        items = tuple(OffloadItem(f"i{k}", "weights", rng.randint(1, 9) * 10**6, rng.randint(0, 9) * 10**6,
                                  rng.choice((0, 10**6))) for k in range(5))
        tiers = (Tier("hbm", 20 * 10**6, 1e12), Tier("host", 30 * 10**6, 1e9), Tier("nvme", 10**9, 2e8))
        inst = OffloadInstance(items, tiers, window_s=rng.uniform(0, 0.01))
        best = None
        for combo in itertools.product([t.name for t in tiers], repeat=len(items)):
            used = {t.name: 0 for t in tiers}
            for it, t in zip(items, combo):
                used[t] += it.bytes
            if all(used[t.name] <= t.capacity_bytes for t in tiers):
                cost = _cost_s(inst, dict(zip((it.name for it in items), combo)))[0]
                best = cost if best is None else min(best, cost)
        sol = solve_offload(inst, OffloadConfig(time_limit_s=2))
        assert (sol is None) == (best is None)
        if sol is not None:
            assert sol.added_s == pytest.approx(best, abs=2e-5)
            assert sol.added_s >= sol.bound_s - 1e-5
