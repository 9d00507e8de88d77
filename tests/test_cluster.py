"""Clusters: node presets, the shorthand, YAML cluster files (round trip and errors), links."""

from __future__ import annotations

import pytest

from cost_models.cluster import (
    DEFAULT_CLUSTER,
    Cluster,
    cluster_to_yaml,
    get_node,
    list_nodes,
    load_cluster_file,
    parse_cluster,
)
from cost_models.hardware import get_device
from ir.errors import UserError

PRESETS = ["dgx-a100", "dgx-a100-40gb", "dgx-h100", "hgx-h200", "dgx-b200", "pcie-h100",
           "azure-nc-a100-v4-pair", "pcie-a100",
           "pcie-l4", "pcie-l40s", "pcie-a10g", "mi300x-platform", "cpu-host"]


def test_presets_load_with_sources():
    assert [n.name for n in list_nodes()] == PRESETS
    for node in list_nodes():
        for link in (node.intra_link, node.nic_link, *((node.host_link,) if node.host_link else ())):
            assert link.bandwidth_bytes_per_s > 0 and link.latency_s > 0 and link.source
        assert node.sources.get("devices_per_node") and node.sources.get("nics")
        if node.host_memory_bytes is not None:
            assert node.sources.get("host_memory_bytes")
        assert all(t.source for t in node.tiers)


def test_preset_numbers():
    assert get_node("dgx-a100").intra_link.bandwidth_bytes_per_s == 300e9
    assert get_node("dgx-h100").intra_link.bandwidth_bytes_per_s == 450e9
    assert get_node("dgx-b200").intra_link.bandwidth_bytes_per_s == 900e9
    assert get_node("dgx-a100").nic_bandwidth_per_device_bytes_per_s == 25e9
    assert get_node("DGX-H100").nic_bandwidth_per_node_bytes_per_s == 400e9
    assert get_node("mi300x-platform").intra_link.pair_bandwidth_bytes_per_s == 64e9
    pair = get_node("a100-pcie-nvlink-pair")  # an NVLink bridge joins two A100 PCIe: 600 GB/s both ways
    assert (pair.devices_per_node, pair.intra_link.bandwidth_bytes_per_s) == (2, 300e9)
    assert (parse_cluster("2xnc-a100-v4-pair").num_devices, parse_cluster("2xnc-a100-v4-pair").num_nodes) == (4, 2)


@pytest.mark.parametrize(("spec", "nodes", "devices", "device"), [
    ("8xH100-SXM", 1, 8, "H100-SXM"),
    ("4x8xA100-SXM-80GB", 4, 32, "A100-SXM-80GB"),
    ("2xdgx-h100", 2, 16, "H100-SXM"),
    ("4xcpu", 1, 4, "cpu"),
    ("8xh100", 1, 8, "H100-SXM"),
    ("16xa100", 2, 16, "A100-SXM-80GB"),
    ("4xL4", 1, 4, "L4"),
    ("8xMI300X", 1, 8, "MI300X"),
])
def test_shorthand(spec, nodes, devices, device):
    cluster = parse_cluster(spec)
    assert (cluster.num_nodes, cluster.num_devices) == (nodes, devices)
    assert {r.device.name for r in cluster.devices} == {device}
    assert cluster.is_homogeneous


def test_default_cluster_and_node_choice():
    cluster = parse_cluster(None)
    assert cluster.name == DEFAULT_CLUSTER and cluster.groups[0][0].name == "dgx-h100"
    assert parse_cluster("8xA100-SXM-80GB").groups[0][0].name == "dgx-a100"
    assert parse_cluster("2xH100-PCIE").groups[0][0].intra_link.name == "pcie-gen5-x16"
    assert parse_cluster("2xA10G").groups[0][0].name == "pcie-a10g"
    assert parse_cluster("8xmi300x").groups[0][0].intra_link.name == "xgmi-mi300x"


def test_more_devices_than_a_node_holds_become_more_nodes():
    cluster = parse_cluster("12xH100-SXM")
    assert cluster.num_nodes == 2 and cluster.num_devices == 12
    assert [(n.devices_per_node, c) for n, c in cluster.groups] == [(8, 1), (4, 1)]
    assert cluster.groups[1][0].nics == 4  # a half node keeps its half of the rail NICs


def test_heterogeneous():
    cluster = parse_cluster("4xA100-SXM-80GB+4xH100-SXM")
    assert cluster.num_devices == 8 and cluster.num_nodes == 2 and not cluster.is_homogeneous
    ranks = cluster.devices
    assert ranks[0] == (0, 0, get_device("A100-SXM-80GB")) and ranks[4] == (1, 0, get_device("H100-SXM"))
    assert cluster.link_between(0, 3).name == "nvlink3-nvswitch"
    assert cluster.link_between(4, 7).name == "nvlink4-nvswitch"
    across = cluster.link_between(1, 5)
    assert across.bandwidth_bytes_per_s == 25e9  # the slower side: 4 HDR NICs for 4 A100s
    assert across.latency_s == 8e-6


def test_links_in_a_homogeneous_cluster():
    cluster = parse_cluster("2x8xH100-SXM")
    assert cluster.link_between(0, 7).bandwidth_bytes_per_s == 450e9
    assert cluster.link_between(7, 8).bandwidth_bytes_per_s == 50e9
    assert cluster.link_between(3, 3).latency_s == 0.0
    with pytest.raises(UserError, match="outside"):
        cluster.link_between(0, 16)


