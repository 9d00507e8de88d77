"""Calibration: the quick CPU profile loads as a device and as a cluster, its fitted numbers are sane,
the fit recovers known parameters, and `planner calibrate` fails on bad input with one line, exit 2."""

from __future__ import annotations

import pytest
import torch

import planner
import planner.cli.calibrate_cmd  # registers the command until _register() imports it
from cost_models.calibration import Fit, calibrate, eager_costs, fit, predict, profile_to_yaml
from cost_models.cluster import parse_cluster
from cost_models.efficiency import Efficiency
from cost_models.hardware import load_device_profile
from cost_models.microbench import Point
from planner.cli import main


@pytest.fixture(scope="module")
def profile_path(tmp_path_factory):
    profile = calibrate("cpu", quick=True, threads=1)
    path = tmp_path_factory.mktemp("calibration") / "cpu.yaml"
    path.write_text(profile_to_yaml(profile))
    return path


def test_quick_profile_loads_as_device_and_cluster(profile_path):
    device = load_device_profile(profile_path)
    assert device.kind == "cpu" and device.name == "cpu-calibrated"
    assert "measured by planner calibrate" in device.source_of("peak_flops.fp32")
    cluster = parse_cluster(str(profile_path))
    assert cluster.num_devices == 1 and cluster.nodes[0].device.efficiency == device.efficiency


def test_quick_profile_is_accepted_by_estimate(profile_path):
    r = planner.estimate("tiny-llama", str(profile_path), "decode", batch=1, input_len=32, dtype="fp32")
    assert r["device"] == "cpu-calibrated" and 0 < r["tpot_s"] < 1.0
    p = planner.estimate("tiny-llama", str(profile_path), "prefill", batch=2, input_len=64, dtype="fp32")
    assert p["latency_s"] > r["tpot_s"]


def test_fitted_parameters_are_in_sane_ranges(profile_path):
    device = load_device_profile(profile_path)
    eff = device.efficiency
    assert 1e9 < device.peak_flops["fp32"] < 1e14
    assert 1e8 < device.memory_bandwidth_bytes_per_s < 1e13
    assert 0 < eff["gemm_max"] <= 1 and 0 < eff["attention_max"] <= 1 and 0 < eff["memory"] <= 1
    assert 0 < eff["gemm_half_m"] < 1e4 and 0 < eff["gemm_half_nk"] < 1e5
    assert 1e-7 < eff["kernel_overhead_s"] < 1e-3
    import yaml

    data = yaml.safe_load(profile_path.read_text())
    assert data["calibration"]["torch_threads"] == 1 and data["calibration"]["dtype"] == "fp32"
    link = data["nodes"][0]["intra_link"]
    assert isinstance(link, dict) and link["bandwidth_bytes_per_s"] > 1e6 and 0 < link["latency_s"] < 0.1


def test_fit_recovers_known_parameters():
    truth = Efficiency(gemm_max=0.7, gemm_half_m=12.0, gemm_half_nk=40.0, attention_max=0.4, memory=0.9,
                       kernel_overhead_s=3e-6)
    peak, bandwidth = 1e11, 2e10
    shapes = [(m, n, k) for m in (1, 2, 4, 16, 64, 256, 1024) for n, k in ((256, 256), (768, 3072), (2048, 2048))]
    points = [Point("gemm", "", 2.0 * m * n * k, 4.0 * (m * k + n * k + m * n), 0.0, gemm_mnk=(m, n, k))
              for m, n, k in shapes]
    points += [Point("attention", "", 2e8 * r, 1e6, 0.0, query_rows=r) for r in (1, 16, 128, 512)]
    points += [Point("memory", "", 0.0, 2.0**28, 0.0), Point("overhead", "", 16, 192, 0.0)]
    points = [Point(**{**p.__dict__, "seconds": predict(p, peak, bandwidth, truth)}) for p in points]
    result = fit(points, detected_peak=peak)
    assert isinstance(result, Fit) and result.residual < 0.02
    assert result.eff.gemm_max == pytest.approx(0.7, rel=0.1)
    assert result.eff.attention_max == pytest.approx(0.4, rel=0.1)


def test_streaming_grid_prices_models_whose_weights_outgrow_the_cache(profile_path, tmp_path):
    """A profile with a second, slower GEMM grid (timed in a shuffled sequence of shapes) uses it only for
    models whose weights per device exceed `streaming_above_bytes`; a malformed grid is one line."""
    import yaml

    data = yaml.safe_load(profile_path.read_text())
    eff = data["device"]["efficiency"]
    assert eff.get("gemm_table") and "gemm_table_streaming" not in eff  # quick calibrations time one regime
    eff["gemm_table_streaming"] = [[m, n, k, e / 2] for m, n, k, e in eff["gemm_table"]]
    eff["streaming_above_bytes"] = 50e6
    slow = tmp_path / "streaming.yaml"
    slow.write_text(yaml.safe_dump(data))

    def tpot(model, path):
        return planner.estimate(model, str(path), "decode", batch=8, input_len=64, dtype="fp32")["tpot_s"]

    assert tpot("gpt2", slow) > 1.2 * tpot("gpt2", profile_path)  # 500 MB of fp32 weights: streaming
    assert tpot("tiny-llama", slow) == tpot("tiny-llama", profile_path)  # a few MB: resident
    eff["gemm_table_streaming"] = [[1, 2, 3]]
    slow.write_text(yaml.safe_dump(data))
    assert main(["estimate", "gpt2", "--cluster", str(slow)]) == 2


