"""`estimate`: predicted time, throughput, memory and energy of one configuration, as the dict of
`planner estimate --json` (keys of the design's contract, null where a phase does not define them).

Energy: each device draws idle + (TDP - idle) x u, where u is the fraction of the step its
compute units are busy (compute-bound time / step time, at least 0.3 while running memory-bound
kernels: HBM traffic alone draws a large part of board power). Idle is the spec's idle power,
else 15% of TDP (H100 SXM idles near 70-100 W of 700 W in nvidia-smi). A documented model, not a
measurement.
"""

from __future__ import annotations

from cost_models.estimate_context import Context, make_context
from cost_models.estimate_infer import forward_pass, inference_margin_items, inference_memory, max_batch, replica_batch
from cost_models.estimate_serve import MAX_BATCHED_TOKENS, serve
from cost_models.estimate_train import train_step
from cost_models.parallel_config import Options, validate
from cost_models.uncertainty import band_for
from ir import kv_cache
from ir.errors import UserError
from ir.graph import Graph

PHASES = ("train", "prefill", "decode", "serve")
_MEMORY_BOUND_POWER_FLOOR = 0.3
_IDLE_FRACTION = 0.15


def _power_w(ctx: Context, busy_compute_fraction: float) -> float:
    tdp = ctx.device.tdp_w or 0.0
    idle = ctx.device.idle_w if ctx.device.idle_w is not None else _IDLE_FRACTION * tdp
    u = min(max(busy_compute_fraction, _MEMORY_BOUND_POWER_FLOOR), 1.0)
    return idle + (tdp - idle) * u


def _energy_per_token(ctx: Context, seconds: float, tokens: float, compute_fraction: float) -> float | None:
    if not ctx.device.tdp_w or tokens <= 0:
        return None
    return _power_w(ctx, compute_fraction) * ctx.world * seconds / tokens


def _base(graph: Graph, cluster, phase: str, o: Options) -> dict:
    return {
        "model": graph.model, "cluster": cluster.name, "phase": phase,
        "parallel": {"dp": o.dp, "tp": o.tp, "pp": o.pp, "ep": o.ep},
        "fits": None, "memory_per_device_bytes": None, "step_time_s": None, "tokens_per_s": None,
        "tflops_per_device": None, "mfu": None, "latency_s": None, "ttft_s": None, "tpot_s": None,
        "output_tokens_per_s": None, "max_batch": None, "energy_per_token_j": None,
        "breakdown": {"compute": 0.0, "memory": 0.0, "communication": 0.0, "bubble": 0.0, "other": 0.0},
    }


def _finish(out: dict, ctx: Context, memory: dict, margin: dict | None = None) -> dict:
    total = sum(memory.values())
    out["memory_per_device_bytes"] = int(total)
    out["memory_breakdown_bytes"] = {k: int(v) for k, v in memory.items()}
    # what the breakdown's "reserve" holds, item by item (cost_models.memory: runtime, NCCL buffers,
    # fragmentation, fp32 gradient accumulation, prefetch buffers, backward workspace, logits)
    out["memory_margin_bytes"] = {k: int(v) for k, v in (margin or {}).items()}
    out["memory_capacity_bytes"] = int(ctx.capacity_bytes)
    fits = total <= ctx.capacity_bytes
    out["fits"] = bool(fits if out["fits"] is None else out["fits"] and fits)
    out["device"] = ctx.device.name
    out["uncertainty"] = band_for(out["phase"], ctx.device.kind)
    return out


def _train(ctx: Context, out: dict) -> dict:
    o = ctx.options
    r = train_step(ctx)
    step = r["step_time_s"]
    out.update(step_time_s=step, tokens_per_s=o.batch * o.input_len / step, breakdown=r["breakdown"],
               latency_s=step, stages=[list(s) for s in r["stages"]], microbatches=r["microbatches"])
    tflops = r["flops"] / step / ctx.world
    out["tflops_per_device"] = tflops / 1e12
    peak = ctx.device.peak_flops_for(o.dtype)
    out["mfu"] = tflops / peak
    out["mfu_capped"] = bool(r["mfu_capped"])  # the physics predicted more than 90% of the best published MFU
    out["mfu_uncapped"] = r["flops"] / r["uncapped_step_time_s"] / ctx.world / peak
    out["energy_per_token_j"] = _energy_per_token(ctx, step, o.batch * o.input_len, r["compute_fraction"])
    out["fits"] = r["fits_all"]
    return _finish(out, ctx, r["memory"], r["memory_margin"])


def _breakdown(p) -> dict:
    return {"compute": p.compute_s, "memory": p.memory_s, "communication": p.comm_s, "bubble": 0.0, "other": 0.0}


def _prefill(ctx: Context, out: dict) -> dict:
    o = ctx.options
    b = replica_batch(ctx)
    p = forward_pass(ctx, "prefill", b, o.input_len)
    tokens = b * o.input_len
    out.update(latency_s=p.time_s, ttft_s=p.time_s, step_time_s=p.time_s, breakdown=_breakdown(p),
               tokens_per_s=tokens * o.dp / p.time_s, stages=[list(s) for s in p.stages])
    out["tflops_per_device"] = p.flops / p.time_s / (o.tp * o.pp) / 1e12
    out["mfu"] = out["tflops_per_device"] * 1e12 / ctx.device.peak_flops_for(o.dtype)
    out["energy_per_token_j"] = _energy_per_token(ctx, p.time_s, tokens * o.dp, p.compute_s / p.time_s)
    return _finish(out, ctx, inference_memory(ctx, b, o.input_len, tokens), inference_margin_items(ctx, b, tokens))


