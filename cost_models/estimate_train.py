"""Training step estimate: 1F1B pipeline over microbatches, TP/EP/PP/DP communication,
recomputation, ZeRO, optimizer step, and the memory of the fullest rank.

Backward time per layer is 2x the forward GEMM time (input and weight gradients), 2.5x the
flash-attention time (its backward recomputes QK^T: 5 products against 2) and 1x the rest.
Selective recomputation re-runs attention in backward, full recomputation the whole forward.
Pipeline time (1F1B and GPipe alike; Narayanan et al. 2021): (m - 1) * max stage + sum of stages.
Data-parallel gradient reduction overlaps with the last microbatch's backward (as in Megatron and
PyTorch DDP bucketing); only what sticks out of it is exposed. The optimizer step streams 16 bytes
per parameter in and out (mixed-precision Adam).
"""

from __future__ import annotations

from cost_models.communication import collective_time
from cost_models.estimate_context import Context
from cost_models.estimate_infer import forward_pass, hidden_size
from cost_models.memory import activation_bytes_per_layer, training_state_bytes
from ir.phases import phase_costs

_GATED = {"llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe", "qwen2_moe", "gemma", "gemma2", "olmo"}


def _layer_step_times(ctx: Context, fwd) -> list[float]:
    recompute = ctx.options.recompute
    out = []
    for t in fwd.layer_times:
        backward = 2 * t.gemm_s + 2.5 * t.attention_s + t.other_s + t.comm_s
        redo = t.attention_s if recompute == "selective" else t.total_s if recompute == "full" else 0.0
        out.append(t.total_s + backward + redo)
    return out


def _activation_per_layer(ctx: Context, mbs: int, seq: int) -> float:
    cfg, o = ctx.graph.config, ctx.options
    if not cfg.get("hidden_size") or not cfg.get("num_heads"):
        saved = phase_costs(ctx.graph, "train", batch=mbs, seq_len=seq).layers
        blocks = [c.saved_activation_bytes for c, layer in zip(saved, ctx.graph.layers) if layer.kind == "block"]
        return (max(blocks) if blocks else 0.0) / o.tp
    moe = cfg.get("num_experts")
    ffn = (cfg.get("moe_intermediate_size") or cfg.get("intermediate_size") or 4 * cfg["hidden_size"])
    if moe:
        ffn *= cfg.get("experts_per_token", 2)
    return activation_bytes_per_layer(
        seq, mbs, cfg["hidden_size"], cfg["num_heads"], ffn=ffn, gated=cfg.get("model_type") in _GATED,
        kv_heads=cfg.get("num_kv_heads"), t=o.tp, sequence_parallel=o.sequence_parallel,
        recompute=o.recompute, flash=True, dropout=cfg.get("dropout", 0.0) > 0)


def stage_memory(ctx: Context, stage: int, layers: tuple[int, int], mbs: int, seq: int, microbatches: int) -> dict:
    """Bytes on one rank of `stage` (1F1B keeps pp - stage microbatches in flight; the last stage
    also holds the logits)."""
    o = ctx.options
    a, b = layers
    blocks = sum(1 for i in range(a, b) if ctx.graph.layers[i].kind == "block")
    state = training_state_bytes(sum(ctx.layer_params_per_rank(i) for i in range(a, b)), o.dp, o.zero_stage)
    in_flight = min(o.pp - stage, microbatches) if o.schedule == "1f1b" else microbatches
    acts = _activation_per_layer(ctx, mbs, seq) * blocks * in_flight
    if b == len(ctx.graph.layers):  # logits in bf16 plus float32 for the loss, vocab-parallel
        acts += mbs * seq * ctx.graph.config.get("vocab_size", 0) * 6 / o.tp
    return {"weights": state.weights, "gradients": state.gradients, "optimizer": state.optimizer,
            "activations": acts, "reserve": ctx.reserve}


def _dp_comm(ctx: Context, stage_params: float) -> float:
    o, grad_bytes = ctx.options, stage_params * 2
    if o.zero_stage >= 3:
        return (collective_time("reduce_scatter", grad_bytes, ctx.dp_group, ctx.eff)
                + 2 * collective_time("all_gather", grad_bytes, ctx.dp_group, ctx.eff))
    if o.zero_stage >= 1:
        return (collective_time("reduce_scatter", grad_bytes, ctx.dp_group, ctx.eff)
                + collective_time("all_gather", grad_bytes, ctx.dp_group, ctx.eff))
    return collective_time("all_reduce", grad_bytes, ctx.dp_group, ctx.eff)


