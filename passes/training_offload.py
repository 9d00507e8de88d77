"""Training that only fits with offload: ZeRO-Offload-style placement of optimizer states (and,
if still needed, activations) in host memory, chosen by the CP-SAT offload model of
`passes.offload`, with the predicted slowdown.

Layout: data parallel over every device (tp = pp = 1), ZeRO-2 partitioning of gradients and
optimizer states, full recomputation (the layout ZeRO-Offload targets; Ren et al. 2021, Sec. 4).
Per step and rank, for each layer's partition of P parameters:
- optimizer states (12 B/param: fp32 master, Adam m and v) live off HBM; gradients stream out
  during backward (2 B/param, overlappable) and updated bf16 parameters come back after the CPU
  Adam step (2 B/param, exposed);
- the CPU Adam step reads and writes the 16 B/param of states and gradients at host-memory speed
  (taken as the host link's bandwidth x 4, a conservative DDR figure for a server socket share);
- offloaded activations (checkpoints of full recomputation) go out in forward and come back in
  backward (2x their bytes, overlappable).
The step time is the in-HBM step of the same layout plus the offload model's added time.
"""

from __future__ import annotations

from cost_models.estimate_context import make_context
from cost_models.estimate_train import stage_memory, train_step
from cost_models.memory import ADAM_BYTES_PER_PARAM
from cost_models.parallel_config import Options
from ir.graph import Graph
from passes.offload import HBM, OffloadInstance, OffloadItem, memory_tiers, solve_offload

_HOST_MEMORY_SPEEDUP = 4.0  # host DRAM bandwidth relative to the host link (DDR5 server share vs PCIe)


def _items(ctx, graph: Graph, dp: int, act_per_block: float) -> list[OffloadItem]:
    items = []
    for layer in graph.layers:
        params = ctx.layer_params_per_rank(layer.index) / dp
        items.append(OffloadItem(f"optimizer.{layer.name}", "optimizer", int(params * ADAM_BYTES_PER_PARAM),
                                 overlap_bytes=2 * params, exposed_bytes=2 * params))
        if layer.kind == "block" and act_per_block > 0:
            items.append(OffloadItem(f"activations.{layer.name}", "activations", int(act_per_block),
                                     overlap_bytes=2 * act_per_block))
    return items


def training_offload(graph: Graph, cluster, *, batch: int, seq: int, dtype: str = "bf16") -> dict:
    """Whether `graph` trains on `cluster` with ZeRO-Offload, and at what cost; a one-line `message`.

    >>> import planner
    >>> from cost_models.cluster import parse_cluster
    >>> r = training_offload(planner.capture("llama-2-7b", seq_len=64), parse_cluster("1xA100-SXM-80GB"), batch=8, seq=2048)
    >>> r["fits"], r["offloaded_bytes"] > 30e9
    (True, True)
    """
    dp = cluster.num_devices
    mbs = 1
    options = Options(tp=1, pp=1, dp=dp, batch=batch, input_len=seq, microbatch_size=mbs, recompute="full",
                      zero_stage=2, dtype=dtype)
    ctx = make_context(graph, cluster, options)
    step = train_step(ctx)
    mem = stage_memory(ctx, 0, (0, len(graph.layers)), mbs, seq, batch // (dp * mbs))
    capacity = int(ctx.capacity_bytes)
    blocks = sum(1 for layer in graph.layers if layer.kind == "block")
    act_per_block = mem["activations"] / max(blocks, 1)
    items = _items(ctx, graph, dp, act_per_block)
    fixed = mem["weights"] + mem["gradients"] + mem["reserve"]
    staging = 2 * max((i.bytes for i in items), default=0)
    hbm = int(capacity - fixed - staging)
    tiers = memory_tiers(cluster, max(hbm, 0))
    window = step["step_time_s"] * 2 / 3  # the backward pass hides overlappable traffic
    instance = OffloadInstance(tuple(items), tiers, window_s=window)
    sol = solve_offload(instance) if hbm > 0 else None
    out = {"layout": f"dp={dp} tp=1 pp=1 zero=2 recompute=full", "base_step_time_s": step["step_time_s"],
           "needed_bytes": int(sum(mem.values())), "capacity_bytes": capacity, "fits": sol is not None,
           "offloaded_bytes": 0, "step_time_s": None, "slowdown": None}
    if sol is None:
        out["message"] = (f"even with ZeRO-Offload the weights and gradients alone need "
                          f"{(mem['weights'] + mem['gradients']) / 1e9:.1f} GB per device against {capacity / 1e9:.0f} GB, "
                          f"or host memory is too small")
        return out
    by_tier = sol.bytes_by_tier(instance)
    off = sum(v for k, v in by_tier.items() if k != HBM)
    host_bw = tiers[1].bandwidth_bytes_per_s * _HOST_MEMORY_SPEEDUP if len(tiers) > 1 else 1.0
    adam = sum(i.bytes for i in items if i.kind == "optimizer" and sol.placement[i.name] != HBM) * 16 / 12 / host_bw
    total = step["step_time_s"] + sol.added_s + adam
    out.update(offloaded_bytes=off, step_time_s=total, slowdown=total / step["step_time_s"], placement_bytes=by_tier)
    out["message"] = (f"it trains only with ZeRO-Offload ({out['layout']}): {off / 1e9:.1f} GB of optimizer states and "
                      f"activations per device in host memory; predicted step {total:.2f} s instead of "
                      f"{step['step_time_s']:.2f} s in HBM ({out['slowdown']:.1f}x slower)")
    return out
