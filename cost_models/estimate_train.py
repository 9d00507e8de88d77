"""Training step estimate: 1F1B pipeline over microbatches, TP/EP/PP/DP communication,
recomputation, ZeRO, optimizer step, and the memory of the fullest rank.

Backward time per layer is 2x the forward GEMM time (input and weight gradients), 2.5x the
flash-attention time (its backward recomputes QK^T: 5 products against 2) and 1x the rest.
Selective recomputation re-runs attention in backward, full recomputation the whole forward.
Pipeline time (1F1B and GPipe alike; Narayanan et al. 2021; interleaved 1F1B and the
schedules' activation memory in `cost_models.pipeline_schedule`): (m - 1) * max stage + sum of stages.
Data-parallel gradient reduction overlaps with the last microbatch's backward (as in Megatron and
PyTorch DDP bucketing); only what sticks out of it is exposed. The optimizer step streams 16 bytes
per parameter in and out (mixed-precision Adam).
Expert parallelism over dp (Megatron-Core, torchtitan): each rank keeps E/ep experts, so expert
weights, gradients and Adam states are divided by ep x tp, and expert gradients are reduced (and
ZeRO-sharded) over the dp / ep replicas of the same experts instead of all dp ranks; the
dispatch and combine all-to-alls are in the layer times (`cost_models.layer_times`).
"""

from __future__ import annotations

from cost_models.communication import collective_time
from cost_models.estimate_context import Context
from cost_models.estimate_infer import forward_pass, hidden_size
from cost_models.memory import TrainingState, activation_bytes_per_layer, training_state_bytes
from cost_models.pipeline_schedule import in_flight, p2p_factor, pipeline_time
from ir.phases import phase_costs

_GATED = {"llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe", "qwen2_moe", "gemma", "gemma2", "olmo"}


def layer_step_times(ctx: Context, fwd) -> list[float]:
    recompute = ctx.options.recompute
    out = []
    for t in fwd.layer_times:
        backward = 2 * t.gemm_s + 2.5 * t.attention_s + t.other_s + t.comm_s
        redo = t.attention_s if recompute == "selective" else t.total_s if recompute == "full" else 0.0
        out.append(t.total_s + backward + redo)
    return out


def activation_per_layer(ctx: Context, mbs: int, seq: int) -> float:
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


def stage_params(ctx: Context, a: int, b: int) -> tuple[float, float]:
    """(dense, expert) parameters one rank holds of layers [a, b)."""
    total = sum(ctx.layer_params_per_rank(i) for i in range(a, b))
    expert = sum(ctx.layer_expert_params_per_rank(i) for i in range(a, b)) if ctx.graph.config.get("num_experts") else 0.0
    return total - expert, expert


def ranges_params(ctx: Context, ranges) -> tuple[float, float]:
    """(dense, expert) parameters one rank holds of several [a, b) layer ranges (its virtual stages)."""
    parts = [stage_params(ctx, a, b) for a, b in ranges]
    return sum(p[0] for p in parts), sum(p[1] for p in parts)


def expert_replicas(ctx: Context) -> int:
    """Data-parallel replicas of one expert shard: dp / ep with ep over dp, else dp."""
    o = ctx.options
    return o.dp // o.ep if o.ep_over_dp else o.dp


def state_bytes(ctx: Context, dense: float, expert: float) -> TrainingState:
    """Training state of one rank: dense parameters ZeRO-sharded over dp, experts over dp / ep."""
    o = ctx.options
    d = training_state_bytes(dense, o.dp, o.zero_stage)
    e = training_state_bytes(expert, expert_replicas(ctx), o.zero_stage)
    return TrainingState(d.weights + e.weights, d.gradients + e.gradients, d.optimizer + e.optimizer)


def optimizer_s(ctx: Context, dense: float, expert: float) -> float:
    """Adam step over this rank's (ZeRO-1+: its shard of the) parameters: 16 bytes read and written."""
    o = ctx.options
    params = dense / o.dp + expert / expert_replicas(ctx) if o.zero_stage >= 1 else dense + expert
    return params * 16 * 2 / (ctx.device.memory_bandwidth_bytes_per_s * ctx.eff.memory)


def stage_memory(ctx: Context, stage: int, layers: tuple[int, int], mbs: int, seq: int, microbatches: int,
                 chunks: list[tuple[int, int]] | None = None) -> dict:
    """Bytes on one rank of `stage`: its layers [a, b) (or its virtual stages' `chunks` with
    interleaving) with the schedule's activations in flight (`pipeline_schedule.in_flight`: 1F1B
    keeps pp - stage microbatches, GPipe all m); the last stage also holds the logits."""
    o = ctx.options
    ranges = list(chunks or [layers])
    blocks = sum(1 for a, b in ranges for i in range(a, b) if ctx.graph.layers[i].kind == "block")
    state = state_bytes(ctx, *ranges_params(ctx, ranges))
    flight = in_flight(o.schedule, o.pp, stage, microbatches, o.virtual_stages)
    acts = activation_per_layer(ctx, mbs, seq) * blocks * flight
    if ranges[-1][1] == len(ctx.graph.layers):  # logits in bf16 plus float32 for the loss, vocab-parallel
        acts += mbs * seq * ctx.graph.config.get("vocab_size", 0) * 6 / o.tp
    return {"weights": state.weights, "gradients": state.gradients, "optimizer": state.optimizer,
            "activations": acts, "reserve": ctx.reserve}


