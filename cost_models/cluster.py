"""Clusters: the `Cluster` type (node groups, ranks, links between ranks), the parser for the
`--cluster` argument (a shorthand or a YAML file) and `cluster_to_yaml`. Links, node specs and the
node presets live in `cost_models.nodes` and are re-exported here.

Shorthand (names case-insensitive, aliases allowed; groups joined by "+" may differ):
  `8xH100-SXM` one node of 8 devices; `4x8xA100-SXM-80GB` 4 nodes of 8; `2xdgx-h100` 2 node presets;
  `4xcpu` 4 CPU ranks on this host (each gets 1/4 of its cores, memory and bandwidth);
  `4xA100-SXM-80GB+4xH100-SXM` two node groups. `NxDEVICE` uses the device's default node (H100-SXM:
  dgx-h100, A100-SXM-80GB: dgx-a100, PCIe parts: a PCIe node, MI300X: mi300x-platform); if N exceeds
  that node's size it becomes ceil(N/size) nodes: N // size full nodes plus one node of the rest.

Cluster YAML file (values take units, "300 GB/s", "2 TiB", "5 us", or plain SI numbers):
  name: lab                          # optional, default: the file name without .yaml
  devices:                           # optional: custom devices, DeviceSpec fields (see
    - {name: my-gpu, kind: gpu, peak_flops: {bf16: 400 TFLOP/s},   # `planner hardware show h100`);
       memory_bytes: 48 GB, memory_bandwidth_bytes_per_s: 1 TB/s}  # they shadow built-in names
    - profiles/gpu0.yaml             # or a device profile: a YAML with a `device:` mapping
  nodes:                             # required: one entry per node group
    - preset: dgx-h100               # start from a node preset, and/or
      device: H100-SXM               # a device (name, custom name, or profile path); without a
      count: 2                       # preset its default node is the base; count default 1
      devices_per_node: 8            # any NodeSpec field overrides the base:
      intra_link: nvlink4-nvswitch   # a link: a name from nodes.yaml or a mapping {name,
      nic_link: {name: roce, bandwidth_bytes_per_s: 200 Gb/s, latency_s: 10 us}  # bandwidth_bytes_per_s,
      nics: 4                        # latency_s, source, peer_bandwidth_bytes_per_s}
      host_memory_bytes: 1 TiB
      host_link: pcie-gen5-x16
      tiers: [{name: nvme, capacity_bytes: 15 TB, bandwidth_bytes_per_s: 12 GB/s}]
A device with no default node needs intra_link, nic_link and nics. `cluster_to_yaml` writes this schema.
`Cluster.is_homogeneous` means every node group is the same node (12xH100-SXM is 8 + 4: not).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import yaml

from cost_models.hardware import (
    DeviceSpec,
    device_from_mapping,
    device_names,
    find_device,
    get_device,
    load_device_profile,
    load_yaml,
)
from cost_models.nodes import (
    LinkSpec,
    MemoryTier,
    NodeSpec,
    default_node_for,
    find_node,
    get_node,
    list_nodes,
    node_fields,
    positive_int,
)
from ir.errors import UserError

__all__ = [
    "DEFAULT_CLUSTER", "MAX_DEVICES", "Cluster", "LinkSpec", "MemoryTier", "NodeSpec", "RankInfo", "cluster_to_yaml",
    "default_node_for", "find_node", "get_node", "list_nodes", "load_cluster_file", "parse_cluster",
]

DEFAULT_CLUSTER = "8xH100-SXM"
MAX_DEVICES = 65_536  # the largest cluster accepted (input bound: beyond it every search grows without use)

class RankInfo(NamedTuple):
    """Where a global rank lives: node index, rank within the node, and its device."""

    node: int
    local_rank: int
    device: DeviceSpec


@dataclass(frozen=True)
class Cluster:
    """Node groups `(NodeSpec, count)` in rank order; ranks fill node 0 first, then node 1, ...

    >>> c = parse_cluster("2x8xH100-SXM")
    >>> c.num_devices, c.num_nodes, c.link_between(0, 8).name, c.is_homogeneous
    (16, 2, 'ib-ndr-400g', True)
    """

    name: str
    groups: tuple[tuple[NodeSpec, int], ...]

    def __post_init__(self) -> None:
        if not self.groups:
            raise UserError(f"cluster {self.name!r} has no nodes; give at least one node group")
        for node, count in self.groups:
            if count < 1 or node.devices_per_node < 1:
                raise UserError(f"cluster {self.name!r}: node and device counts must be positive, "
                                f"got {count} x {node.devices_per_node}")
        if self.num_devices > MAX_DEVICES:
            raise UserError(f"cluster {self.name!r} has {self.num_devices:,} devices, above the {MAX_DEVICES:,} the "
                            f"planner accepts; plan a part of it")

    @functools.cached_property
    def nodes(self) -> tuple[NodeSpec, ...]:
        return tuple(node for node, count in self.groups for _ in range(count))

    @property
    def num_nodes(self) -> int:
        return sum(count for _, count in self.groups)

    @property
    def num_devices(self) -> int:
        return sum(node.devices_per_node * count for node, count in self.groups)

    @functools.cached_property
    def devices(self) -> tuple[RankInfo, ...]:
        return tuple(RankInfo(i, local, node.device)
                     for i, node in enumerate(self.nodes) for local in range(node.devices_per_node))

    @property
    def is_homogeneous(self) -> bool:
        return len({node for node, _ in self.groups}) == 1

    def rank_info(self, rank: int) -> RankInfo:
        if not 0 <= rank < self.num_devices:
            raise UserError(f"rank {rank} is outside cluster {self.name!r} of {self.num_devices} devices")
        return self.devices[rank]

    def link_between(self, rank_a: int, rank_b: int) -> LinkSpec:
        """The link two ranks talk over: the node's intra link, else the slower inter-node side.

        >>> parse_cluster("4xA100-SXM-80GB+4xH100-SXM").link_between(0, 4).bandwidth_bytes_per_s
        25000000000.0
        """
        a, b = self.rank_info(rank_a), self.rank_info(rank_b)
        nodes = self.nodes
        if rank_a == rank_b:
            return LinkSpec("local", a.device.memory_bandwidth_bytes_per_s, 0.0, "same device: memory copy")
        if a.node == b.node:
            return nodes[a.node].intra_link
        la, lb = nodes[a.node].inter_node_link, nodes[b.node].inter_node_link
        if la == lb:
            return la
        slow = la if la.bandwidth_bytes_per_s <= lb.bandwidth_bytes_per_s else lb
        return replace(slow, latency_s=max(la.latency_s, lb.latency_s),
                       source=f"slower side of {la.name} / {lb.name}: {slow.source}")

    def describe(self) -> str:
        """One line: '2 x dgx-h100 (8x H100-SXM), 16 devices'."""
        parts = [f"{count} x {node.name} ({node.devices_per_node}x {node.device.name})"
                 for node, count in self.groups]
        return f"{' + '.join(parts)}, {self.num_devices} devices"

    def to_dict(self) -> dict:
        """JSON-able: name, groups (node dicts with count), devices (distinct device dicts)."""
        specs = {node.device.name: node.device.to_dict() for node, _ in self.groups}
        return {"name": self.name, "num_devices": self.num_devices, "num_nodes": self.num_nodes,
                "groups": [{**node.to_dict(), "count": count} for node, count in self.groups],
                "devices": [specs[k] for k in sorted(specs)]}


# --- the --cluster argument ---------------------------------------------------------------------
_GROUP = re.compile(r"^(?:(-?\d+)x)?(?:(-?\d+)x)?([a-z][a-z0-9_.-]*)$")


def parse_cluster(spec: str | os.PathLike | Cluster | None = None) -> Cluster:
    """A `Cluster` from a shorthand, a YAML file path, or a Cluster (returned as is); None: the default.

    >>> parse_cluster("4x8xa100").describe()
    '4 x dgx-a100 (8x A100-SXM-80GB), 32 devices'
    >>> parse_cluster("12xh100").describe()
    '1 x dgx-h100 (8x H100-SXM) + 1 x dgx-h100 (4x H100-SXM), 12 devices'
    """
    if isinstance(spec, Cluster):
        return spec
    text = DEFAULT_CLUSTER if spec is None else os.fspath(spec).strip()
    if text.lower().endswith((".yaml", ".yml")) or os.path.sep in text or Path(text).is_file():
        return load_cluster_file(text)
    groups: list[tuple[NodeSpec, int]] = []
    names = []
    for part in text.split("+"):
        name, parsed = _parse_group(part.strip(), text)
        names.append(name)
        groups.extend(parsed)
    return Cluster("+".join(names), tuple(groups))


def _parse_group(part: str, whole: str) -> tuple[str, list[tuple[NodeSpec, int]]]:
    """One "+"-separated group -> (canonical text, node groups)."""
    match = _GROUP.match(part.lower())
    if not match:
        raise UserError(f"cannot read cluster {whole!r}: {part!r} is not N x NAME; try 8xH100-SXM, "
                        "2x8xA100-SXM-80GB, 2xdgx-h100, 4xcpu or a cluster YAML file")
    first, second, name = match.groups()
    if max(len(first or ""), len(second or "")) > len(str(MAX_DEVICES)):
        raise UserError(f"cannot read cluster {whole!r}: a count in {part!r} is above the {MAX_DEVICES:,} devices "
                        f"the planner accepts")
    n1 = int(first) if first else 1
    if min(n1, int(second or 1)) < 1:
        raise UserError(f"cannot read cluster {whole!r}: counts must be positive in {part!r}")
    preset = find_node(name)
    if preset is not None and find_device(name) is None:
        if second:
            raise UserError(f"cannot read cluster {whole!r}: node preset {preset.name} already has "
                            f"{preset.devices_per_node} devices; write {first}x{preset.name}")
        return f"{n1}x{preset.name}", [(preset, n1)]
    device = find_device(name)
    if device is None:
        presets = ", ".join(n.name for n in list_nodes())
        raise UserError(f"cannot read cluster {whole!r}: unknown device or node {name!r}; devices: "
                        f"{', '.join(device_names())}; node presets: {presets}")
    node = default_node_for(device)
    if node is None:
        raise UserError(f"cannot read cluster {whole!r}: {device.name} has no default node; "
                        "describe it in a cluster YAML")
    if device.kind == "cpu":
        if second:
            raise UserError(f"cannot read cluster {whole!r}: CPU ranks all run on this host; "
                            f"write {n1 * int(second)}xcpu")
        return f"{n1}x{device.name}", [(replace(node, devices_per_node=n1, device=device.split(n1)), 1)]
    if second:
        per_node = int(second)
        if per_node > node.devices_per_node:
            raise UserError(f"cannot read cluster {whole!r}: a {node.name} node holds at most "
                            f"{node.devices_per_node} {device.name}; write {n1 * per_node}x{device.name}")
        return f"{n1}x{per_node}x{device.name}", [(node.resized(per_node), n1)]
    full, rest = divmod(n1, node.devices_per_node)
    groups = [(node, full)] if full else []
    groups += [(node.resized(rest), 1)] if rest else []
    return f"{n1}x{device.name}", groups


def load_cluster_file(path: str | os.PathLike) -> Cluster:
    """A `Cluster` from a YAML file in the schema of this module's docstring.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "lab.yaml"
    >>> _ = p.write_text("nodes: [{preset: dgx-a100, count: 2}, {device: L4, devices_per_node: 2}]")
    >>> load_cluster_file(p).describe()
    '2 x dgx-a100 (8x A100-SXM-80GB) + 1 x pcie-l4 (2x L4), 18 devices'
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"cluster file {path} not found; give an existing YAML file or a shorthand "
                        "like 8xH100-SXM")
    data = load_yaml(path)
    if not isinstance(data, Mapping) or not isinstance(data.get("nodes"), list) or not data["nodes"]:
        raise UserError(f"{path}: a cluster file needs a non-empty 'nodes:' list")
    custom = _custom_devices(data.get("devices") or [], path)
    groups = []
    for i, entry in enumerate(data["nodes"]):
        where = f"{path}: nodes[{i}]"
        if not isinstance(entry, Mapping):
            raise UserError(f"{where}: expected a mapping with preset and/or device")
        groups.append(_group_from_entry(entry, custom, path.parent, where))
    return Cluster(str(data.get("name") or path.stem), tuple(groups))


