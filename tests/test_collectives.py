"""Collectives by algorithm, protocol and message size (cost_models.collectives, cost_models.communication)."""

import itertools

import pytest

from cost_models.cluster import parse_cluster
from cost_models.collectives import (
    custom_allreduce_time,
    measured_allreduce_curve,
    measured_allreduce_time,
    nccl_protocol,
    nccl_time,
)
from cost_models.communication import Group, collective_time, group_of
from cost_models.efficiency import Efficiency

EFF = Efficiency(comm=0.8, collective_launch_s=0.0, custom_allreduce_latency_s=3e-6)
NVLINK_A100 = 300e9 * 0.8


def test_small_messages_take_ll_large_take_simple():
    assert nccl_protocol("all_reduce", 8, 2048, "nvlink", NVLINK_A100) == "ring/ll"
    assert nccl_protocol("all_reduce", 8, 256 * 2**20, "nvlink", NVLINK_A100) == "ring/simple"
    mid = nccl_protocol("all_reduce", 8, 2**20, "nvlink", NVLINK_A100)
    assert mid in ("ring/ll", "ring/ll128")


def test_small_all_reduce_latency_is_nccls_ll_ring_model():
    # NCCL tuning.cc: base 6.6 us + 2(n-1) hops x 0.6 us on NVLink for LL
    for n in (2, 4, 8):
        expected = (6.6 + 2 * (n - 1) * 0.6) * 1e-6
        assert nccl_time("all_reduce", n, 64, "nvlink", NVLINK_A100) == pytest.approx(expected, rel=0.01)


def test_time_grows_with_size_and_is_at_least_the_wire_time():
    sizes = [2**k for k in range(6, 31, 2)]
    times = [nccl_time("all_reduce", 8, s, "nvlink", NVLINK_A100) for s in sizes]
    assert times == sorted(times)
    for s, t in zip(sizes, times):
        assert t >= 2 * 7 / 8 * s / NVLINK_A100  # never faster than the bus bandwidth allows


def test_ll128_only_on_nvlink():
    assert not nccl_protocol("all_reduce", 2, 2**22, "pci", 25e9).endswith("ll128")


def test_pcie_slower_than_nvlink_and_network_slower_than_both():
    for size in (4096, 2**24):
        nv = nccl_time("all_reduce", 2, size, "nvlink", NVLINK_A100)
        pci = nccl_time("all_reduce", 2, size, "pci", 25e9)
        assert pci > nv


def test_send_recv_moves_at_bus_bandwidth_not_twice_it():
    t = nccl_time("send_recv", 2, 2**30, "nvlink", 350e9)
    assert 2**30 / t == pytest.approx(350e9, rel=0.01)


def test_nvls_reaches_its_measured_bus_bandwidth_for_large_all_reduce():
    h100 = group_of(parse_cluster("8xH100-SXM"), 8)
    assert h100.nvls_busbw == pytest.approx(480e9)
    size = 8 * 2**30
    busbw = 2 * 7 / 8 * size / collective_time("all_reduce", size, h100, EFF)
    assert busbw == pytest.approx(480e9, rel=0.02)
    a100 = group_of(parse_cluster("8xA100-SXM-80GB"), 8)
    assert a100.nvls_busbw is None  # NVSwitch 2 has no in-switch reduction


def test_custom_all_reduce_beats_nccl_for_small_buffers_and_falls_back_above_its_limit():
    g = Group(8, 8, 300e9, 4.4e-6, 25e9, 8e-6, "nvlink", "net")
    small = 8192
    assert collective_time("all_reduce", small, g, EFF, impl="custom") < collective_time("all_reduce", small, g, EFF) / 2
    assert custom_allreduce_time(8, 16 * 2**20, 240e9, 3e-6) is None
    big = 64 * 2**20
    assert collective_time("all_reduce", big, g, EFF, impl="custom") == collective_time("all_reduce", big, g, EFF)


def test_custom_all_reduce_never_used_over_pcie():
    g = group_of(parse_cluster("2xA100-PCIE-80GB"), 2)
    assert g.intra_class == "pci"
    assert collective_time("all_reduce", 8192, g, EFF, impl="custom") == collective_time("all_reduce", 8192, g, EFF)


def test_spanning_nodes_costs_more_than_one_node():
    one = group_of(parse_cluster("8xH100-SXM"), 8)
    two = group_of(parse_cluster("2x8xH100-SXM"), 16)
    for size in (2**16, 2**28):
        assert collective_time("all_reduce", size, two, EFF) > collective_time("all_reduce", size, one, EFF)


def test_launch_overhead_is_added_per_call_on_gpu_links_only():
    g = group_of(parse_cluster("8xH100-SXM"), 8)
    base = collective_time("all_reduce", 4096, g, EFF)
    slow = Efficiency(comm=0.8, collective_launch_s=10e-6)
    assert collective_time("all_reduce", 4096, g, slow) == pytest.approx(base + 10e-6)
    cpu = group_of(parse_cluster("4xcpu"), 4)
    assert cpu.intra_class == "host"
    assert collective_time("all_reduce", 4096, cpu, slow) == collective_time("all_reduce", 4096, cpu, EFF)


