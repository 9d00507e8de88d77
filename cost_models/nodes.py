"""Nodes: the `LinkSpec`, `MemoryTier` and `NodeSpec` types, the node presets and links in
`hardware/nodes.yaml`, and building them from YAML mappings (shared by presets and cluster files).

Link bandwidths are line rates per direction per device; latencies are effective per-step alphas
(see the comment at the top of nodes.yaml for how they were derived and what is achievable).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import NamedTuple

from cost_models.hardware import DeviceSpec, get_device, load_yaml, parse_quantity, require_positive, unit_kind
from ir.errors import UserError

NODES_FILE = Path(__file__).parent / "hardware" / "nodes.yaml"
LINK_CLASSES = ("nvlink", "pci", "net", "host")


@dataclass(frozen=True)
class LinkSpec:
    """A link class: line-rate bandwidth per direction per device, effective latency, and where from.

    `peer_bandwidth_bytes_per_s` is set where one device pair gets less than the device's total
    (a full mesh such as MI300X Infinity Fabric); `pair_bandwidth_bytes_per_s` picks the right one.
    """

    name: str
    bandwidth_bytes_per_s: float
    latency_s: float
    source: str = ""
    peer_bandwidth_bytes_per_s: float | None = None
    kind: str | None = None  # nvlink | pci | net | host (None: from the name, see `link_class`)
    nvls_busbw_bytes_per_s: float | None = None  # in-switch reduction (NVLink SHARP) bus bandwidth, if any

    @property
    def pair_bandwidth_bytes_per_s(self) -> float:
        return self.peer_bandwidth_bytes_per_s or self.bandwidth_bytes_per_s

    @property
    def link_class(self) -> str:
        """The class collective models price the link as (NCCL's NVLink / PCI / network, or a host
        loopback priced by plain alpha-beta).

        >>> LinkSpec("nvlink4-nvswitch", 450e9, 2.6e-6).link_class, LinkSpec("efa-100g", 1e10, 1e-5).link_class
        ('nvlink', 'net')
        """
        if self.kind:
            return self.kind
        name = self.name.lower()
        if name.startswith(("nvlink", "xgmi", "infinity")):
            return "nvlink"
        if name.startswith("pcie"):
            return "pci"
        if name.startswith(("gloo", "loopback", "shm")):
            return "host"
        return "net"


@dataclass(frozen=True)
class MemoryTier:
    """A slower memory tier of a node (NVMe, CXL): capacity and bandwidth for the whole node."""

    name: str
    capacity_bytes: int
    bandwidth_bytes_per_s: float
    source: str = ""


@dataclass(frozen=True)
class NodeSpec:
    """One machine: `devices_per_node` devices on `intra_link`, `nics` NICs of `nic_link` each,
    host memory behind `host_link` (PCIe or C2C, per device), and optional slower tiers."""

    name: str
    device: DeviceSpec
    devices_per_node: int
    intra_link: LinkSpec
    nic_link: LinkSpec
    nics: int
    host_memory_bytes: int | None = None
    host_link: LinkSpec | None = None
    tiers: tuple[MemoryTier, ...] = ()
    aliases: tuple[str, ...] = ()
    sources: dict[str, str] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash((self.name, self.device, self.devices_per_node, self.intra_link, self.nics))

    @property
    def nic_bandwidth_per_node_bytes_per_s(self) -> float:
        return self.nics * self.nic_link.bandwidth_bytes_per_s

    @property
    def nic_bandwidth_per_device_bytes_per_s(self) -> float:
        return self.nic_bandwidth_per_node_bytes_per_s / self.devices_per_node

    @property
    def inter_node_link(self) -> LinkSpec:
        """What one device gets across nodes when all of them talk: its share of the node's NICs."""
        share = f"{self.nics} x {self.nic_link.name} shared by {self.devices_per_node} devices; "
        return LinkSpec(self.nic_link.name, self.nic_bandwidth_per_device_bytes_per_s,
                        self.nic_link.latency_s, share + self.nic_link.source)

    def resized(self, devices_per_node: int) -> NodeSpec:
        """The same node type with another device count; when fewer, NICs shrink along (ceil)."""
        if devices_per_node == self.devices_per_node:
            return self
        nics = self.nics
        if devices_per_node < self.devices_per_node:
            nics = max(1, math.ceil(self.nics * devices_per_node / self.devices_per_node))
        return replace(self, devices_per_node=devices_per_node, nics=nics)

    def to_dict(self) -> dict:
        """A JSON-able dict (SI units); the device appears by name (its spec: `device.to_dict()`)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out.update(device=self.device.name, intra_link=_link_dict(self.intra_link),
                   nic_link=_link_dict(self.nic_link), aliases=list(self.aliases), sources=dict(self.sources),
                   host_link=_link_dict(self.host_link) if self.host_link else None,
                   tiers=[{f.name: getattr(t, f.name) for f in fields(t)} for t in self.tiers])
        return out


def _link_dict(link: LinkSpec) -> dict:
    out = {f.name: getattr(link, f.name) for f in fields(link)}
    return {k: v for k, v in out.items() if v is not None}



# --- presets ------------------------------------------------------------------------------------
class _Presets(NamedTuple):
    links: dict[str, LinkSpec]
    nodes: dict[str, NodeSpec]
    lookup: dict[str, str]  # lower-case name or alias -> preset name
    defaults: dict[str, str]  # device name -> preset name


@functools.lru_cache(maxsize=1)
def _preset_links() -> dict[str, LinkSpec]:
    data = load_yaml(NODES_FILE)
    return {name: _link_from({"name": name, **spec}, {}, f"nodes.yaml links.{name}")
            for name, spec in data["links"].items()}


@functools.lru_cache(maxsize=1)
def _presets() -> _Presets:
    data = load_yaml(NODES_FILE)
    links = _preset_links()
    nodes: dict[str, NodeSpec] = {}
    lookup: dict[str, str] = {}
    for name, entry in data["nodes"].items():
        where = f"nodes.yaml nodes.{name}"
        node = node_fields(None, {"name": name, **entry}, get_device(entry["device"]), links, where)
        nodes[name] = node
        for key in (name, *node.aliases):
            lookup[key.lower()] = name
    return _Presets(links, nodes, lookup, dict(data["defaults"]))


def list_nodes() -> tuple[NodeSpec, ...]:
    """Every node preset, in the order of nodes.yaml.

    >>> [n.name for n in list_nodes()][:2]
    ['dgx-a100', 'dgx-a100-40gb']
    """
    return tuple(_presets().nodes.values())


def find_node(name: str) -> NodeSpec | None:
    """The node preset called `name` (case-insensitive, aliases allowed), or None.

    >>> find_node("DGX-H100").device.name
    'H100-SXM'
    """
    presets = _presets()
    key = presets.lookup.get(name.strip().lower())
    return presets.nodes[key] if key else None


def get_node(name: str) -> NodeSpec:
    """The node preset called `name`; `UserError` listing the presets if there is none.

    >>> get_node("dgx-a100").intra_link.bandwidth_bytes_per_s
    300000000000.0
    """
    node = find_node(name)
    if node is None:
        raise UserError(f"unknown node preset {name!r}; known presets: {', '.join(_presets().nodes)}")
    return node


def default_node_for(device: DeviceSpec) -> NodeSpec | None:
    """The node preset `NxDEVICE` uses for a device (by its name), with that device in it.

    >>> default_node_for(get_device("l4")).name
    'pcie-l4'
    """
    preset = _presets().defaults.get(device.name)
    return replace(get_node(preset), device=device) if preset else None


# --- building from mappings ---------------------------------------------------------------------
_LINK_KEYS = {f.name for f in fields(LinkSpec)}
_NODE_KEYS = {f.name for f in fields(NodeSpec)} | {"preset", "count"}


def _link_from(value: object, links: Mapping[str, LinkSpec], where: str) -> LinkSpec:
    if isinstance(value, str):
        known = {**_preset_links(), **links}
        if value not in known:
            raise UserError(f"{where}: unknown link {value!r}; known links: {', '.join(known)}")
        return known[value]
    if not isinstance(value, Mapping) or not {"name", "bandwidth_bytes_per_s", "latency_s"} <= set(value):
        raise UserError(f"{where}: a link needs name, bandwidth_bytes_per_s and latency_s (or a link name)")
    if set(value) - _LINK_KEYS:
        raise UserError(f"{where}: unknown link key(s) {', '.join(sorted(set(value) - _LINK_KEYS))}")
    numbers = {k: parse_quantity(v, unit_kind(k), f"{where}.{k}") for k, v in value.items()
               if k not in ("name", "source", "kind") and v is not None}
    require_positive({k: v for k, v in numbers.items() if k.endswith("bytes_per_s")}, where)
    kind = value.get("kind")
    if kind is not None and kind not in LINK_CLASSES:
        raise UserError(f"{where}.kind: {kind!r} is not a link class; use one of {', '.join(LINK_CLASSES)}")
    return LinkSpec(name=str(value["name"]), source=str(value.get("source", f"given in {where}")), kind=kind,
                    **numbers)


def _tier_from(value: object, where: str) -> MemoryTier:
    needed = {"name", "capacity_bytes", "bandwidth_bytes_per_s"}
    if not isinstance(value, Mapping) or not needed <= set(value):
        raise UserError(f"{where}: a tier needs name, capacity_bytes and bandwidth_bytes_per_s")
    tier = MemoryTier(str(value["name"]), int(parse_quantity(value["capacity_bytes"], "bytes", where)),
                      parse_quantity(value["bandwidth_bytes_per_s"], "bytes/s", where),
                      str(value.get("source", f"given in {where}")))
    require_positive({"capacity_bytes": tier.capacity_bytes, "bandwidth_bytes_per_s": tier.bandwidth_bytes_per_s}, where)
    return tier


def positive_int(value: object, key: str, where: str) -> int:
    """`value` if it is a positive int, else a one-line `UserError` naming `key` and `where`.

    >>> positive_int(8, "count", "x.yaml")
    8
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{where}: {key} must be a positive integer, got {value!r}")
    return value