def test_eager_costs_separate_a_forward_calls_fixed_cost_from_its_ops():
    """References at two depths: the fit finds the per-call set-up cost besides the per-op costs, and the
    estimate of a deeper model then grows by the ops only (no intercept folded into the per-op cost)."""
    truth = {"prefill": (6e-6, 3e-4), "decode": (4e-6, 1.5e-4)}
    points = [Point("eager_op", f"ref {depth}L {phase}", ops * depth, views * depth,
                    call + per_op * ops * depth + 1e-6 * views * depth)
              for phase, (per_op, call) in truth.items() for ops, views in ((24, 20), (40, 30), (32, 27))
              for depth in (2, 4)]
    got = eager_costs(points)
    assert got["kernel_overhead_s"] == pytest.approx(6e-6, rel=1e-3)
    assert got["decode_call_overhead_s"] == pytest.approx(1.5e-4, rel=1e-3)
    assert got["view_overhead_s"] == pytest.approx(1e-6, rel=1e-3)
    eff = Efficiency(**{**got, "view_overhead_s": got["view_overhead_s"]})
    assert eff.call_overhead(decode=False) == pytest.approx(3e-4, rel=1e-3) and Efficiency().call_overhead(True) == 0.0
    # a single depth cannot tell a fixed cost from a per-op one when the op mixes are proportional
    flat = [p for p in points if " 2L " in p.label and "(24" not in p.label]
    flat = [Point("eager_op", p.label, p.flops, p.flops * 0.75, p.seconds) for p in flat]
    assert eager_costs(flat)["call_overhead_s"] is None or eager_costs(flat)["view_overhead_s"] is None


def test_gemm_grid_is_kept_as_a_table_that_reproduces_each_measurement():
    """A full m x n x k sweep becomes `gemm_table`; the model then predicts each measured GEMM to within
    rounding, including shapes no closed-form curve fits (a wide n that is slower than a narrow one)."""
    peak, bandwidth = 1e11, 2e10
    grid = [(m, n, k) for m in (1, 16, 256) for n in (256, 32768) for k in (256, 2048)]

    def rate(m, n, k):  # efficiency falls with n here, which the curve (d = min(n, k)) cannot express
        return 0.6 * m / (m + 8) * (0.5 if n > 4096 else 1.0) * k / (k + 64)

    overhead = 3e-6
    points = [Point("gemm", "", 2.0 * m * n * k, 4.0 * (m * k + n * k + m * n),
                    2.0 * m * n * k / (peak * rate(m, n, k)) + overhead, gemm_mnk=(m, n, k)) for m, n, k in grid]
    points += [Point("memory", "", 0.0, 2.0**28, 2.0**28 / bandwidth + overhead), Point("overhead", "", 16, 192, overhead)]
    eff = fit(points, detected_peak=peak).eff
    assert len(eff.gemm_table) == len(grid)
    for p in points[:-2]:
        assert predict(p, peak, bandwidth, eff) == pytest.approx(p.seconds, rel=0.01), p.gemm_mnk
    between = eff.gemm(16, 2048, 512)  # interpolated: between its grid neighbours
    assert eff.gemm(16, 256, 256) * 0.5 < between < eff.gemm(16, 256, 2048)
    assert eff.gemm(1024, 256, 256) > eff.gemm(256, 256, 256)  # beyond the grid: the curve's m-trend


def test_quick_profile_keeps_a_gemm_table_the_estimate_uses(profile_path):
    device = load_device_profile(profile_path)
    table = device.efficiency["gemm_table"]
    assert len(table) >= 8 and all(len(row) == 4 and 0 < row[3] <= 1 for row in table)


@pytest.mark.parametrize("table", ["[[1, 2, 3]]", "[[1, 8, 8, 0.5], [4, 8, 8, 0.5], [1, 16, 8, 0.5]]", "[[1, 8, 8, -1]]",
                                   "nonsense"])
def test_malformed_gemm_table_is_one_line(tmp_path, table, capsys):
    import yaml

    profile = {"name": "x", "device": {"name": "x", "vendor": "host", "kind": "cpu", "peak_flops": {"fp32": 1e11},
                                       "memory_bytes": 2**34, "memory_bandwidth_bytes_per_s": 2e10,
                                       "efficiency": {"gemm_max": 0.5}}}
    text = yaml.safe_dump(profile).replace("gemm_max: 0.5", f"gemm_max: 0.5\n    gemm_table: {table}")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["estimate", "tiny-llama", "--cluster", str(path), "--phase", "decode"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gemm_table" in err[0], err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_cuda_without_cuda_is_one_line_exit_2(tmp_path, capsys):
    assert main(["calibrate", "--device", "cuda", "-o", str(tmp_path / "gpu.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "CUDA" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "gpu.yaml").exists()


@pytest.mark.parametrize("args", [["calibrate", "--device", "tpu", "-o", "x.yaml"],
                                  ["calibrate", "-o", "/no/such/folder/cpu.yaml"],
                                  ["calibrate"]])
def test_cli_bad_input_is_one_line_exit_2(args, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1