def _decode(ctx: Context, out: dict) -> dict:
    o = ctx.options
    b = replica_batch(ctx)
    p = forward_pass(ctx, "decode", b, o.input_len, o.input_len)
    out.update(tpot_s=p.time_s, step_time_s=p.time_s, latency_s=p.time_s, breakdown=_breakdown(p),
               tokens_per_s=o.batch / p.time_s, output_tokens_per_s=o.batch / p.time_s,
               max_batch=max_batch(ctx, o.input_len + o.output_len, 1), stages=[list(s) for s in p.stages])
    out["tflops_per_device"] = p.flops / p.time_s / (o.tp * o.pp) / 1e12
    out["mfu"] = out["tflops_per_device"] * 1e12 / ctx.device.peak_flops_for(o.dtype)
    out["energy_per_token_j"] = _energy_per_token(ctx, p.time_s, o.batch, p.compute_s / p.time_s)
    return _finish(out, ctx, inference_memory(ctx, b, o.input_len + o.output_len, b), inference_margin_items(ctx, b, b))


def _serve(ctx: Context, out: dict) -> dict:
    o = ctx.options
    r = serve(ctx)
    if not r["fits"]:
        out["max_batch"] = 0
        out["fits"] = False
        return _finish(out, ctx, inference_memory(ctx, 1, o.input_len + o.output_len, o.input_len),
                       inference_margin_items(ctx, 1, o.input_len))
    p = r["prefill"]
    out.update(max_batch=r["max_batch"], output_tokens_per_s=r["output_tokens_per_s"],
               tokens_per_s=r["requests_per_s"] * (o.input_len + o.output_len), ttft_s=r["ttft_s"],
               tpot_s=r["tpot_s"], step_time_s=r["decode_time_s"], latency_s=r["ttft_s"] + r["tpot_s"] * o.output_len,
               breakdown=_breakdown(p), requests_per_s=r["requests_per_s"], stages=[list(s) for s in p.stages])
    if "achieved_requests_per_s" in r:
        out["achieved_requests_per_s"] = r["achieved_requests_per_s"]
    out["energy_per_token_j"] = _energy_per_token(ctx, 1.0, r["output_tokens_per_s"], 0.0)
    batch = r["concurrency"]
    prefill = min(o.input_len, MAX_BATCHED_TOKENS)
    return _finish(out, ctx, inference_memory(ctx, batch, o.input_len + o.output_len, prefill),
                   inference_margin_items(ctx, batch, prefill))


def is_generative(graph: Graph) -> bool:
    """Decoder models generate token by token: some layer keeps a cache (KV or recurrent state)."""
    return kv_cache.is_generative(graph)


def _serve_forward_only(ctx: Context, out: dict) -> dict:
    """Encoders and vision models serve one forward pass per request: batch as large as fits."""
    o = ctx.options
    base = inference_memory(ctx, 0, 0, 0)
    per_item = inference_memory(ctx, 0, 0, o.input_len)["activations"] - base["activations"]
    free = ctx.capacity_bytes - base["weights"] - base["reserve"]
    batch = int(min(max(free // max(per_item, 1.0), 0), 4096))
    if batch < 1:
        out.update(max_batch=0, fits=False)
        return _finish(out, ctx, base, inference_margin_items(ctx, 0, 0))
    p = forward_pass(ctx, "prefill", batch, o.input_len)
    rate = batch / p.time_s * o.dp
    out.update(max_batch=batch * o.dp, latency_s=p.time_s, step_time_s=p.time_s, requests_per_s=rate,
               tokens_per_s=rate * o.input_len, breakdown=_breakdown(p))
    out["energy_per_token_j"] = _energy_per_token(ctx, p.time_s, batch * o.input_len * o.dp, p.compute_s / p.time_s)
    return _finish(out, ctx, inference_memory(ctx, batch, 0, batch * o.input_len),
                   inference_margin_items(ctx, batch, batch * o.input_len))


def estimate_graph(graph: Graph, cluster, phase: str, options: Options) -> dict:
    """Estimate `phase` of `graph` on `cluster` with `options` (validated here)."""
    if phase not in PHASES:
        raise UserError(f"unknown phase '{phase}'; use one of {', '.join(PHASES)}")
    if phase == "decode" and not is_generative(graph):
        raise UserError(f"{graph.model} is not a generative (causal decoder) model: it has no decode phase; "
                        f"use --phase prefill (one forward pass), serve or train")
    if options.input_len is None:
        options = Options(**{**options.__dict__, "input_len": graph.seq_len})
    o = validate(graph, cluster, phase, options)
    ctx = make_context(graph, cluster, o)
    out = _base(graph, cluster, phase, o)
    if phase == "serve" and not is_generative(graph):
        return _serve_forward_only(ctx, out)
    return {"train": _train, "prefill": _prefill, "decode": _decode, "serve": _serve}[phase](ctx, out)