def node_fields(base: NodeSpec | None, entry: Mapping, device: DeviceSpec,
                links: Mapping[str, LinkSpec], where: str) -> NodeSpec:
    """`base` with the NodeSpec fields given in `entry` replaced (units allowed), holding `device`;
    without a base, intra_link, nic_link and nics must be given.

    >>> node_fields(get_node("dgx-h100"), {"nics": 4}, get_device("h100"), {}, "example").nics
    4
    """
    unknown = sorted(set(entry) - _NODE_KEYS)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; see the cluster YAML schema "
                        "in `cost_models.cluster`")
    if base is None:
        missing = [k for k in ("intra_link", "nic_link", "nics") if k not in entry]
        if missing:
            raise UserError(f"{where}: device {device.name!r} has no default node, so give "
                            f"{', '.join(missing)} (or a preset)")
    values: dict = {"device": device}
    for key, value in entry.items():
        if key in ("intra_link", "nic_link") or (key == "host_link" and value is not None):
            values[key] = _link_from(value, links, f"{where}.{key}")
        elif key == "host_link":
            values[key] = None
        elif key in ("devices_per_node", "nics"):
            values[key] = positive_int(value, key, where)
        elif key == "host_memory_bytes":
            values[key] = None if value is None else int(parse_quantity(value, "bytes", f"{where}.{key}"))
        elif key == "tiers":
            values[key] = tuple(_tier_from(t, f"{where}.tiers[{i}]") for i, t in enumerate(value or ()))
        elif key == "aliases":
            values[key] = tuple(str(a) for a in value or ())
        elif key == "name":
            values[key] = str(value)
        elif key == "sources":
            values[key] = {str(k): str(v) for k, v in (value or {}).items()}
    if base is not None:
        return replace(base, **values)
    values.setdefault("name", f"{device.name}-node")
    values.setdefault("devices_per_node", 1)
    return NodeSpec(**values)