def stage_p2p_s(act_bytes: float, links: list[tuple[float, float]], stage: int, comm_eff: float) -> float:
    """Pipeline transfers of one stage per microbatch: activations forward and gradients backward
    over the slower of its two neighbouring links. `links[i]` = (bytes/s, latency) of the link
    between stage i and i + 1."""
    if not links:
        return 0.0
    near = [links[i] for i in (stage - 1, stage) if 0 <= i < len(links)]
    return 2 * max(lat + act_bytes / (bw * comm_eff) for bw, lat in near)


def train_step(ctx: Context, stages=None, stage_ctxs: list[Context] | None = None,
               links: list[tuple[float, float]] | None = None) -> dict:
    """One optimizer step. `stages` fixes the layer ranges, `stage_ctxs` the device of each stage
    (heterogeneous pipelines) and `links` the link between consecutive stages (from placement);
    by default layers are split by time over identical stages joined by the context's link."""
    o = ctx.options
    seq, mbs = o.input_len, o.microbatch_size or 1
    microbatches = o.batch // (o.dp * mbs)
    per_ctx: dict[int, tuple] = {}

    def times_of(c: Context):
        if id(c) not in per_ctx:
            fwd = forward_pass(c, "prefill", mbs, seq)
            per_ctx[id(c)] = (fwd, _layer_step_times(c, fwd))
        return per_ctx[id(c)]

    fwd, _ = times_of(ctx)
    stages = tuple(stages or fwd.stages)
    stage_ctxs = stage_ctxs or [ctx] * len(stages)
    act_bytes = mbs * seq * hidden_size(ctx) * 2
    if links is None:
        links = [(ctx.pp_link_bandwidth, ctx.pp_link_latency_s)] * (len(stages) - 1)
    stage_times = [sum(times_of(c)[1][a:b]) + stage_p2p_s(act_bytes, links, s, c.eff.comm)
                   for s, (c, (a, b)) in enumerate(zip(stage_ctxs, stages))]
    slowest = max(stage_times)
    pipeline = (microbatches - 1) * slowest + sum(stage_times)
    busy = microbatches * slowest
    worst = stage_times.index(slowest)
    wctx, (a, b) = stage_ctxs[worst], stages[worst]
    stage_params = sum(wctx.layer_params_per_rank(i) for i in range(a, b))
    dp_comm = _dp_comm(wctx, stage_params)
    exposed_dp = max(dp_comm - slowest * 2 / 3, 0.0)  # overlapped with the last backward
    opt_params = stage_params / (o.dp if o.zero_stage >= 1 else 1)
    optimizer = opt_params * 16 * 2 / (wctx.device.memory_bandwidth_bytes_per_s * wctx.eff.memory)
    step = pipeline + exposed_dp + optimizer
    wfwd = times_of(wctx)[0]
    share = wfwd.time_s or 1.0
    comm_share, compute_share = wfwd.comm_s / share, wfwd.compute_s / share
    memories = [stage_memory(c, s, r, mbs, seq, microbatches) for s, (c, r) in enumerate(zip(stage_ctxs, stages))]
    over = [sum(m.values()) / c.capacity_bytes for m, c in zip(memories, stage_ctxs)]
    fullest = over.index(max(over))
    flops = phase_costs(ctx.graph, "train", batch=o.batch, seq_len=seq).total("flops")
    return {
        "step_time_s": step, "flops": flops, "microbatches": microbatches, "stages": stages,
        "memory": memories[fullest], "stage_memory": memories, "fullest_stage": fullest,
        "fits_all": all(x <= 1.0 for x in over), "stage_fill": over,
        "breakdown": {
            "compute": busy * compute_share, "memory": busy * (1 - compute_share - comm_share),
            "communication": busy * comm_share + exposed_dp, "bubble": pipeline - busy, "other": optimizer,
        },
        "compute_fraction": (busy * compute_share) / step if step else 0.0,
        "dp_comm_s": dp_comm, "pipeline_s": pipeline, "stage_times_s": stage_times,
        "bubble_fraction": (pipeline - busy) / pipeline if pipeline else 0.0,
        "per_layer_s": {id(c): t for c, t in ((c, times_of(c)[1]) for c in stage_ctxs)},
    }