def dp_comm_s(ctx: Context, dense_params: float, expert_params: float = 0.0) -> float:
    """Gradient reduction (and ZeRO gathers) of one rank: dense over dp, experts over dp / ep."""
    return (_reduce_s(ctx, dense_params * 2, ctx.dp_group)
            + (_reduce_s(ctx, expert_params * 2, ctx.edp_group) if expert_params else 0.0))


def _reduce_s(ctx: Context, grad_bytes: float, group) -> float:
    o = ctx.options
    if o.zero_stage >= 3:
        return (collective_time("reduce_scatter", grad_bytes, group, ctx.eff)
                + 2 * collective_time("all_gather", grad_bytes, group, ctx.eff))
    if o.zero_stage >= 1:
        return (collective_time("reduce_scatter", grad_bytes, group, ctx.eff)
                + collective_time("all_gather", grad_bytes, group, ctx.eff))
    return collective_time("all_reduce", grad_bytes, group, ctx.eff)


def stage_p2p_s(act_bytes: float, links: list[tuple[float, float]], stage: int, comm_eff: float) -> float:
    """Pipeline transfers of one stage per microbatch: activations forward and gradients backward
    over the slower of its two neighbouring links. `links[i]` = (bytes/s, latency) of the link
    between stage i and i + 1."""
    if not links:
        return 0.0
    near = [links[i] for i in (stage - 1, stage) if 0 <= i < len(links)]
    return 2 * max(lat + act_bytes / (bw * comm_eff) for bw, lat in near)


def train_step(ctx: Context, stages=None, stage_ctxs: list[Context] | None = None,
               links: list[tuple[float, float]] | None = None, chunks: list[list[tuple[int, int]]] | None = None) -> dict:
    """One optimizer step. `stages` fixes the layer ranges, `stage_ctxs` the device of each stage
    (heterogeneous pipelines) and `links` the link between consecutive stages (from placement);
    by default layers are split by time over identical stages joined by the context's link.
    With interleaving (options.schedule "interleaved"), `chunks[s]` lists the layer ranges of
    stage s's virtual stages; the schedule's step time, sends and memory are in
    `cost_models.pipeline_schedule`."""
    o = ctx.options
    seq, mbs = o.input_len, o.microbatch_size or 1
    microbatches = o.batch // (o.dp * mbs)
    per_ctx: dict[int, tuple] = {}

    def times_of(c: Context):
        if id(c) not in per_ctx:
            fwd = forward_pass(c, "prefill", mbs, seq)
            per_ctx[id(c)] = (fwd, layer_step_times(c, fwd))
        return per_ctx[id(c)]

    fwd, _ = times_of(ctx)
    stages = tuple(stages or fwd.stages)
    stage_ctxs = stage_ctxs or [ctx] * len(stages)
    act_bytes = mbs * seq * hidden_size(ctx) * 2
    if links is None:
        links = [(ctx.pp_link_bandwidth, ctx.pp_link_latency_s)] * (len(stages) - 1)
    ranges = [list(chunks[s]) if chunks else [r] for s, r in enumerate(stages)]
    sends = p2p_factor(o.schedule, o.virtual_stages)
    stage_times = [sum(sum(times_of(c)[1][a:b]) for a, b in ranges[s])
                   + sends * stage_p2p_s(act_bytes, links, s, c.eff.comm) for s, c in enumerate(stage_ctxs)]
    slowest = max(stage_times)
    pipeline = pipeline_time(stage_times, microbatches, o.virtual_stages if sends > 1 else 1)
    busy = microbatches * slowest
    worst = stage_times.index(slowest)
    wctx = stage_ctxs[worst]
    dense, expert = ranges_params(wctx, ranges[worst])
    dp_comm = dp_comm_s(wctx, dense, expert)
    exposed_dp = max(dp_comm - slowest * 2 / 3, 0.0)  # overlapped with the last backward
    optimizer = optimizer_s(wctx, dense, expert)
    step = pipeline + exposed_dp + optimizer
    wfwd = times_of(wctx)[0]
    share = wfwd.time_s or 1.0
    comm_share, compute_share = wfwd.comm_s / share, wfwd.compute_s / share
    memories = [stage_memory(c, s, r, mbs, seq, microbatches, ranges[s] if chunks else None)
                for s, (c, r) in enumerate(zip(stage_ctxs, stages))]
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
