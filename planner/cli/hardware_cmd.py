"""`planner hardware list | show NAME`: the device database and node presets, every number with its source.

JSON output (`--json`) is SI: bytes, bytes/s, FLOP/s, seconds, watts, dollars per hour.
"""

from __future__ import annotations

import click

from cost_models.cluster import find_node, list_nodes, parse_cluster
from cost_models.hardware import DeviceSpec, device_names, find_device, list_devices
from cost_models.nodes import LinkSpec, NodeSpec
from ir.errors import UserError
from planner.cli import cli
from planner.cli.output import console, emit_json, human, table


@cli.group()
def hardware() -> None:
    """Devices, node presets and clusters the planner knows."""


@hardware.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def list_cmd(as_json: bool) -> None:
    """List devices and node presets."""
    devices, nodes = list_devices(), list_nodes()
    if as_json:
        emit_json({"devices": [d.to_dict() for d in devices], "nodes": [n.to_dict() for n in nodes]})
        return
    rows = [[d.name, d.vendor, d.kind, _flops(d, "bf16"), _flops(d, "fp8"), human(d.memory_bytes, "B"),
             human(d.memory_bandwidth_bytes_per_s, "B/s"), _opt(d.tdp_w, "W"), _price(d.price_per_hour)]
            for d in devices]
    out = console()
    out.print(table("Devices (dense peak FLOP/s)", ["name", "vendor", "kind", "bf16", "fp8", "memory",
                                                    "mem bw", "TDP", "$/h"], rows, right_from=3))
    rows = [[n.name, f"{n.devices_per_node}x {n.device.name}", n.intra_link.name,
             human(n.intra_link.bandwidth_bytes_per_s, "B/s"), f"{n.nics}x {n.nic_link.name}",
             human(n.nic_bandwidth_per_node_bytes_per_s, "B/s"),
             human(n.host_memory_bytes, "B") if n.host_memory_bytes else "-"] for n in nodes]
    out.print(table("Node presets (bandwidth per direction)", ["name", "devices", "intra link", "per device",
                                                                "NICs", "per node", "host memory"], rows, right_from=3))
    out.print("Clusters: `8xH100-SXM`, `4x8xA100-SXM-80GB`, `2xdgx-h100`, `4xcpu`, `4xL4+4xL40S` or a YAML "
              "file; `planner hardware show NAME` for sources.")


@hardware.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def show_cmd(name: str, as_json: bool) -> None:
    """Show a device, a node preset or a cluster spec, with the source of every number."""
    device, node = find_device(name), find_node(name)
    if device is not None:
        _show_device(device, as_json)
    elif node is not None:
        _show_node(node, as_json)
    elif any(ch.isdigit() for ch in name.split("x")[0]) or name.endswith((".yaml", ".yml")):
        cluster = parse_cluster(name)
        if as_json:
            emit_json({"type": "cluster", **cluster.to_dict()})
            return
        console().print(f"cluster {cluster.name}: {cluster.describe()}")
        for group_node, _ in cluster.groups:
            _show_node(group_node, False)
    else:
        presets = ", ".join(n.name for n in list_nodes())
        raise UserError(f"unknown hardware {name!r}; devices: {', '.join(device_names())}; "
                        f"node presets: {presets}; or a cluster like 2x8xH100-SXM")


def _show_device(device: DeviceSpec, as_json: bool) -> None:
    if as_json:
        emit_json({"type": "device", **device.to_dict()})
        return
    rows = [[f"peak {dtype} (dense)", _flops(device, dtype), device.source_of(f"peak_flops.{dtype}")]
            for dtype in device.peak_flops]
    units = {"memory_bytes": ("B", 1000), "memory_bandwidth_bytes_per_s": ("B/s", 1000),
             "l2_cache_bytes": ("B", 1024), "tdp_w": ("W", 1000), "idle_w": ("W", 1000)}
    for field_name, (unit, base) in units.items():
        value = getattr(device, field_name)
        if value is not None:
            rows.append([field_name, human(value, unit, base), device.source_of(field_name)])
    if device.price_per_hour is not None:
        rows.append(["price_per_hour", _price(device.price_per_hour), device.source_of("price_per_hour")])
    title = f"{device.name} ({device.vendor} {device.kind}; aliases: {', '.join(device.aliases) or '-'})"
    out = console()
    out.print(_sourced_table(title, rows))
    if device.notes:
        out.print(device.notes)


def _show_node(node: NodeSpec, as_json: bool) -> None:
    if as_json:
        emit_json({"type": "node", **node.to_dict(), "device_spec": node.device.to_dict()})
        return
    rows = [["devices", f"{node.devices_per_node}x {node.device.name}", node.sources.get("devices_per_node", "")],
            _link_row("intra-node link", node.intra_link),
            _link_row(f"NIC ({node.nics} per node)", node.nic_link),
            ["NIC bandwidth per node", human(node.nic_bandwidth_per_node_bytes_per_s, "B/s"),
             node.sources.get("nics", "")],
            ["NIC bandwidth per device", human(node.nic_bandwidth_per_device_bytes_per_s, "B/s"), "derived"]]
    if node.host_memory_bytes is not None:
        rows.append(["host memory", human(node.host_memory_bytes, "B"), node.sources.get("host_memory_bytes", "")])
    if node.host_link is not None:
        rows.append(_link_row("host <-> device link", node.host_link))
    for tier in node.tiers:
        rows.append([f"tier {tier.name}", f"{human(tier.capacity_bytes, 'B')} @ "
                     f"{human(tier.bandwidth_bytes_per_s, 'B/s')}", tier.source])
    title = f"node {node.name} (aliases: {', '.join(node.aliases) or '-'}); bandwidths per direction"
    console().print(_sourced_table(title, rows))


def _sourced_table(title: str, rows: list[list[str]]):
    """field | value (right-aligned) | source (left-aligned)."""
    t = table(title, ["field", "value", "source"], rows, right_from=1)
    t.columns[2].justify = "left"
    t.columns[1].no_wrap = True
    return t


def _link_row(label: str, link: LinkSpec) -> list[str]:
    value = f"{link.name}: {human(link.bandwidth_bytes_per_s, 'B/s')}, {link.latency_s * 1e6:g} us"
    if link.peer_bandwidth_bytes_per_s:
        value += f" ({human(link.peer_bandwidth_bytes_per_s, 'B/s')} per peer)"
    return [label, value, link.source]


def _flops(device: DeviceSpec, dtype: str) -> str:
    value = device.peak_flops.get(dtype)
    unit = "OP/s" if dtype.startswith("int") else "FLOP/s"
    return human(value, unit) if value is not None else "-"


def _opt(value: float | None, unit: str) -> str:
    return human(value, unit) if value is not None else "-"


def _price(value: float | None) -> str:
    return f"${value:.2f}" if value is not None else "-"
