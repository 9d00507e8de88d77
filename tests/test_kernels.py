"""Kernels a fused engine launches per layer, and their forward/backward times (cost_models.kernels,
cost_models.kernel_time)."""

import pytest

import planner
from cost_models.cluster import parse_cluster
from cost_models.efficiency import Efficiency
from cost_models.estimate_context import make_context
from cost_models.kernels import layer_kernels
from cost_models.layer_times import layer_times
from cost_models.parallel_config import Options
from ir.phases import phase_shape


@pytest.fixture(scope="module")
def llama():
    return planner.capture("tiny-llama", seq_len=64)


def _block(graph):
    return next(layer for layer in graph.layers if layer.kind == "block")


def test_gemms_sharing_an_input_are_one_kernel(llama):
    gemms = [k for k in layer_kernels(llama, _block(llama)) if k.kind == "gemm"]
    names = [[op.module_path.rsplit(".", 1)[-1] for op in k.ops] for k in gemms]
    assert names == [["q_proj", "k_proj", "v_proj"], ["o_proj"], ["gate_proj", "up_proj"], ["down_proj"]]


def test_elementwise_groups_do_not_span_gemms_and_move_their_boundary_tensors(llama):
    block = _block(llama)
    kernels = layer_kernels(llama, block)
    hidden, ffn = llama.config["hidden_size"], llama.config["intermediate_size"]
    tokens = llama.capture_tokens
    by_op = {op.id: i for i, k in enumerate(kernels) for op in k.ops}
    for k in kernels:
        if k.kind != "region":
            continue
        positions = {by_op[op.id] for op in k.ops}
        assert len(positions) == 1
    act = next(k for k in kernels if k.kind == "region" and any(op.target.endswith("silu.default") for op in k.ops))
    elem = act.ops[0].outputs[0].nbytes // act.ops[0].outputs[0].numel
    assert act.read_bytes == 2 * tokens * ffn * elem  # gate and up
    assert act.write_bytes == tokens * ffn * elem
    norms = [k for k in kernels if k.kind == "region" and any("norm" in op.module_path for op in k.ops)]
    assert len(norms) == 2 and all(k.write_bytes >= tokens * hidden * elem for k in norms)


def test_casts_and_layout_copies_alone_cost_nothing(llama):
    for k in layer_kernels(llama, _block(llama)):
        if k.kind == "region":
            assert any(op.kind not in ("copy", "view") for op in k.ops)


def _times(graph, cluster, **options):
    ctx = make_context(graph, parse_cluster(cluster), Options(input_len=64, dp=1, **options))
    shape = phase_shape(graph, "prefill", 4, 64)
    return layer_times(graph, shape, ctx.device, ctx.eff, ctx.cfg, ctx.kv_bytes, ctx.tp_group, backward=True)


def test_backward_costs_about_twice_the_forward_and_more_with_unfused_attention():
    graph = planner.capture("llama-2-7b", seq_len=2048)
    block = next(t for t, layer in zip(_times(graph, "1xA100-SXM-80GB"), graph.layers) if layer.kind == "block")
    assert 1.7 * block.total_s < block.backward_s < 3.0 * block.total_s
    unfused = next(t for t, layer in zip(_times(graph, "1xA100-SXM-80GB", attention="unfused"), graph.layers)
                   if layer.kind == "block")
    assert unfused.attention_s > 1.5 * block.attention_s  # the score matrix goes through memory
    assert unfused.backward_s > block.backward_s


def test_fp8_gemms_gain_less_than_the_peak_ratio():
    graph = planner.capture("llama-2-7b", seq_len=2048)
    bf16 = next(t for t, layer in zip(_times(graph, "1xH100-SXM"), graph.layers) if layer.kind == "block")
    fp8 = next(t for t, layer in zip(_times(graph, "1xH100-SXM", dtype="fp8"), graph.layers) if layer.kind == "block")
    gain = (bf16.total_s + bf16.backward_s) / (fp8.total_s + fp8.backward_s)
    assert 1.1 < gain < 1.9  # published: 1.3-1.5x per layer, never the 2x of the peaks


def test_sustained_load_scales_only_compute_ceilings():
    eff = Efficiency(gemm_max=0.8, attention_max=0.7, memory=0.9, sustained_compute=0.9)
    s = eff.under_sustained_load()
    assert (s.gemm_max, s.attention_max, s.memory, s.sustained_compute) == pytest.approx((0.72, 0.63, 0.9, 1.0))
    engine = Efficiency(gemm_max=0.8, attention_max=0.7, memory=0.9, sustained_compute=0.9,
                        engine_sustained_compute=0.8).under_sustained_load(training=False)
    assert (engine.gemm_max, engine.attention_max, engine.memory) == pytest.approx((0.64, 0.56, 0.9))


def test_inference_is_priced_at_the_engines_sustained_clock():
    """An engine iteration's compute-bound layers run at `engine_sustained_compute` of the kernel benchmarks'
    FLOP/s (A100: the same share as training, fitted on other rows); memory-bound decode hardly moves."""
    from dataclasses import replace

    import planner
    from cost_models.cluster import parse_cluster
    from cost_models.estimate_context import make_context
    from cost_models.estimate_infer import forward_pass
    from cost_models.parallel_config import Options

    graph = planner.capture("llama-3-8b", seq_len=2048)
    ctx = make_context(graph, parse_cluster("1xA100-SXM-80GB"), Options(tp=1, pp=1, dp=1, input_len=2048))
    at_burst = replace(ctx, eff=replace(ctx.eff, engine_sustained_compute=1.0))
    prefill, burst = forward_pass(ctx, "prefill", 4, 2048), forward_pass(at_burst, "prefill", 4, 2048)
    assert ctx.eff.engine_sustained_compute < 1.0
    assert prefill.compute_s == pytest.approx(burst.compute_s / ctx.eff.engine_sustained_compute, rel=0.05)
    decode, decode_burst = forward_pass(ctx, "decode", 1, 1, 2048), forward_pass(at_burst, "decode", 1, 1, 2048)
    assert decode.time_s == pytest.approx(decode_burst.time_s, rel=0.02)
