"""Inference estimates: prefill latency, decode step time, and their memory footprint.

Pipeline stages run one after another for one batch (no pipelining within a request), so the
latency is the sum of all layer times plus one activation send per stage boundary. `batch` is the
global batch, split evenly over dp replicas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cost_models.estimate_context import Context
from cost_models.layer_times import LayerTime, layer_times
from cost_models.memory import inference_margin
from cost_models.stage_partition import split_layers
from ir.kv_cache import layer_bytes_per_sequence
from ir.phases import phase_shape


@dataclass(frozen=True)
class PassResult:
    time_s: float
    compute_s: float  # compute-bound op time
    memory_s: float  # memory-bound op time (incl. kernel overheads and eager call set-up)
    comm_s: float
    flops: float  # model FLOPs of the pass on the whole replica
    stages: tuple[tuple[int, int], ...]
    layer_times: tuple[LayerTime, ...]


def replica_batch(ctx: Context) -> int:
    return max(math.ceil(ctx.options.batch / ctx.options.dp), 1)


def hidden_size(ctx: Context) -> int:
    return int(ctx.graph.config.get("hidden_size") or ctx.graph.ops[-1].outputs[0].shape[-1])


def forward_pass(ctx: Context, phase: str, batch: int, seq_len: int, context_len: int | None = None,
                 training: bool = False, engine: bool = True) -> PassResult:
    """One forward pass (prefill of `batch` prompts, or one decode step) through all stages;
    `training`: also price each layer's backward (`LayerTime.backward_s`) and run the LM head on
    every token (inference computes logits for one token per sequence); `engine`: an inference engine's
    iteration, at its sustained clocks (`layer_times`), False for the burst clocks."""
    shape = phase_shape(ctx.graph, phase, batch, seq_len, context_len)
    o = ctx.options
    times = layer_times(ctx.graph, shape, ctx.device, ctx.eff, ctx.cfg, ctx.kv_bytes, ctx.tp_group, ctx.ep_group,
                        ep_tokens=o.ep if o.ep_over_dp else 1, backward=training,
                        head_tokens=None if training else batch, engine=engine and not training)
    stages = tuple(split_layers([t.total_s for t in times], ctx.options.pp))
    act_bytes = shape.tokens * hidden_size(ctx) * 2
    p2p = (len(stages) - 1) * (ctx.pp_link_latency_s + act_bytes / (ctx.pp_link_bandwidth * ctx.eff.comm))
    compute = sum(t.compute_bound_s for t in times)
    memory = sum(t.compute_s for t in times) - compute
    comm = sum(t.comm_s for t in times) + p2p
    if ctx.cfg.execution == "eager":  # each stage is one eager forward call with its fixed set-up cost
        memory += len(stages) * ctx.eff.call_overhead(phase == "decode")
    elif not training:  # an engine iteration: the host schedules, samples and launches it
        memory += ctx.eff.host_overhead(o.runtime)
    from ir.phases import phase_costs

    flops = phase_costs(ctx.graph, phase, batch=batch, seq_len=seq_len, context_len=context_len).total("flops")
    return PassResult(compute + memory + comm, compute, memory, comm, flops, stages, tuple(times))


ENGINE_MAX_SEQS = 256  # sequences an engine samples per iteration at most (vLLM's default max_num_seqs)
ENGINE_MAX_TOKENS = 8192  # tokens per iteration an engine profiles its activations at (max_num_batched_tokens)


def inference_margin_items(ctx: Context, batch: int, prefill_tokens: int) -> dict[str, float]:
    """The named margin items of `inference_memory` (`cost_models.memory.inference_margin`). Engines size
    them once, at start-up, for their limits (vLLM's profiling run: `ENGINE_MAX_SEQS` sampled sequences,
    `ENGINE_MAX_TOKENS` tokens), whatever the batch; eager Hugging Face keeps the logits of every prompt token."""
    vocab = float(ctx.graph.config.get("vocab_size") or 0)
    if ctx.cfg.execution == "eager":
        return inference_margin(ctx.device.kind, ctx.communicators, _activations(ctx, prefill_tokens),
                                prefill_tokens * vocab * 4)
    return inference_margin(ctx.device.kind, ctx.communicators, _activations(ctx, ENGINE_MAX_TOKENS),
                            ENGINE_MAX_SEQS * vocab * 4)


def _activations(ctx: Context, prefill_tokens: int) -> float:
    hidden = hidden_size(ctx)
    ffn = int(ctx.graph.config.get("intermediate_size") or 4 * hidden)
    # live activations of the widest op of a prefill chunk (the MLP's up/gate outputs), sharded by tp
    return prefill_tokens * (hidden * 4 + 3 * ffn / ctx.options.tp) * 2


def inference_memory(ctx: Context, batch: int, tokens_per_sequence: int, prefill_tokens: int) -> dict:
    """Bytes on the fullest rank: weights of its stage, KV cache, activations, and the margin
    ("reserve": the sum of `inference_margin_items`)."""
    weights_by_layer = [ctx.layer_weight_bytes(i) for i in range(len(ctx.graph.layers))]
    stages = split_layers([1.0] * len(weights_by_layer), ctx.options.pp)  # by layer count for memory
    weights = max(sum(weights_by_layer[a:b]) for a, b in stages)
    kv = kv_per_sequence(ctx, tokens_per_sequence) * batch
    margin = inference_margin_items(ctx, batch, prefill_tokens)
    return {"weights": weights, "kv_cache": kv, "activations": _activations(ctx, prefill_tokens),
            "reserve": sum(margin.values())}


def kv_per_sequence(ctx: Context, tokens: int) -> float:
    """Cache bytes one sequence of `tokens` tokens holds on the fullest rank: blocks split evenly over
    the pp stages (as vLLM splits them), each layer's cache exact for its kind (`ir.kv_cache`: at
    most the window for sliding-window and chunked layers, a constant state for recurrent ones)."""
    g = ctx.graph
    blocks = [layer.index for layer in g.layers if layer.kind == "block"]
    others = sum(layer_bytes_per_sequence(layer, tokens, ctx.kv_bytes, ctx.options.tp)
                 for layer in g.layers if layer.kind != "block")
    per_block = [layer_bytes_per_sequence(g.layers[i], tokens, ctx.kv_bytes, ctx.options.tp) for i in blocks]
    if not per_block:
        return others
    return others + max(sum(per_block[a:b]) for a, b in split_layers([1.0] * len(per_block), ctx.options.pp))


def kv_bytes_per_token_at(ctx: Context, tokens: int) -> float:
    """Mean cache bytes per token of a `tokens`-token sequence on the fullest rank: the per-token
    cost a token-counted KV pool pays (exactly the growth per token unless windows or states bound it)."""
    if all(not c.window and not c.state_elements for layer in ctx.graph.layers for c in layer.caches):
        return kv_per_sequence(ctx, 1)
    return kv_per_sequence(ctx, tokens) / max(tokens, 1)


def max_batch(ctx: Context, tokens_per_sequence: int, prefill_tokens: int) -> int:
    """Largest global batch whose KV cache fits next to weights, activations and the reserve."""
    base = inference_memory(ctx, 0, tokens_per_sequence, prefill_tokens)
    free = ctx.capacity_bytes - base["weights"] - base["activations"] - base["reserve"]
    per_sequence = kv_per_sequence(ctx, tokens_per_sequence)
    if free <= 0 or per_sequence <= 0:
        return 0
    return int(free // per_sequence) * ctx.options.dp
