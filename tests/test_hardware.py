"""The device database: every device loads, every number has a source, names and units resolve,
and `planner hardware` prints one JSON object or one error line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from cost_models.hardware import (
    DeviceSpec,
    device_from_mapping,
    device_names,
    get_device,
    list_devices,
    load_device_profile,
    parse_quantity,
)
from ir.errors import UserError
from planner.cli import main

REQUIRED = ["A100-SXM-40GB", "A100-SXM-80GB", "A100-PCIE-80GB", "H100-SXM", "H100-PCIE", "H200-SXM",
            "B200", "L4", "L40S", "A10G", "MI300X", "cpu"]
MEASUREMENTS = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "calibration" / "published_measurements.csv"


def test_every_required_device_loads():
    assert set(REQUIRED) <= set(device_names())
    for spec in list_devices():
        assert isinstance(spec, DeviceSpec)
        assert spec.kind in ("gpu", "cpu")
        assert spec.memory_bytes > 0 and spec.memory_bandwidth_bytes_per_s > 0
        assert spec.peak_flops and all(v > 0 for v in spec.peak_flops.values())


@pytest.mark.parametrize("name", REQUIRED)
def test_every_number_has_a_source(name):
    spec = get_device(name)
    for field_name in spec.numeric_fields():
        assert spec.source_of(field_name).strip(), f"{name}.{field_name} has no source"


@pytest.mark.parametrize(("alias", "canonical"), [
    ("h100", "H100-SXM"), ("A100", "A100-SXM-80GB"), ("a100-40gb", "A100-SXM-40GB"), ("H200", "H200-SXM"),
    ("mi300x", "MI300X"), ("l40s", "L40S"), ("HOST", "cpu"), (" a10g ", "A10G"), ("h100-pcie", "H100-PCIE"),
])
def test_aliases_are_case_insensitive(alias, canonical):
    assert get_device(alias).name == canonical


def test_unknown_device_lists_known_names_on_one_line():
    with pytest.raises(UserError) as info:
        get_device("h900")
    message = str(info.value)
    assert "\n" not in message and "'h900'" in message
    assert all(name in message for name in REQUIRED)


def test_dense_not_sparse_and_missing_dtypes():
    h100, a100 = get_device("H100-SXM"), get_device("A100-SXM-80GB")
    assert h100.peak_flops["bf16"] == 989e12 and h100.peak_flops["fp8"] == 1979e12
    assert "fp8" not in a100.peak_flops  # Ampere has no FP8
    assert a100.peak_flops_for("bfloat16") == 312e12
    with pytest.raises(UserError, match="no fp8 peak"):
        a100.peak_flops_for("fp8")


def _spec_rows():
    return [r for r in csv.DictReader(MEASUREMENTS.open()) if r["kind"] in ("spec", "spec-sheet")]


_CSV_DEVICE = {"A100-SXM4-80GB": "A100-SXM-80GB", "A100-SXM4-40GB": "A100-SXM-40GB", "H100-SXM5-80GB": "H100-SXM",
               "H100-PCIe-80GB": "H100-PCIE", "H200-SXM-141GB": "H200-SXM", "L4-24GB": "L4",
               "MI300X-192GB": "MI300X"}
_CSV_FIELD = {"bf16_dense_tflops": ("peak_flops.bf16", 1e12), "fp8_dense_tflops": ("peak_flops.fp8", 1e12),
              "hbm_capacity": ("memory_bytes", 1e9), "hbm_bandwidth": ("memory_bandwidth_bytes_per_s", 1e9),
              "tdp": ("tdp_w", 1.0)}


def test_yaml_agrees_with_published_spec_rows():
    checked = 0
    for row in _spec_rows():
        device, metric = _CSV_DEVICE.get(row["hardware"]), _CSV_FIELD.get(row["metric"])
        if device is None or metric is None:
            continue
        numbers = get_device(device).numeric_fields()
        if row["value"] == "n/a":
            assert metric[0] not in numbers, row["id"]
        else:
            assert numbers[metric[0]] == pytest.approx(float(row["value"]) * metric[1], rel=1e-3), row["id"]
        checked += 1
    assert checked >= 25


def test_quantities_and_their_errors():
    assert parse_quantity("2.039 TB/s", "bytes/s") == pytest.approx(2.039e12)
    assert parse_quantity("200 Gb/s", "bytes/s") == 25e9
    assert parse_quantity("5 us", "s") == 5e-6
    assert parse_quantity("1_000", "W") == 1000.0
    with pytest.raises(UserError, match="cannot read '3 GHz' as bytes"):
        parse_quantity("3 GHz", "bytes", "memory_bytes")
    with pytest.raises(UserError, match="as flop/s"):
        parse_quantity("80 GB", "flop/s")


def test_cpu_is_detected_and_split():
    cpu = get_device("cpu")
    assert cpu.kind == "cpu" and cpu.memory_bytes > 2**28
    assert "cores" in cpu.source_of("peak_flops.fp32")
    half = cpu.split(2)
    assert half.peak_flops["fp32"] == pytest.approx(cpu.peak_flops["fp32"] / 2)
    assert half.memory_bytes == cpu.memory_bytes // 2


def test_device_profile_and_missing_keys(tmp_path):
    path = tmp_path / "gpu.yaml"
    path.write_text("device:\n  name: lab-gpu\n  kind: gpu\n  peak_flops: {bf16: 100 TFLOP/s}\n"
                    "  memory_bytes: 24 GiB\n  memory_bandwidth_bytes_per_s: 1 TB/s\n")
    spec = load_device_profile(path)
    assert spec.memory_bytes == 24 * 2**30 and str(path) in spec.source_of("memory_bytes")
    with pytest.raises(UserError, match="missing memory_bytes"):
        device_from_mapping({"name": "x", "kind": "gpu", "peak_flops": {"bf16": 1},
                             "memory_bandwidth_bytes_per_s": 1}, "test")


def test_malformed_device_profile_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("device:\n  name: x\n  peak_flops: {bf16: 1\n  kind: gpu\n")
    with pytest.raises(UserError) as info:
        load_device_profile(path)
    assert f"{path}:" in str(info.value) and "malformed YAML" in str(info.value)


def test_roundtrip_through_dict():
    spec = get_device("MI300X")
    assert device_from_mapping(spec.to_dict(), "roundtrip") == spec
    assert hash(spec) == hash(device_from_mapping(spec.to_dict(), "roundtrip"))


# --- CLI ----------------------------------------------------------------------------------------
def test_cli_list_json(capsys):
    assert main(["hardware", "list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {d["name"] for d in data["devices"]} >= set(REQUIRED)
    assert "dgx-h100" in {n["name"] for n in data["nodes"]}


def test_cli_list_table(capsys):
    assert main(["hardware", "list"]) == 0
    out = capsys.readouterr().out
    assert "H100-SXM" in out and "dgx-a100" in out


@pytest.mark.parametrize("name", ["h100", "dgx-b200", "2x8xA100-SXM-80GB"])
def test_cli_show_json(capsys, name):
    assert main(["hardware", "show", name, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["type"] in ("device", "node", "cluster")


def test_cli_show_device_has_sources(capsys):
    assert main(["hardware", "show", "A10G"]) == 0
    out = capsys.readouterr().out
    assert "baseten" in out.lower() and "peak bf16" in out


def test_cli_bad_name_is_one_line_exit_2(capsys):
    assert main(["hardware", "show", "h900"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert "H100-SXM" in captured.err and "dgx-h100" in captured.err


def test_cli_bad_cluster_spec_exit_2(capsys):
    assert main(["hardware", "show", "0xH100-SXM", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "positive" in captured.err
