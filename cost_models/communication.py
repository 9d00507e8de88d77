"""Collective and point-to-point times on the cluster's topology.

Conventions of nccl-tests (PERFORMANCE.md): for a collective over n ranks moving a buffer of S
bytes, algorithm bandwidth S / t relates to bus bandwidth B by
  all-reduce:                 t = alpha + 2 (n-1)/n * S / B
  all-gather, reduce-scatter: t = alpha + (n-1)/n * S / B      (S = the full, gathered buffer)
  all-to-all:                 t = alpha + (n-1)/n * S / B      (S = bytes each rank sends in all)
  send/recv:                  t = alpha + S / B
B is the slowest link on the ring (NVSwitch inside a node, the NIC share across nodes) times the
achievable fraction `Efficiency.comm`. On GPU links (NVLink, PCIe, NICs) alpha and the share of B
follow NCCL's own choice of algorithm and protocol by message size (`cost_models.collectives`: LL,
LL128 and Simple rings, trees across nodes, NVLS in NVSwitch nodes), and inference engines' custom
all-reduce replaces NCCL for small buffers inside an NVLink node (`impl="custom"`); an NCCL all-reduce
inside one node takes at least what it was measured to take on that device family's NVSwitch node
(`collectives.measured_allreduce_time`); every call adds `Efficiency.collective_launch_s`. On host
links (gloo loopback between CPU ranks) alpha is the link's latency per ring step, (n-1) steps
(2(n-1) for all-reduce), plus one kernel overhead.
Groups spanning nodes use the hierarchical scheme NCCL uses for all-reduce: reduce-scatter inside
nodes, all-reduce across nodes on 1/n_local of the data, all-gather inside nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

from cost_models.collectives import (
    custom_allreduce_links,
    custom_allreduce_time,
    measured_allreduce_curve,
    measured_allreduce_time,
    nccl_time,
)
from cost_models.efficiency import Efficiency, family_of

COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send_recv")
IMPLEMENTATIONS = ("nccl", "custom")  # custom: an inference engine's own all-reduce where it applies


@dataclass(frozen=True)
class Group:
    """A communication group: n ranks, `per_node` of them on each node, and its two link levels."""

    size: int
    per_node: int
    intra_bandwidth: float  # bytes/s per direction per device
    intra_latency_s: float
    inter_bandwidth: float  # NIC share per device
    inter_latency_s: float
    intra_class: str = "host"  # nvlink | pci | net | host (`LinkSpec.link_class`); host: plain alpha-beta
    inter_class: str = "host"
    nvls_busbw: float | None = None  # NVLink SHARP bus bandwidth inside a node, where the switch has it
    family: str = ""  # the devices' fitted family (A100, H100, ...): selects measured collective curves

    @property
    def nodes(self) -> int:
        return max(self.size // max(self.per_node, 1), 1)


def group_of(cluster, size: int, stride: int = 1) -> Group:
    """The group of `size` ranks starting at rank 0 with `stride` (tp=1, then dp/pp outer).

    Ranks are placed node by node, so a group stays inside one node while size * stride fits.
    """
    node = cluster.nodes[0]
    per_node = max(min(size, node.devices_per_node // max(stride, 1)), 1) if size > 1 else 1
    inter, intra = node.inter_node_link, node.intra_link
    return Group(size, per_node, intra.pair_bandwidth_bytes_per_s, intra.latency_s, inter.bandwidth_bytes_per_s,
                 inter.latency_s, intra.link_class, "host" if intra.link_class == "host" else inter.link_class,
                 intra.nvls_busbw_bytes_per_s, family_of(node.device))


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


def _level(kind: str, n: int, nbytes: float, bandwidth: float, latency: float, link_class: str, eff: Efficiency,
           nodes: int = 1, nvls: float | None = None) -> float:
    """One level of links: NCCL's protocol model on GPU link classes, alpha-beta on host links."""
    if n <= 1 or nbytes <= 0:
        return 0.0
    if link_class == "host":
        return _flat(kind, n, nbytes, bandwidth, latency, eff)
    return nccl_time(kind, n, nbytes, link_class, bandwidth * eff.comm, nodes, nvls)


