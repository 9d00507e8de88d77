"""Collective and point-to-point times: alpha-beta on the cluster's topology.

Conventions of nccl-tests (PERFORMANCE.md): for a collective over n ranks moving a buffer of S
bytes, algorithm bandwidth S / t relates to bus bandwidth B by
  all-reduce:                 t = alpha + 2 (n-1)/n * S / B
  all-gather, reduce-scatter: t = alpha + (n-1)/n * S / B      (S = the full, gathered buffer)
  all-to-all:                 t = alpha + (n-1)/n * S / B      (S = bytes each rank sends in all)
  send/recv:                  t = alpha + S / B
B is the slowest link on the ring (NVSwitch inside a node, the NIC share across nodes) times the
achievable fraction `Efficiency.comm`; alpha is the per-call latency: (n-1) link latencies for a
ring (2(n-1) for all-reduce), plus a fixed launch overhead. Groups spanning nodes use the
hierarchical scheme NCCL uses for all-reduce: reduce-scatter inside nodes, all-reduce across
nodes on 1/n_local of the data, all-gather inside nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

from cost_models.efficiency import Efficiency

COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send_recv")


@dataclass(frozen=True)
class Group:
    """A communication group: n ranks, `per_node` of them on each node, and its two link levels."""

    size: int
    per_node: int
    intra_bandwidth: float  # bytes/s per direction per device
    intra_latency_s: float
    inter_bandwidth: float  # NIC share per device
    inter_latency_s: float

    @property
    def nodes(self) -> int:
        return max(self.size // max(self.per_node, 1), 1)


def group_of(cluster, size: int, stride: int = 1) -> Group:
    """The group of `size` ranks starting at rank 0 with `stride` (tp=1, then dp/pp outer).

    Ranks are placed node by node, so a group stays inside one node while size * stride fits.
    """
    node = cluster.nodes[0]
    per_node = max(min(size, node.devices_per_node // max(stride, 1)), 1) if size > 1 else 1
    inter = node.inter_node_link
    return Group(size, per_node, node.intra_link.pair_bandwidth_bytes_per_s, node.intra_link.latency_s,
                 inter.bandwidth_bytes_per_s, inter.latency_s)


def _flat(kind: str, n: int, nbytes: float, bandwidth: float, latency: float, eff: Efficiency) -> float:
    if n <= 1 or nbytes <= 0:
        return 0.0
    bus = bandwidth * eff.comm
    if kind == "all_reduce":
        return 2 * (n - 1) * latency + eff.kernel_overhead_s + 2 * (n - 1) / n * nbytes / bus
    if kind in ("all_gather", "reduce_scatter", "all_to_all"):
        return (n - 1) * latency + eff.kernel_overhead_s + (n - 1) / n * nbytes / bus
    if kind == "send_recv":
        return latency + eff.kernel_overhead_s + nbytes / bus
    raise ValueError(f"unknown collective {kind}")


def collective_time(kind: str, nbytes: float, group: Group, eff: Efficiency) -> float:
    """Seconds for one collective of `nbytes` (see the module docstring for what S means).

    >>> g = Group(8, 8, 450e9, 2.6e-6, 50e9, 5e-6)
    >>> round(collective_time("all_reduce", 64 * 2**20, g, Efficiency()) * 1e3, 3)
    0.368
    """
    if group.size <= 1 or nbytes <= 0:
        return 0.0
    if group.nodes <= 1:
        return _flat(kind, group.size, nbytes, group.intra_bandwidth, group.intra_latency_s, eff)
    local, nodes = group.per_node, group.nodes
    if kind == "all_reduce":
        return (_flat("reduce_scatter", local, nbytes, group.intra_bandwidth, group.intra_latency_s, eff)
                + _flat("all_reduce", nodes, nbytes / local, group.inter_bandwidth, group.inter_latency_s, eff)
                + _flat("all_gather", local, nbytes, group.intra_bandwidth, group.intra_latency_s, eff))
    if kind in ("all_gather", "reduce_scatter"):
        return (_flat(kind, local, nbytes / nodes, group.intra_bandwidth, group.intra_latency_s, eff)
                + _flat(kind, nodes, nbytes, group.inter_bandwidth, group.inter_latency_s, eff))
    if kind == "all_to_all":
        # the share of the data leaving the node crosses the NIC; the rest stays on NVLink
        remote = nbytes * (group.size - local) / group.size
        local_part = nbytes * (local - 1) / group.size
        return ((group.size - 1) * group.inter_latency_s + eff.kernel_overhead_s
                + max(remote / (group.inter_bandwidth * eff.comm), local_part / (group.intra_bandwidth * eff.comm)))
    return _flat(kind, 2, nbytes, group.inter_bandwidth, group.inter_latency_s, eff)


def p2p_time(nbytes: float, cluster, rank_a: int, rank_b: int, eff: Efficiency) -> float:
    """Send/recv of `nbytes` between two ranks over whatever link joins them."""
    link = cluster.link_between(rank_a, rank_b)
    return _flat("send_recv", 2, nbytes, link.pair_bandwidth_bytes_per_s, link.latency_s, eff)
