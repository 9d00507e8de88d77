"""Training step estimate: 1F1B pipeline over microbatches, TP/EP/PP/DP communication,
recomputation, ZeRO, optimizer step, and the memory of the fullest rank.

Forward and backward per layer come from the kernels fused engines launch (`cost_models.kernels`,
`cost_models.kernel_time`: dgrad and wgrad GEMMs, element-wise kernels at twice their forward
traffic, flash or unfused attention), at the compute rate training sustains
(`Efficiency.sustained_compute`); eager (CPU) runs take 2x the GEMM time, 2.5x attention, 1x the rest.
Selective recomputation re-runs attention in backward, full recomputation the whole forward (and its
tensor-parallel communication). The loss over the vocabulary is in the LM head's kernels.
Pipeline time (1F1B and GPipe alike; Narayanan et al. 2021; interleaved 1F1B and the
schedules' activation memory in `cost_models.pipeline_schedule`): (m - 1) * max stage + sum of stages;
stage sends move 1/tp of the activations per rank (scatter-gather).
Data-parallel gradient reduction runs in buckets overlapped with the last microbatch's backward (as in
Megatron and PyTorch DDP); only what sticks out of it, and at least the last bucket, is exposed
(`exposed_gradient_reduction_s`). The optimizer step streams 16 bytes per parameter in and out
(mixed-precision Adam); fp8 runs also cast the weights once per step (`fp8_weight_cast_s`).
No step reaches the best published MFU on its device and dtype (`mfu_cap`, `data/mfu_caps.yaml`):
above 90% of it predictions are compressed toward it (`bounded_mfu`, monotone so layouts keep their
order); when that happens the result says so (`mfu_capped`).
Expert parallelism over dp (Megatron-Core, torchtitan): each rank keeps E/ep experts, so expert
weights, gradients and Adam states are divided by ep x tp, and expert gradients are reduced (and
ZeRO-sharded) over the dp / ep replicas of the same experts instead of all dp ranks; the
dispatch and combine all-to-alls are in the layer times (`cost_models.layer_times`).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import yaml

from cost_models.communication import collective_time
from cost_models.estimate_context import Context
from cost_models.estimate_infer import forward_pass, hidden_size
from cost_models.memory import TrainingState, activation_bytes_per_layer, training_margin, training_state_bytes
from cost_models.pipeline_schedule import (
    chunk_cuts,
    exposed_sends_s,
    in_flight,
    p2p_factor,
    pipeline_time,
    rank_chunks,
)
from ir.phases import phase_costs

MFU_CAPS_FILE = Path(__file__).parent / "data" / "mfu_caps.yaml"
_GATED = {"llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe", "qwen2_moe", "gemma", "gemma2", "olmo"}


def layer_step_times(ctx: Context, fwd) -> list[float]:
    """Forward + backward (+ recomputation) of each layer for one microbatch. Fused engines price
    the backward kernel by kernel (`LayerTime.backward_s`, plus the same TP communication as the
    forward); eager runs take 2x the GEMM time, 2.5x attention and 1x the rest."""
    recompute = ctx.options.recompute
    out = []
    for t, layer in zip(fwd.layer_times, ctx.graph.layers):
        if t.backward_s:
            backward = t.backward_s + t.comm_s
        else:
            backward = 2 * t.gemm_s + 2.5 * t.attention_s + t.other_s + t.comm_s
        redo = 0.0
        if layer.kind == "block":  # checkpointing covers the transformer layers, not embedding and head
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


GRADIENT_BUCKET_BYTES = 25 * 2**20  # torch DDP bucket_cap_mb; Megatron's buckets are of the same order


def exposed_gradient_reduction_s(ctx: Context, reduce_s: float, backward_s: float, params: float) -> float:
    """The part of the data-parallel gradient reduction the step waits for. Gradients are reduced in
    buckets as the last microbatch's backward produces them (DDP / Megatron's overlapped reduce), so
    they hide behind that backward (`backward_s`), except the last bucket, which is only ready when the
    backward ends.

    >>> from types import SimpleNamespace as N
    >>> exposed_gradient_reduction_s(N(options=N(dp=1)), 0.0, 1.0, 1e9)
    0.0
    """
    if ctx.options.dp <= 1 or reduce_s <= 0:
        return 0.0
    grad_bytes = params * 2.0
    last_bucket = reduce_s * min(GRADIENT_BUCKET_BYTES / max(grad_bytes, 1.0), 1.0)
    return max(reduce_s - backward_s, last_bucket)


def fp8_weight_cast_s(ctx: Context, dense: float, expert: float) -> float:
    """fp8 training (Transformer Engine) casts each weight to fp8 and a transposed fp8 copy once per step
    (reused by every microbatch): reads 2 bytes, writes 1 + 1 per parameter."""
    if ctx.options.dtype != "fp8":
        return 0.0
    return (dense + expert) * 4.0 / (ctx.device.memory_bandwidth_bytes_per_s * ctx.eff.memory)


def stage_memory(ctx: Context, stage: int, layers: tuple[int, int], mbs: int, seq: int, microbatches: int,
                 chunks: list[tuple[int, int]] | None = None) -> dict:
    """Bytes on one rank of `stage`: its layers [a, b) (or its virtual stages' `chunks` with
    interleaving) with the schedule's activations in flight (`pipeline_schedule.in_flight`: 1F1B
    keeps pp - stage microbatches, GPipe all m); the last stage also holds the logits. "reserve" is
    the sum of the rank's named margin items (`stage_memory_items`)."""
    return stage_memory_items(ctx, stage, layers, mbs, seq, microbatches, chunks)[0]


