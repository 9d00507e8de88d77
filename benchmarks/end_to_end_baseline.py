"""The baseline rule of the end-to-end benchmark, computed in the same run: a constant-efficiency roofline."""

from __future__ import annotations

from end_to_end_models import graph_of
from end_to_end_rows import Row

BASELINE_COMPUTE = 0.5  # of peak FLOP/s
BASELINE_MEMORY = 0.8  # of peak HBM bandwidth


def _roofline_s(row: Row, phase: str, batch: int, seq: int, context: int | None = None) -> float:
    """One forward pass of a replica (tp x pp GPUs) at constant efficiencies, nothing else."""
    from cost_models.compute import WEIGHT_BYTES
    from cost_models.hardware import get_device
    from ir.phases import phase_costs

    dev = get_device(row.device)
    graph = graph_of(row.model)
    costs = phase_costs(graph, phase, batch=batch, seq_len=seq, context_len=context)
    gpus = row.tp * row.pp
    peak = dev.peak_flops_for(row.dtype)
    weights = graph.param_count * WEIGHT_BYTES[row.weight_dtype or row.dtype]
    kv_scale = 0.5 if row.kv_dtype == "fp8" else 1.0
    moved = weights + (costs.total("kv_read_bytes") + costs.total("kv_write_bytes")) * kv_scale
    return max(costs.total("flops") / (BASELINE_COMPUTE * peak * gpus),
               moved / (BASELINE_MEMORY * dev.memory_bandwidth_bytes_per_s * gpus))


def baseline(row: Row) -> float:
    """The row's metric under a constant-efficiency roofline: 50% of peak FLOP/s, 80% of peak HBM
    bandwidth, no communication, no overheads (the rule of thumb the issue compares against)."""
    from cost_models.hardware import get_device
    from ir.phases import phase_costs

    if row.phase == "train":
        dev = get_device(row.device)
        rate = BASELINE_COMPUTE * dev.peak_flops_for(row.dtype)
        if row.flops_convention == "megatron-eq3":
            return rate / 1e12  # eq. 3 counts the recomputed forward: achieved = the rule's rate
        flops = phase_costs(graph_of(row.model), "train", batch=row.batch, seq_len=row.input_len).total("flops")
        if row.recompute == "full":
            flops *= 4 / 3
        gpus = row.tp * row.pp * row.dp
        step = flops / (rate * gpus)
        if row.unit == "s":
            return step
        if row.unit == "tokens/s/GPU":
            return row.batch * row.input_len / step / gpus
        return BASELINE_COMPUTE * dev.peak_flops_for(row.dtype) / 1e12
    if row.phase == "decode":
        t = _roofline_s(row, "decode", row.batch, 1, row.input_len)
        return t * 1e3 if row.unit == "ms" else row.batch / t
    if row.phase == "prefill":
        return _roofline_s(row, "prefill", row.batch, row.input_len) * 1e3
    if row.phase in ("serve", "static_batch"):
        batch = row.batch if row.phase == "static_batch" else 256
        pre = _roofline_s(row, "prefill", batch, row.input_len)
        dec = _roofline_s(row, "decode", batch, 1, row.input_len + row.output_len // 2)
        return batch * row.output_len / (pre + row.output_len * dec) * row.dp
    if row.phase == "serve_qps":
        if row.metric == "mean_TTFT":
            return _roofline_s(row, "prefill", 1, row.input_len) * 1e3
        tpot = _roofline_s(row, "decode", 1, 1, row.input_len + row.output_len // 2)
        running = max(1, round(row.qps * row.output_len * tpot))
        return _roofline_s(row, "decode", running, 1, row.input_len + row.output_len // 2) * 1e3
    raise ValueError(f"{row.id}: no baseline for phase {row.phase}")