def test_cpu_ranks_share_the_host():
    host, cluster = get_device("cpu"), parse_cluster("4xcpu")
    rank = cluster.devices[0].device
    assert rank.peak_flops["fp32"] == pytest.approx(host.peak_flops["fp32"] / 4)
    assert cluster.groups[0][0].intra_link.name == "gloo-loopback"


@pytest.mark.parametrize(("spec", "needle"), [
    ("0xH100-SXM", "positive"),
    ("-2xH100-SXM", "positive"),
    ("8xH900", "known"),
    ("2x16xH100-SXM", "at most 8"),
    ("2x8xdgx-h100", "already has 8"),
    ("2x4xcpu", "8xcpu"),
    ("8xH100-SXM+", "not N x NAME"),
    ("missing.yaml", "not found"),
])
def test_shorthand_errors_are_one_line(spec, needle):
    with pytest.raises(UserError) as info:
        parse_cluster(spec)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_unknown_device_lists_devices_and_presets():
    with pytest.raises(UserError) as info:
        parse_cluster("8xfoo")
    assert "H100-SXM" in str(info.value) and "dgx-h100" in str(info.value)


@pytest.mark.parametrize("spec", ["8xH100-SXM", "2xdgx-h100+4xL4", "12xH100-SXM", "4xcpu", "8xMI300X",
                                  "4xA100-SXM-80GB+4xH100-SXM"])
def test_yaml_round_trip(tmp_path, spec):
    cluster = parse_cluster(spec)
    path = tmp_path / "cluster.yaml"
    path.write_text(cluster_to_yaml(cluster))
    again = parse_cluster(str(path))
    assert again == cluster
    assert cluster_to_yaml(again) == cluster_to_yaml(cluster)


def test_yaml_file_with_presets_overrides_and_custom_devices(tmp_path):
    (tmp_path / "gpu0.yaml").write_text(
        "device: {name: lab-gpu, kind: gpu, peak_flops: {bf16: 200 TFLOP/s}, memory_bytes: 32 GB,"
        " memory_bandwidth_bytes_per_s: 1 TB/s}\n")
    path = tmp_path / "lab.yaml"
    path.write_text("""\
nodes:
  - preset: dgx-h100
    count: 2
    nic_link: {name: roce-200g, bandwidth_bytes_per_s: 200 Gb/s, latency_s: 12 us}
  - device: gpu0.yaml
    devices_per_node: 4
    intra_link: pcie-gen4-x16
    nic_link: ib-hdr-200g
    nics: 1
    tiers: [{name: cxl, capacity_bytes: 512 GiB, bandwidth_bytes_per_s: 64 GB/s}]
  - device: my-cpu-box
devices:
  - {name: my-cpu-box, kind: gpu, peak_flops: {fp16: 50 TFLOP/s}, memory_bytes: 16 GB,
     memory_bandwidth_bytes_per_s: 400 GB/s}
""")
    with pytest.raises(UserError, match="no default node"):
        load_cluster_file(path)
    path.write_text(path.read_text().replace("  - device: my-cpu-box\n",
                                             "  - {preset: pcie-l4, device: my-cpu-box, count: 3}\n"))
    cluster = load_cluster_file(path)
    assert cluster.name == "lab" and cluster.num_nodes == 6 and cluster.num_devices == 16 + 4 + 24
    h100_node, lab_node, custom_node = (node for node, _ in cluster.groups)
    assert h100_node.nic_link.bandwidth_bytes_per_s == 25e9 and h100_node.nic_link.latency_s == 12e-6
    assert lab_node.device.name == "lab-gpu" and lab_node.tiers[0].capacity_bytes == 512 * 2**30
    assert custom_node.device.name == "my-cpu-box" and custom_node.intra_link.name == "pcie-gen4-x16"


@pytest.mark.parametrize(("text", "needle"), [
    ("nodes: []\n", "non-empty 'nodes:'"),
    ("nodes:\n  - count: 2\n", "missing key 'preset' or 'device'"),
    ("nodes:\n  - {preset: dgx-h100, count: 0}\n", "count must be a positive integer"),
    ("nodes:\n  - {preset: dgx-h100, count: -1}\n", "count must be a positive integer"),
    ("nodes:\n  - {device: H100-SXM, devices_per_node: 0}\n", "devices_per_node must be a positive"),
    ("nodes:\n  - {device: H900}\n", "known devices"),
    ("nodes:\n  - {preset: dgx-h100, intra_link: warp-drive}\n", "unknown link 'warp-drive'"),
    ("nodes:\n  - {preset: dgx-h100, host_memory_bytes: 3 GHz}\n", "cannot read '3 GHz'"),
    ("nodes:\n  - {preset: dgx-h100, colour: red}\n", "unknown key(s) colour"),
])
def test_yaml_errors_are_one_line(tmp_path, text, needle):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        load_cluster_file(path)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nnodes:\n  - preset: dgx-h100\n    count: [2\n")
    with pytest.raises(UserError) as info:
        parse_cluster(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}:") and "malformed YAML" in message and "\n" not in message
    line = int(message[len(str(path)) + 1:].split(":")[0])
    assert 4 <= line <= 5


def test_cluster_rejects_empty_and_zero_counts():
    node = get_node("dgx-h100")
    with pytest.raises(UserError):
        Cluster("empty", ())
    with pytest.raises(UserError):
        Cluster("zero", ((node, 0),))