def _custom_devices(entries: list, path: Path) -> dict[str, DeviceSpec]:
    out = {}
    for i, entry in enumerate(entries):
        spec = (load_device_profile(path.parent / entry) if isinstance(entry, str)
                else device_from_mapping(entry, f"{path}: devices[{i}]"))
        out[spec.name.lower()] = spec
    return out


def _group_from_entry(entry: Mapping, custom: Mapping[str, DeviceSpec], base_dir: Path,
                      where: str) -> tuple[NodeSpec, int]:
    if "preset" not in entry and "device" not in entry:
        raise UserError(f"{where}: missing key 'preset' or 'device'")
    count = positive_int(entry.get("count", 1), "count", where)
    base = get_node(str(entry["preset"])) if "preset" in entry else None
    device, by_name = base.device if base else None, False
    if "device" in entry:
        name = str(entry["device"])
        if name.lower().endswith((".yaml", ".yml")):
            device = load_device_profile(base_dir / name)
        else:
            device = custom.get(name.lower())
            by_name = device is None
            device = device or get_device(name)
        base = base or default_node_for(device)
    fields_given = {k: v for k, v in entry.items() if k not in ("preset", "count", "device")}
    if base is not None and "devices_per_node" in fields_given:
        base = base.resized(positive_int(fields_given["devices_per_node"], "devices_per_node", where))
    node = node_fields(base, fields_given, device, {}, where)
    if by_name and device.kind == "cpu" and find_device(device.name) == device:
        node = replace(node, device=device.split(node.devices_per_node))  # "cpu" means the whole host
    return node, count


def cluster_to_yaml(cluster: Cluster) -> str:
    """YAML text in the cluster-file schema that `load_cluster_file` reads back to an equal Cluster.

    >>> import tempfile, pathlib
    >>> c = parse_cluster("2xdgx-h100+4xL4")
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "c.yaml"
    >>> _ = p.write_text(cluster_to_yaml(c))
    >>> load_cluster_file(p) == c
    True
    """
    devices = {node.device.name: node.device.to_dict() for node, _ in cluster.groups}
    if len(devices) != len({node.device for node, _ in cluster.groups}):
        raise UserError(f"cluster {cluster.name!r} has two different devices with one name; rename one")
    nodes = []
    for node, count in cluster.groups:
        entry = {k: v for k, v in node.to_dict().items() if v is not None}
        nodes.append({"device": node.device.name, "count": count, **entry})
    doc = {"name": cluster.name, "devices": [devices[k] for k in sorted(devices)], "nodes": nodes}
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=120)