def stage_memory_items(ctx: Context, stage: int, layers: tuple[int, int], mbs: int, seq: int, microbatches: int,
                       chunks: list[tuple[int, int]] | None = None) -> tuple[dict, dict]:
    """(`stage_memory`'s breakdown, the rank's named margin items: `training_margin_items`)."""
    o = ctx.options
    ranges = list(chunks or [layers])
    blocks = sum(1 for a, b in ranges for i in range(a, b) if ctx.graph.layers[i].kind == "block")
    state = state_bytes(ctx, *ranges_params(ctx, ranges))
    flight = in_flight(o.schedule, o.pp, stage, microbatches, o.virtual_stages)
    acts = activation_per_layer(ctx, mbs, seq) * blocks * flight
    if ranges[-1][1] == len(ctx.graph.layers):  # logits in bf16 plus float32 for the loss, vocab-parallel
        acts += mbs * seq * ctx.graph.config.get("vocab_size", 0) * 6 / o.tp
    margin = ctx.margin_items()
    return ({"weights": state.weights, "gradients": state.gradients, "optimizer": state.optimizer,
             "activations": acts, "reserve": sum(margin.values())}, margin)


def training_margin_items(ctx: Context) -> dict[str, float]:
    """Named margin items of a training rank of this layout (`cost_models.memory.training_margin`),
    sized for its fullest stage: the model's parameters split over tp x pp, the activations the first
    pipeline rank keeps (its share of the blocks times the microbatches in flight, plus the logits)."""
    o = ctx.options
    blocks = [i for i, layer in enumerate(ctx.graph.layers) if layer.kind == "block"]
    per_stage = -(-len(blocks) // max(o.pp, 1))
    params = sum(ctx.layer_params_per_rank(i) for i in range(len(ctx.graph.layers))) / max(o.pp, 1)
    largest = max((ctx.layer_params_per_rank(i) for i in blocks), default=0.0)
    mbs, seq = o.microbatch_size or 1, o.input_len or ctx.graph.seq_len
    microbatches = max(o.batch // max((o.dp or 1) * mbs, 1), 1)
    per_layer = activation_per_layer(ctx, mbs, seq) if blocks else 0.0
    flight = in_flight(o.schedule, o.pp, 0, microbatches, o.virtual_stages)
    acts = per_layer * per_stage * flight + mbs * seq * ctx.graph.config.get("vocab_size", 0) * 6 / o.tp
    return training_margin(ctx.device.kind, ctx.communicators, params, o.dp or 1, o.zero_stage,
                           o.dtype in ("bf16", "fp16", "fp8"), largest, per_layer, acts)


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


@functools.cache
def _mfu_caps() -> dict:
    return yaml.safe_load(MFU_CAPS_FILE.read_text())


def mfu_cap(device, dtype: str) -> tuple[float, str]:
    """(the best published training MFU on this device family and dtype, its source).

    >>> from cost_models.hardware import get_device
    >>> mfu_cap(get_device("a100"), "bf16")[0], mfu_cap(get_device("l4"), "bf16")[0]
    (0.72, 0.72)
    """
    data = _mfu_caps()
    family = next((f for f in data["caps"] if device.name.upper().startswith(f)), None)
    entry = data["caps"].get(family, {}).get(dtype) if family else None
    entry = entry or data["default"]
    return float(entry["value"]), str(entry["source"])


SOFT_CAP_FROM = 0.9  # share of the cap above which predicted MFU is compressed toward it


def bounded_mfu(mfu: float, cap: float) -> float:
    """`mfu` held below `cap`: unchanged up to 90% of it, then compressed smoothly and monotonically
    toward it (tanh), so that layouts the physics ranks keep their order instead of tying at the cap.

    >>> bounded_mfu(0.3, 0.5), round(bounded_mfu(0.6, 0.5), 4), bounded_mfu(0.8, 0.5) < 0.5
    (0.3, 0.4998, True)
    """
    knee = SOFT_CAP_FROM * cap
    if mfu <= knee:
        return mfu
    room = cap - knee
    return knee + room * math.tanh((mfu - knee) / room)


def capped_step_s(ctx: Context, model_flops: float, step_s: float, stage_ctxs: list[Context] | None = None) -> float:
    """The step time with its MFU bounded by the best published on the device and dtype (`bounded_mfu`,
    `mfu_cap`); CPUs are calibrated on the machine itself and are not bounded. With `stage_ctxs` (one per
    pipeline stage, each on its own devices: heterogeneous pipelines) the peak is the stages' pooled peak
    and the cap the peak-weighted mean of their devices' caps: the best the whole set of GPUs reaches."""
    stage_ctxs = stage_ctxs or [ctx]
    if any(c.device.kind != "gpu" for c in stage_ctxs) or model_flops <= 0 or step_s <= 0:
        return step_s
    dtype, pp = ctx.options.dtype, len(stage_ctxs)
    peaks = [c.device.peak_flops_for(dtype) * c.world / (c.options.pp if pp > 1 else 1) for c in stage_ctxs]
    rate = sum(peaks)
    cap = sum(mfu_cap(c.device, dtype)[0] * peak for c, peak in zip(stage_ctxs, peaks)) / rate
    mfu = model_flops / step_s / rate
    return model_flops / (bounded_mfu(mfu, cap) * rate)


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
            fwd = forward_pass(c, "prefill", mbs, seq, training=True)
            per_ctx[id(c)] = (fwd, layer_step_times(c, fwd))
        return per_ctx[id(c)]

    fwd, _ = times_of(ctx)
    if stages is None and chunks is None and o.schedule == "interleaved" and o.virtual_stages > 1:
        blocks = [i for i, layer in enumerate(ctx.graph.layers) if layer.kind == "block"]
        chunks = rank_chunks(chunk_cuts(blocks, len(ctx.graph.layers), o.pp * o.virtual_stages), o.pp)
        stages = tuple(c[0] for c in chunks)  # each rank's virtual stages, Megatron-LM's round-robin
    stages = tuple(stages or fwd.stages)
    stage_ctxs = stage_ctxs or [ctx] * len(stages)
    # activations sent between stages; with tp > 1 each tp rank sends its 1/tp share over its own link
    # (Megatron's scatter-gather of pipeline sends, Narayanan et al. 2021 Sec. 4.1; sequence parallelism
    # keeps them split anyway) and the next stage all-gathers them over NVLink
    act_bytes = mbs * seq * hidden_size(ctx) * 2  # a stage's tp ranks send 1/tp each
    if links is None:
        links = [(ctx.pp_link_bandwidth, ctx.pp_link_latency_s)] * (len(stages) - 1)
    ranges = [list(chunks[s]) if chunks else [r] for s, r in enumerate(stages)]
    sends = p2p_factor(o.schedule, o.virtual_stages)
    work = [sum(sum(times_of(c)[1][a:b]) for a, b in ranges[s]) for s, c in enumerate(stage_ctxs)]
    stage_times = [w + exposed_sends_s(w, stage_p2p_s(act_bytes / c.options.tp, links, s, c.eff.comm), sends,
                                       o.p2p_overlap) for s, (w, c) in enumerate(zip(work, stage_ctxs))]
    slowest = max(stage_times)
    pipeline = pipeline_time(stage_times, microbatches, o.virtual_stages if sends > 1 else 1)
    busy = microbatches * slowest
    worst = stage_times.index(slowest)
    wctx = stage_ctxs[worst]
    dense, expert = ranges_params(wctx, ranges[worst])
    dp_comm = dp_comm_s(wctx, dense, expert)
    exposed_dp = exposed_gradient_reduction_s(wctx, dp_comm, slowest * 2 / 3, dense + expert)
    optimizer = optimizer_s(wctx, dense, expert) + fp8_weight_cast_s(wctx, dense, expert)
    step = pipeline + exposed_dp + optimizer
    flops = phase_costs(ctx.graph, "train", batch=o.batch, seq_len=seq).total("flops")
    uncapped = step
    step = capped_step_s(ctx, flops, step, stage_ctxs)  # never above the best published MFU (data/mfu_caps.yaml)
    wfwd = times_of(wctx)[0]
    share = wfwd.time_s or 1.0
    comm_share, compute_share = wfwd.comm_s / share, wfwd.compute_s / share
    items = [stage_memory_items(c, s, r, mbs, seq, microbatches, ranges[s] if chunks else None)
             for s, (c, r) in enumerate(zip(stage_ctxs, stages))]
    memories = [m for m, _ in items]
    over = [sum(m.values()) / c.capacity_bytes for m, c in zip(memories, stage_ctxs)]
    fullest = over.index(max(over))
    margin = items[fullest][1]
    return {
        "step_time_s": step, "flops": flops, "microbatches": microbatches, "stages": stages,
        "memory": memories[fullest], "stage_memory": memories, "fullest_stage": fullest, "memory_margin": margin,
        "fits_all": all(x <= 1.0 for x in over), "stage_fill": over,
        "breakdown": {
            "compute": busy * compute_share, "memory": busy * (1 - compute_share - comm_share),
            "communication": busy * comm_share + exposed_dp, "bubble": pipeline - busy,
            "other": optimizer + step - uncapped,
        },
        "mfu_capped": step > uncapped, "uncapped_step_time_s": uncapped,
        "compute_fraction": (busy * compute_share) / step if step else 0.0,
        "dp_comm_s": dp_comm, "pipeline_s": pipeline, "stage_times_s": stage_times,
        "bubble_fraction": (pipeline - busy) / pipeline if pipeline else 0.0,
        "per_layer_s": {id(c): t for c, t in ((c, times_of(c)[1]) for c in stage_ctxs)},
    }