def _nccl_model(group, eff):
    return lambda size: nccl_time("all_reduce", group.size, size, group.intra_class, group.intra_bandwidth * eff.comm,
                                  1, group.nvls_busbw)


@pytest.mark.parametrize("cluster", ["8xA100-SXM-80GB", "8xH100-SXM"])
@pytest.mark.parametrize("n", [2, 4, 8])
def test_one_node_all_reduce_takes_what_was_measured_on_that_node(cluster, n):
    g = group_of(parse_cluster(cluster), n)
    curve = measured_allreduce_curve(g.family, n, g.intra_class)
    assert curve, (cluster, n)
    for size, measured in curve:  # on the measured sizes: the measurement, or the model where it is slower
        t = collective_time("all_reduce", size, g, EFF)
        assert t == pytest.approx(max(measured, _nccl_model(g, EFF)(size)), rel=1e-9)
        assert t >= measured


def test_measured_mid_size_all_reduce_is_slower_than_nccls_own_model():
    # DGX A100, 2 GPUs, 4-8 MiB (a prefill chunk's activations): measured 65-94 us, NCCL's model ~40-60 us
    g = group_of(parse_cluster("2xA100-SXM-80GB"), 2)
    eff = Efficiency(comm=0.65, collective_launch_s=0.0)
    for size in (4 * 2**20, 5 * 2**20, 8 * 2**20):
        assert collective_time("all_reduce", size, g, eff) > 1.4 * _nccl_model(g, eff)(size)


@pytest.mark.parametrize("cluster,n", [("8xA100-SXM-80GB", 2), ("8xA100-SXM-80GB", 8), ("8xH100-SXM", 4),
                                       ("8xH200-SXM", 8)])
def test_all_reduce_time_stays_continuous_and_monotonic_across_the_measured_range(cluster, n):
    g = group_of(parse_cluster(cluster), n)
    sizes = sorted({int(2 ** (k / 4)) for k in range(40, 4 * 31)} | {int(b) for b, _ in
                                                                     measured_allreduce_curve(g.family, n, "nvlink")})
    times = [collective_time("all_reduce", s, g, EFF) for s in sizes]
    assert all(b >= a for a, b in itertools.pairwise(times))
    for size in sizes:  # never faster than NCCL's model, never more than ~2x it (mid sizes) or 5% (1 GiB+)
        model = _nccl_model(g, EFF)(size)
        t = collective_time("all_reduce", size, g, EFF)
        assert model <= t <= (2.5 if size < 2**30 else 1.05) * model
    lo, hi = measured_allreduce_curve(g.family, n, "nvlink")[0][0], measured_allreduce_curve(g.family, n, "nvlink")[-1][0]
    for edge in (lo, hi):  # no step at the ends of the measured curve
        assert collective_time("all_reduce", edge * 0.999, g, EFF) == pytest.approx(
            collective_time("all_reduce", edge * 1.001, g, EFF), rel=0.01)


def test_no_measured_curve_leaves_nccls_model():
    assert measured_allreduce_curve("A100", 2, "pci") == ()
    assert measured_allreduce_curve("MI300X", 8, "nvlink") == ()
    assert measured_allreduce_curve("A100", 3, "nvlink") == ()
    pcie = group_of(parse_cluster("2xA100-PCIE-80GB"), 2)
    size = 8 * 2**20
    assert collective_time("all_reduce", size, pcie, EFF) == pytest.approx(
        nccl_time("all_reduce", 2, size, "pci", pcie.intra_bandwidth * EFF.comm))
    l40s = group_of(parse_cluster("8xL40S"), 8)
    assert collective_time("all_reduce", size, l40s, EFF) == pytest.approx(
        nccl_time("all_reduce", 8, size, l40s.intra_class, l40s.intra_bandwidth * EFF.comm, 1, l40s.nvls_busbw))


def test_measured_curves_grow_with_size_and_ranks():
    for family in ("A100", "H100"):
        by_n = {n: measured_allreduce_curve(family, n, "nvlink") for n in (2, 4, 8)}
        for curve in by_n.values():
            assert [b for b, _ in curve] == sorted(b for b, _ in curve)
            assert [t for _, t in curve] == sorted(t for _, t in curve)
        for (b2, t2), (b4, t4), (b8, t8) in zip(by_n[2], by_n[4], by_n[8]):
            assert b2 == b4 == b8 and t2 <= t4 <= t8
    assert measured_allreduce_curve("H200", 2, "nvlink") == measured_allreduce_curve("H100", 2, "nvlink")


def test_measured_time_rule_below_inside_and_above_the_curve():
    curve = ((4e6, 60e-6), (8e6, 90e-6))

    def model(b):
        return 10e-6 + b / 200e9

    assert measured_allreduce_time(model, 2e6, curve) == pytest.approx(model(2e6) + (60e-6 - model(4e6)) / 2)
    assert measured_allreduce_time(model, 6e6, curve) > model(6e6)
    assert measured_allreduce_time(model, 16e6, curve) == pytest.approx(model(16e6) + 90e-6 - model(8e6))
    fast = ((4e6, 1e-6), (8e6, 2e-6))  # a curve faster than the model never speeds it up
    assert all(measured_allreduce_time(model, b, fast) == model(b) for b in (1e6, 5e6, 1e8))
    assert measured_allreduce_time(model, 5e6, ()) == model(5e6)
