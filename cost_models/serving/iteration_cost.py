"""Time of one engine iteration on one serving instance, with a mixed batch of decodes and prefill
tokens, in O(1) per iteration from tables precomputed once per (model, device, tp, pp).

An iteration runs `tokens` new tokens through the layers. Its time is
  t = E(T) + sum_blocks B(T_block) + H(S) + attention + (pp - 1) x p2p(T),
- B(T): one block's GEMMs, norms and TP all-reduces (and EP all-to-alls) at T tokens, from
  `cost_models.layer_times` (roofline with efficiency, `cost_models.compute.op_time`); tabulated on a
  geometric grid of T and linearly interpolated onto every integer T <= T_MAX (numpy, once). For MoE
  blocks B includes the expert weights touched by T tokens (`ir.phases.expected_experts_touched`),
  so a chunk re-reads every expert its tokens route to: the mechanism layered prefill removes.
- E(T): the embedding at T tokens; H(S): the LM head at S sampled tokens (engines compute logits only
  for the last token of each sequence: vLLM's `logits_processor` prunes them).
- attention, summed over all attention layers on one rank: decode reads the K/V of every running
  sequence's context (memory-bound; a sliding-window or chunked layer at most its window of each),
  prefill chunks do q*c + q(q+1)/2 causal query-key pairs (a sliding-window or chunked layer at most its
  window per query: `windowed_pairs`, weighted by its share of the attention layers: `attention_pairs`):
    time = max(pairs x flops_per_pair / (peak x e_attn), kv_tokens_read x kv_bytes_per_token / (bw x e_mem)),
  decode and prefill parts as separate kernels, plus one kernel overhead per attention layer.
- every iteration also pays the engine's host time (scheduling, sampling, launch: `Efficiency.host_overhead`
  of the run's `Options.runtime`); `request_overhead_s` is the front end's time per request, which belongs
  on each request's first token.
- pp > 1: stages run one after another for an iteration (no micro-batch interleaving across
  iterations; an assumption that under-rates pp for throughput), plus one activation send per
  stage boundary. Layered prefill runs one layer group's blocks at T + P tokens and the others at T.
Block times use the mean block (all blocks share one signature in the presets; mixed stacks are averaged).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cost_models.estimate_context import Context
from cost_models.estimate_infer import hidden_size, inference_memory, kv_bytes_per_token_at
from cost_models.layer_times import layer_times
from ir.kv_cache import attention_layers_by_window, kv_bytes_per_token_by_window
from ir.phases import expected_experts_touched, phase_shape

T_MAX = 1 << 15  # tokens per iteration tabulated exactly; beyond, linear extrapolation
_GRID = sorted({1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536,
                2048, 3072, 4096, 6144, 8192, 12288, 16384, 24576, 32768})


@dataclass(frozen=True)
class MoeInfo:
    """Expert weights of the model on one rank: MoE layers, experts, top-k, bytes of one expert."""

    moe_layers: int
    num_experts: int
    top_k: int
    expert_bytes: float  # one expert's weights, one layer, on one rank

    def bytes_read(self, tokens: float, layers: float | None = None) -> float:
        """Expert bytes read by `tokens` tokens through `layers` MoE layers (default: all).

        >>> MoeInfo(2, 8, 2, 100.0).bytes_read(1)
        400.0
        """
        if self.moe_layers == 0 or tokens <= 0:
            return 0.0
        n = self.moe_layers if layers is None else layers
        return n * self.expert_bytes * expected_experts_touched(self.num_experts, self.top_k, int(tokens))


class IterationCost:
    """Per-iteration time tables of one instance (see the module docstring).

    >>> import planner
    >>> from cost_models.cluster import parse_cluster
    >>> from cost_models.estimate_context import make_context
    >>> from cost_models.parallel_config import Options
    >>> g = planner.capture("tiny-llama", seq_len=64)
    >>> c = IterationCost(make_context(g, parse_cluster("1xH100-SXM"), Options(input_len=64, dp=1)))
    >>> c.time(decodes=4, decode_kv=256) > 0
    True
    """

    def __init__(self, ctx: Context, max_tokens: int = 8192):
        self.ctx = ctx
        self.num_blocks = sum(1 for layer in ctx.graph.layers if layer.kind == "block")
        self.gpus = ctx.options.tp * ctx.options.pp
        self._tables(ctx)
        self._attention_coefficients(ctx)
        self.moe = _moe_info(ctx)
        self.kv_bytes_per_token = kv_bytes_per_token_at(ctx, typical_sequence_tokens(ctx))
        self.kv_capacity_tokens = kv_capacity_tokens(ctx, max_tokens)
        self.tdp_w = ctx.device.tdp_w or 0.0
        self.idle_w = ctx.device.idle_w if ctx.device.idle_w is not None else 0.15 * self.tdp_w

    def _tables(self, ctx: Context) -> None:
        g, o = ctx.graph, ctx.options
        rows = {"block": [], "embedding": [], "head": [], "bound": []}
        hidden = hidden_size(ctx)
        for t in _GRID:
            times = layer_times(g, phase_shape(g, "prefill", 1, t), ctx.device, ctx.eff, ctx.cfg, ctx.kv_bytes,
                                ctx.tp_group, ctx.ep_group, ep_tokens=o.ep if o.ep_over_dp else 1, engine=True)
            linear = [lt.gemm_s + lt.other_s + lt.comm_s for lt in times]
            kinds = [layer.kind for layer in g.layers]
            p2p = (o.pp - 1) * (ctx.pp_link_latency_s + t * hidden * 2 / (ctx.pp_link_bandwidth * ctx.eff.comm))
            rows["block"].append(sum(x for x, k in zip(linear, kinds) if k == "block") / max(self.num_blocks, 1))
            rows["embedding"].append(sum(x for x, k in zip(linear, kinds) if k == "embedding") + p2p)
            rows["head"].append(sum(x for x, k in zip(linear, kinds) if k == "head"))
            rows["bound"].append(sum(lt.compute_bound_s for lt in times))
        grid = np.array(_GRID, dtype=float)
        xs = np.arange(T_MAX + 1, dtype=float)
        self._slope = {k: (v[-1] - v[-2]) / (grid[-1] - grid[-2]) for k, v in rows.items()}
        self.block = np.interp(xs, grid, rows["block"]).tolist()
        self.embed = np.interp(xs, grid, rows["embedding"]).tolist()
        self.head = np.interp(xs, grid, rows["head"]).tolist()
        self.bound = np.interp(xs, grid, rows["bound"]).tolist()
        for table in (self.block, self.embed, self.head, self.bound):
            table[0] = 0.0

    def _attention_coefficients(self, ctx: Context) -> None:
        tp = ctx.options.tp
        attn = [op.attention for op in ctx.graph.ops if op.attention is not None]
        self.attention_layers = len(attn)
        self.flops_per_pair = sum(2 * a.heads * (a.head_dim + a.value_dim) for a in attn) / tp
        # query rows per attention tile in a decode step: the query heads sharing one K/V head (compute._query_rows)
        self.decode_rows = max(attn[0].heads // max(attn[0].kv_heads, 1), 1) if attn else 1
        kv_all = ctx.kv_bytes_per_token_per_rank()  # K/V (or latent) each cached token adds, one rank
        self.peak = ctx.device.peak_flops_for("bf16" if ctx.cfg.dtype == "fp8" else ctx.cfg.dtype)
        self.bandwidth = ctx.device.memory_bandwidth_bytes_per_s * ctx.eff.memory
        self.kv_read_per_token_s = kv_all / self.bandwidth  # all attention layers, one rank
        # decode attention per window group (0: unbounded): (window, seconds per cached token read, FLOP share);
        # a sliding-window or chunked layer reads at most its window of each sequence
        by_window = kv_bytes_per_token_by_window(ctx.graph, ctx.kv_bytes, tp)
        layers = attention_layers_by_window(ctx.graph)
        total = max(sum(layers.values()), 1)
        self.decode_groups = [(w, b / self.bandwidth, layers.get(w, 0) / total) for w, b in by_window.items()] or \
            [(0, self.kv_read_per_token_s, 1.0)]
        self._decode_compute = self.flops_per_pair / (self.peak * max(ctx.eff.attention(float(self.decode_rows)), 1e-6))
        # per iteration: one kernel per attention layer, and the engine's host work (schedule, sample, launch)
        self.overhead_s = self.attention_layers * ctx.eff.kernel_overhead_s + ctx.eff.host_overhead(ctx.options.runtime)
        self.request_overhead_s = ctx.eff.request_overhead_s  # front end, once per request (on its TTFT)
        self.eff = ctx.eff

    def lookup(self, table: list, tokens: int) -> float:
        if tokens <= T_MAX:
            return table[tokens]
        name = {id(self.block): "block", id(self.embed): "embedding", id(self.head): "head"}.get(id(table), "bound")
        return table[T_MAX] + self._slope[name] * (tokens - T_MAX)

    def linear(self, tokens: int, sampled: int) -> float:
        """Non-attention time of an iteration of `tokens` tokens (all blocks) with `sampled` logits."""
        b = self.block[tokens] if tokens <= T_MAX else self.lookup(self.block, tokens)
        e = self.embed[tokens] if tokens <= T_MAX else self.lookup(self.embed, tokens)
        return self.num_blocks * b + e + self.head[min(sampled, T_MAX)]

    def decode_attention_per_token(self, decodes: int) -> float:
        """Seconds per cached token read by decode attention while no window is full (max of compute and memory
        roofline per window group)."""
        if not decodes:
            return 0.0
        return sum(max(self._decode_compute * share, read) for _, read, share in self.decode_groups)

    def decode_attention(self, decodes: int, decode_kv: float) -> float:
        """Decode attention of `decodes` sequences holding `decode_kv` cached tokens in total (each also reads
        its new token): every cached token of unbounded layers; at most `decodes` x window tokens of a
        sliding-window or chunked layer (the bound is exact once every sequence fills its window, an upper
        bound before)."""
        if not decodes:
            return 0.0
        tokens = decode_kv + decodes
        return sum((min(tokens, decodes * w) if w else tokens) * max(self._decode_compute * share, read)
                   for w, read, share in self.decode_groups)

    def decode_attention_slope(self, decodes: int, decode_kv: float) -> tuple[float, float]:
        """(d decode_attention / d decode_kv at `decode_kv`, cached tokens more before the slope changes: a
        window group fills)."""
        tokens, slope, until = decode_kv + decodes, 0.0, math.inf
        for w, read, share in self.decode_groups:
            if w and tokens >= decodes * w:
                continue
            slope += max(self._decode_compute * share, read)
            if w:
                until = min(until, decodes * w - tokens)
        return (slope if decodes else 0.0), until

    def attention_pairs(self, q: int, cached: int) -> float:
        """Query-key pairs of a q-token chunk after `cached` tokens, averaged over the attention layers: causal
        for unbounded layers, at most the window per query for sliding-window or chunked ones (`windowed_pairs`);
        what `prefill_attention` prices with the per-pair FLOPs of all layers."""
        return sum(share * windowed_pairs(q, cached, w) for w, _, share in self.decode_groups)

    def prefill_attention(self, pairs: float, q_tokens: int, kv_read_tokens: float) -> float:
        """Attention time of prefill chunks: `pairs` causal query-key pairs, `kv_read_tokens` cached."""
        if pairs <= 0:
            return 0.0
        compute = pairs * self.flops_per_pair / (self.peak * max(self.eff.attention(float(q_tokens)), 1e-6))
        return max(compute, (kv_read_tokens + q_tokens) * self.kv_read_per_token_s)

    def time(self, decodes: int = 0, decode_kv: float = 0.0, prefill_tokens: int = 0, prefill_pairs: float = 0.0,
             prefill_kv_read: float = 0.0, prompts_done: int = 0) -> float:
        """Seconds of one iteration: `decodes` sequences holding `decode_kv` cached tokens in total, plus
        `prefill_tokens` prompt tokens (chunks) doing `prefill_pairs` attention pairs; `prompts_done`
        prompts emit their first token."""
        t = self.linear(decodes + prefill_tokens, decodes + prompts_done)
        t += self.decode_attention(decodes, decode_kv)
        t += self.prefill_attention(prefill_pairs, prefill_tokens, prefill_kv_read)
        return t + (self.overhead_s if decodes or prefill_tokens else 0.0)

    def layered_time(self, decodes: int, decode_kv: float, prompt_tokens: int, prompt_pairs: float,
                     group_blocks: int, first: bool, last: bool, prompts: int) -> float:
        """One layered-prefill iteration: all decodes through every block, plus `prompt_tokens` tokens of
        whole prompts through `group_blocks` blocks (embedding on the first group, logits on the last)."""
        n, p = decodes, prompt_tokens
        frac = group_blocks / max(self.num_blocks, 1)
        block_n = self.block[n] if n <= T_MAX else self.lookup(self.block, n)
        both = n + p
        block_np = self.block[both] if both <= T_MAX else self.lookup(self.block, both)
        t = (self.num_blocks - group_blocks) * block_n + group_blocks * block_np
        t += self.lookup(self.embed, n + p if first else n) + self.head[min(n + (prompts if last else 0), T_MAX)]
        t += self.decode_attention(n, decode_kv)
        t += frac * self.prefill_attention(prompt_pairs, p, 0.0)
        return t + self.overhead_s

    def idle_wakeup_s(self, gap_s: float) -> float:
        """Extra time before the first iteration after the instance sat idle: none in the cost model (engine
        profiles measure it: `ProfiledIterationCost.idle_wakeup_s`)."""
        return 0.0

    def compute_bound(self, tokens: int) -> float:
        """Seconds of an iteration of `tokens` tokens limited by FLOP/s (for the power model)."""
        return self.lookup(self.bound, tokens)


def causal_pairs(q: int, cached: int) -> float:
    """Query-key pairs of a q-token chunk after `cached` tokens: q*cached + q(q+1)/2.

    >>> causal_pairs(4, 0), causal_pairs(2, 10)
    (10.0, 23.0)
    """
    return q * cached + q * (q + 1) / 2.0


def windowed_pairs(q: int, cached: int, window: int) -> float:
    """Query-key pairs of a q-token chunk after `cached` tokens in a layer whose queries see at most `window`
    keys (0: unbounded, `causal_pairs`): the query at position p attends to min(p, window) keys.

    >>> windowed_pairs(4, 0, 0), windowed_pairs(4, 0, 2), windowed_pairs(2, 10, 4), windowed_pairs(3, 1, 3)
    (10.0, 7.0, 8.0, 8.0)
    """
    if not window or cached + q <= window:
        return causal_pairs(q, cached)
    if cached >= window:
        return float(q * window)
    below = causal_pairs(window - cached, cached)  # keys still growing up to the window
    return below + float((cached + q - window) * window)


def _moe_info(ctx: Context) -> MoeInfo:
    g = ctx.graph
    specs = [(op.experts, layer.index) for layer in g.layers if layer.is_moe
             for op in g.layer_ops(layer) if op.experts is not None]
    if not specs:
        return MoeInfo(0, 0, 0, 0.0)
    e = specs[0][0]
    per_layer = sum(s.expert_param_bytes for s, i in specs if i == specs[0][1])  # all expert GEMMs of one layer
    shard = ctx.expert_shards
    return MoeInfo(len({i for _, i in specs}), e.num_experts, e.top_k, per_layer * ctx.weight_scale() / shard)


def typical_sequence_tokens(ctx: Context) -> int:
    """The sequence length the instance is sized for: prompt + output of its options."""
    return (ctx.options.input_len or ctx.graph.seq_len) + ctx.options.output_len


def kv_capacity_tokens(ctx: Context, max_tokens: int) -> int:
    """Tokens of KV cache one instance holds next to weights, activations and the reserve.

    Sequences of the typical length (`typical_sequence_tokens`) are what the pool is counted in:
    sliding-window layers hold at most their window of each, recurrent layers a constant state per
    sequence, so a token costs the mean bytes per token of such a sequence (`kv_bytes_per_token_at`;
    for full and grouped-query attention simply the K/V of one token).
    """
    memory = inference_memory(ctx, 0, 1, max_tokens)
    free = ctx.capacity_bytes - memory["weights"] - memory["activations"] - memory["reserve"]
    per_token = kv_bytes_per_token_at(ctx, typical_sequence_tokens(ctx))
    return int(max(free, 0) // max(per_token, 1e-9)) if not math.isnan(free) else 0