def collective_time(kind: str, nbytes: float, group: Group, eff: Efficiency, impl: str = "nccl") -> float:
    """Seconds for one collective of `nbytes` (see the module docstring for what S means); `impl`
    "custom" lets an all-reduce inside one NVLink node use the engines' custom kernel.

    >>> g = Group(8, 8, 450e9, 2.6e-6, 50e9, 5e-6)
    >>> round(collective_time("all_reduce", 64 * 2**20, g, Efficiency()) * 1e3, 3)
    0.368
    >>> nv = Group(8, 8, 300e9, 4.4e-6, 25e9, 8e-6, "nvlink", "net")
    >>> round(collective_time("all_reduce", 8192, nv, Efficiency()) * 1e6, 1)  # NCCL LL ring
    15.2
    >>> round(collective_time("all_reduce", 8192, nv, Efficiency(), impl="custom") * 1e6, 1)  # one-shot
    3.2
    """
    if group.size <= 1 or nbytes <= 0:
        return 0.0
    launch = 0.0 if group.intra_class == "host" else eff.collective_launch_s
    if group.nodes <= 1:
        if impl == "custom" and kind == "all_reduce" and group.intra_class in custom_allreduce_links():
            t = custom_allreduce_time(group.size, nbytes, group.intra_bandwidth * eff.comm,
                                      eff.custom_allreduce_latency_s)
            if t is not None:
                return t + launch
        return launch + _intra_node(kind, nbytes, group, eff)
    return launch + _hierarchical(kind, nbytes, group, eff)


def _intra_node(kind: str, nbytes: float, group: Group, eff: Efficiency) -> float:
    """One node: NCCL's model, and for an all-reduce at least the time measured on the family's node."""
    def model(size: float) -> float:
        return _level(kind, group.size, size, group.intra_bandwidth, group.intra_latency_s, group.intra_class, eff,
                      nvls=group.nvls_busbw)

    curve = measured_allreduce_curve(group.family, group.size, group.intra_class) if kind == "all_reduce" else ()
    return measured_allreduce_time(model, nbytes, curve)


def _hierarchical(kind: str, nbytes: float, group: Group, eff: Efficiency) -> float:
    local, nodes = group.per_node, group.nodes
    intra = (group.intra_bandwidth, group.intra_latency_s, group.intra_class)
    inter = (group.inter_bandwidth, group.inter_latency_s, group.inter_class)
    if kind == "all_reduce":
        return (_level("reduce_scatter", local, nbytes, *intra, eff, nvls=group.nvls_busbw)
                + _level("all_reduce", nodes, nbytes / local, *inter, eff, nodes=nodes)
                + _level("all_gather", local, nbytes, *intra, eff, nvls=group.nvls_busbw))
    if kind in ("all_gather", "reduce_scatter"):
        return (_level(kind, local, nbytes / nodes, *intra, eff, nvls=group.nvls_busbw)
                + _level(kind, nodes, nbytes, *inter, eff, nodes=nodes))
    if kind == "all_to_all":
        # the share of the data leaving the node crosses the NIC; the rest stays on NVLink
        remote = nbytes * (group.size - local) / group.size
        local_part = nbytes * (local - 1) / group.size
        return ((group.size - 1) * group.inter_latency_s + eff.kernel_overhead_s
                + max(remote / (group.inter_bandwidth * eff.comm), local_part / (group.intra_bandwidth * eff.comm)))
    return _level(kind, 2, nbytes, *inter, eff)


def p2p_time(nbytes: float, cluster, rank_a: int, rank_b: int, eff: Efficiency) -> float:
    """Send/recv of `nbytes` between two ranks over whatever link joins them."""
    link = cluster.link_between(rank_a, rank_b)
    return _flat("send_recv", 2, nbytes, link.pair_bandwidth_bytes_per_s, link.latency_s, eff)
