"""`planner estimate`: every phase for every preset on DGX clusters, sanity relations, bad input."""

from __future__ import annotations

import json
import math

import pytest

import planner
from ir.errors import UserError
from planner.cli import main
from planner.presets import PRESETS

KEYS = {"model", "cluster", "parallel", "phase", "fits", "memory_per_device_bytes", "step_time_s",
        "tokens_per_s", "tflops_per_device", "mfu", "latency_s", "ttft_s", "tpot_s",
        "output_tokens_per_s", "max_batch", "energy_per_token_j", "breakdown"}
GENERATIVE = {n for n in PRESETS if n not in ("bert-base", "vit-b-16", "resnet-50")}


def _tp_for(name: str) -> int:
    cfg = planner.capture(name, seq_len=None if name in ("vit-b-16", "resnet-50") else 128).config
    heads, kv = cfg.get("num_heads"), cfg.get("num_kv_heads")
    for tp in (8, 4, 2):
        if heads and heads % tp == 0 and (kv % tp == 0 or tp % kv == 0):
            return tp
    return 1


def _check(result: dict, phase: str) -> None:
    assert set(result) >= KEYS
    assert set(result["breakdown"]) == {"compute", "memory", "communication", "bubble", "other"}
    assert all(v >= 0 for v in result["breakdown"].values())
    assert isinstance(result["fits"], bool)
    assert result["memory_per_device_bytes"] > 0
    json.dumps(result, allow_nan=False)
    if not result["fits"]:
        return
    if phase == "train":
        assert 0 < result["mfu"] < 1 and result["tokens_per_s"] > 0 and result["step_time_s"] > 0
    if phase == "prefill":
        assert result["latency_s"] == result["ttft_s"] > 0
    if phase == "decode":
        assert result["tpot_s"] > 0
        assert math.isclose(result["tokens_per_s"], 8 / result["tpot_s"])
    if phase == "serve":
        assert result["max_batch"] >= 1 and result["tokens_per_s"] > 0


@pytest.mark.parametrize("cluster", ["dgx-a100", "dgx-h100"])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_phase_every_preset(name, cluster):
    seq = None if name in ("vit-b-16", "resnet-50") else 512
    tp = _tp_for(name)
    for phase in ("train", "prefill", "decode", "serve"):
        if phase == "decode" and name not in GENERATIVE:
            with pytest.raises(UserError, match="no decode phase"):
                planner.estimate(name, f"1x{cluster}", phase, batch=8, input_len=seq, tp=tp)
            continue
        result = planner.estimate(name, f"1x{cluster}", phase, batch=8, input_len=seq, tp=tp,
                                  microbatch_size=1 if phase == "train" else None)
        _check(result, phase)


def test_more_tp_never_raises_weight_bytes():
    weights = [planner.estimate("llama-3.1-70b", "8xH100-SXM", "decode", tp=tp, batch=1, input_len=1024)
               ["memory_breakdown_bytes"]["weights"] for tp in (1, 2, 4, 8)]
    assert weights == sorted(weights, reverse=True) and weights[0] > 7 * weights[-1]


def test_decode_throughput_grows_with_batch_until_memory_binds():
    previous = 0.0
    fits = []
    for batch in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512):
        r = planner.estimate("llama-3-8b", "1xH100-SXM", "decode", batch=batch, input_len=2048)
        fits.append(r["fits"])
        if r["fits"]:
            assert r["tokens_per_s"] >= previous
            previous = r["tokens_per_s"]
    assert fits[0] and not fits[-1]  # 512 x 2176 tokens of KV cache (143 GB) cannot fit in 80 GB


def test_fits_false_when_weights_overflow():
    r = planner.estimate("llama-3.1-405b", "1xH100-SXM", "decode", batch=1, input_len=128)
    assert r["fits"] is False and r["memory_per_device_bytes"] > r["memory_capacity_bytes"]
    assert planner.estimate("llama-3.1-70b", "8xH100-SXM", "decode", tp=8, input_len=128)["fits"]


def test_pipeline_bubble_and_data_parallel_training():
    one = planner.estimate("llama-2-7b", "2xdgx-h100", "train", tp=1, pp=4, dp=4, batch=64, input_len=2048,
                           microbatch_size=1, zero_stage=1)
    assert one["breakdown"]["bubble"] > 0 and len(one["stages"]) == 4
    zero3 = planner.estimate("llama-2-7b", "2xdgx-h100", "train", dp=16, batch=64, input_len=2048,
                             microbatch_size=1, zero_stage=3)
    zero0 = planner.estimate("llama-2-7b", "2xdgx-h100", "train", dp=16, batch=64, input_len=2048,
                             microbatch_size=1, zero_stage=0)
    assert zero3["memory_per_device_bytes"] < zero0["memory_per_device_bytes"]


def test_recompute_trades_time_for_memory():
    kw = {"tp": 8, "batch": 8, "input_len": 4096, "microbatch_size": 1}
    none = planner.estimate("llama-2-13b", "8xA100-SXM-80GB", "train", recompute="none", **kw)
    full = planner.estimate("llama-2-13b", "8xA100-SXM-80GB", "train", recompute="full", **kw)
    assert full["step_time_s"] > none["step_time_s"]
    assert full["memory_breakdown_bytes"]["activations"] < none["memory_breakdown_bytes"]["activations"]


def test_quantised_weights_and_fp8():
    bf16 = planner.estimate("llama-3-8b", "1xH100-SXM", "decode", batch=1, input_len=512)
    int4 = planner.estimate("llama-3-8b", "1xH100-SXM", "decode", batch=1, input_len=512, weight_dtype="int4")
    assert int4["memory_breakdown_bytes"]["weights"] * 4 == pytest.approx(bf16["memory_breakdown_bytes"]["weights"])
    assert int4["tpot_s"] < bf16["tpot_s"]
    fp8 = planner.estimate("llama-3-8b", "1xH100-SXM", "prefill", batch=4, input_len=2048, dtype="fp8")
    bf = planner.estimate("llama-3-8b", "1xH100-SXM", "prefill", batch=4, input_len=2048)
    assert fp8["latency_s"] < bf["latency_s"]


def test_serve_with_qps_reports_mean_latencies():
    r = planner.estimate("llama-3-8b", "1xH100-SXM", "serve", input_len=512, output_len=64, qps=2.0)
    assert r["ttft_s"] > 0 and r["tpot_s"] > 0 and r["output_tokens_per_s"] > 0


@pytest.mark.parametrize(("argv", "needle"), [
    (["estimate", "llama-3.1-70b", "--cluster", "8xH100-SXMX"], "H100-SXM"),
    (["estimate", "llama-3.1-70b", "--tp", "3"], "tp=3 does not divide the 64 attention heads"),
    (["estimate", "llama-3.1-70b", "--cluster", "8xA100-SXM-80GB", "--dtype", "fp8"], "fp8"),
    (["estimate", "mixtral-8x7b", "--ep", "3"], "ep=3"),
    (["estimate", "llama-2-7b", "--tp", "16"], "devices"),
    (["estimate", "bert-base", "--phase", "decode"], "no decode phase"),
    (["estimate", "llama-2-7b", "--batch", "0"], "batch"),
])
def test_bad_input_one_line_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_malformed_cluster_yaml_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "lab.yaml"
    bad.write_text("nodes:\n  - preset: dgx-h100\n    count: [1\n")
    assert main(["estimate", "tiny-llama", "--cluster", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert str(bad) in err and (":3" in err or ":4" in err)
