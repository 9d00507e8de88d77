"""Per-device memory maps of a plan: what lives where on every device, at which address, and when.

A map has one entry per pipeline stage (all ranks of a stage hold the same bytes) with regions:
weights, gradients, optimizer states, activations (one region per microbatch the schedule keeps in
flight), KV cache, communication buffers, workspace and fragmentation reserve. Sizes come from the
same cost-model formulas as the plan's predicted memory (`cost_models.estimate_train.stage_memory`,
`cost_models.estimate_infer.inference_memory`, `cost_models.memory.reserve_bytes`), so a map's
total equals the plan's prediction; the reserve is split as: fragmentation = 5% of capacity, the
rest workspace, of which the communication buffers are carved out (PyTorch DDP keeps 25 MB gradient
buckets, two in flight; pipeline send/recv keeps one activation each way; Li et al. 2020, "PyTorch
Distributed", Sec. 4.2).

Activation lifetimes follow the schedule: 1F1B (Narayanan et al. 2021, PipeDream-Flush) runs
min(pp - s, m) warm-up forwards on stage s, so microbatch j's activations live from F_j to B_j and
at most pp - s are live at once; GPipe keeps all m. Each device's regions form one arena ("hbm"),
packed by `passes.buffer_packing.pack` over schedule steps. A second arena per stage holds the
transient buffers of one layer's forward (`passes.buffer_lifetimes`), sized at the plan's tokens per
microbatch over tp, inside the workspace plus fragmentation reserve.

KV cache sizing (paged, vLLM-style blocks of 16 tokens; Kwon et al. 2023): the memory left after
weights, activations and reserve, in blocks, gives the most concurrent sequences and tokens. A
block's bytes are those of 16 tokens of a plan-length sequence on the fullest rank, exact per
attention kind (`cost_models.estimate_infer.kv_bytes_per_token_at`: sliding-window layers hold at
most their window, recurrent layers a constant state per sequence).
"""

from __future__ import annotations

import logging
import math

from cost_models.estimate_context import make_context
from cost_models.estimate_infer import kv_bytes_per_token_at
from cost_models.estimate_train import stage_memory
from cost_models.memory import FRAGMENTATION
from cost_models.parallel_config import Options
from cost_models.pipeline_schedule import in_flight, stage_order
from ir.errors import UserError
from passes.buffer_lifetimes import forward_lifetimes
from passes.buffer_packing import Buffer, PackingConfig, PackingInstance, pack, verify_packing

log = logging.getLogger(__name__)

MAP_VERSION = 1
KV_BLOCK_TOKENS = 16
DDP_BUCKET_BYTES = 25 * 2**20  # torch DDP bucket_cap_mb default
_STATIC = ("weights", "gradients", "optimizer", "kv_cache", "communication", "workspace")
_LAYER_ARENA_TIME_S = 2.0


def schedule_order(pp: int, stage: int, microbatches: int, schedule: str = "1f1b") -> list[str]:
    """Forward/backward order of one stage as tokens "F0" / "B0".

    >>> schedule_order(2, 0, 3)
    ['F0', 'F1', 'B0', 'F2', 'B1', 'B2']
    >>> schedule_order(2, 0, 2, "gpipe")
    ['F0', 'F1', 'B0', 'B1']
    """
    return stage_order("gpipe" if schedule == "gpipe" else "1f1b", pp, stage, microbatches)


def _split_reserve(reserve: float, capacity: float, comm: float) -> dict[str, int]:
    fragmentation = min(FRAGMENTATION * capacity, reserve)
    workspace = reserve - fragmentation
    comm = min(comm, workspace / 2)
    return {"communication": int(comm), "workspace": int(workspace - comm), "fragmentation": int(fragmentation)}


def _hidden(graph) -> int:
    return int(graph.config.get("hidden_size") or graph.ops[-1].outputs[0].shape[-1])


def _train_options(decision: dict, stage: dict, inputs: dict) -> Options:
    workload = inputs["workload"]
    return Options(tp=stage["tp"], pp=decision["pp"], dp=decision["dp"], batch=workload["batch"],
                   input_len=workload["seq_len"], microbatch_size=decision["microbatch_size"],
                   recompute=decision["recompute"], zero_stage=decision["zero_stage"], dtype=inputs.get("dtype", "bf16"),
                   schedule=decision.get("schedule", "1f1b"), ep=int(decision.get("ep", 1)), ep_over_dp=True,
                   virtual_stages=int(decision.get("virtual_stages", 1)),
                   sequence_parallel=bool(decision.get("sequence_parallel")) and stage["tp"] > 1)


def _device_of(cluster, name: str):
    for node in cluster.nodes:
        if node.device.name == name:
            return node.device
    raise UserError(f"plan uses device {name} that cluster {cluster.name} does not have")


def _regions(static: dict[str, int], acts: list[tuple[str, int, int, int]], steps: int) -> tuple[list[dict], dict]:
    """Lay out static regions (live all steps) from address 0, then the activations packed over steps."""
    buffers = [Buffer(name, 0, steps, size) for name in _STATIC if (size := static.get(name, 0)) > 0]
    buffers += [Buffer(name, lo, hi, size) for name, lo, hi, size in acts if size > 0]
    fragment = static.get("fragmentation", 0)
    if fragment > 0:
        buffers.append(Buffer("fragmentation", 0, steps, fragment))
    solution = pack(PackingInstance(tuple(buffers)), PackingConfig(time_limit_s=2.0, use_cpsat=False))
    regions = [{"name": b.id, "bytes": b.size, "offset": solution.offsets[b.id], "lower": b.lower, "upper": b.upper}
               for b in buffers]
    return regions, {"peak_bytes": solution.peak_bytes, "lower_bound_bytes": solution.lower_bound_bytes}


def _layer_arena(graph, tokens: int, tp: int, capacity: int, name: str) -> dict | None:
    """Transient buffers of one block's forward at `tokens` per microbatch, sharded by tp."""
    block = next((layer.index for layer in graph.layers if layer.kind == "block"), None)
    if block is None or graph.capture_tokens <= 0:
        return None
    scale = tokens / graph.capture_tokens / max(tp, 1)
    inst = forward_lifetimes(graph, layer=block, scale=scale)
    sol = pack(inst, PackingConfig(time_limit_s=_LAYER_ARENA_TIME_S, use_cpsat=False))
    if not sol.found:
        return None
    return {"name": name, "capacity_bytes": int(capacity), "peak_bytes": sol.peak_bytes,
            "lower_bound_bytes": sol.lower_bound_bytes, "status": sol.status, "method": sol.method,
            "layer": graph.layers[block].name,
            "buffers": [{"id": b.id, "lower": b.lower, "upper": b.upper, "size": b.size, "offset": sol.offsets[b.id]}
                        for b in inst.buffers]}


def _device_entry(stage: dict, device, regions: list[dict], layout: dict, predicted: int | None) -> dict:
    kinds: dict[str, int] = {}
    for r in regions:
        key = "activations" if r["name"].startswith("activations") else r["name"]
        kinds[key] = kinds.get(key, 0) + r["bytes"]
    return {"stage": stage["stage"], "ranks": [r for group in stage["ranks"] for r in group], "device": device.name,
            "capacity_bytes": int(device.memory_bytes), "total_bytes": layout["peak_bytes"],
            "predicted_bytes": predicted, "by_kind_bytes": kinds, "regions": regions}


def _train_map(plan: dict, graph, cluster) -> dict:
    decision, inputs = plan["decision"], plan["inputs"]
    devices, arenas = [], []
    hidden = _hidden(graph)
    for s, stage in enumerate(decision["stages"]):
        device = _device_of(cluster, stage["device"])
        o = _train_options(decision, stage, inputs)
        ctx = make_context(graph, cluster, o, device=device)
        mbs, seq, m = decision["microbatch_size"], o.input_len, decision["microbatches"]
        v = o.virtual_stages  # interleaved: one buffer per (microbatch, virtual stage), "F3.1" in the order
        chunks = [tuple(c) for c in stage["chunks"]] if v > 1 else None
        mem = stage_memory(ctx, s, tuple(stage["layers"]), mbs, seq, m, chunks)
        order = stage_order(o.schedule, decision["pp"], s, m, v)
        per_unit = mem["activations"] / max(in_flight(o.schedule, decision["pp"], s, m, v) * v, 1)
        units = [f"{j}.{c}" if v > 1 else f"{j}" for j in range(m) for c in range(v)]
        acts = [(f"activations.mb{u}", order.index(f"F{u}"), order.index(f"B{u}") + 1, int(per_unit)) for u in units]
        comm = (2 * DDP_BUCKET_BYTES if decision["dp"] > 1 else 0) + (2 * mbs * seq * hidden * 2 if decision["pp"] > 1 else 0)
        static = {"weights": int(mem["weights"]), "gradients": int(mem["gradients"]),
                  "optimizer": int(mem["optimizer"]), **_split_reserve(mem["reserve"], ctx.capacity_bytes, comm)}
        regions, layout = _regions(static, acts, len(order))
        arenas.append(_hbm_arena(f"stage{s}/hbm", device, regions))
        predicted = int(sum(mem.values()))
        devices.append(_device_entry(stage, device, regions, layout, predicted))
        layer = _layer_arena(graph, mbs * seq, stage["tp"], static["workspace"] + static["fragmentation"],
                             f"stage{s}/layer_forward")
        if layer:
            arenas.append(layer)
    return {"version": MAP_VERSION, "kind": "train", "devices": devices, "arenas": arenas, "kv_cache": None}


def _hbm_arena(name: str, device, regions: list[dict]) -> dict:
    return {"name": name, "capacity_bytes": int(device.memory_bytes),
            "buffers": [{"id": r["name"], "lower": r["lower"], "upper": r["upper"], "size": r["bytes"],
                         "offset": r["offset"]} for r in regions]}


def kv_cache_sizing(free_bytes: float, kv_bytes_per_token: float, tokens_per_sequence: int,
                    block_tokens: int = KV_BLOCK_TOKENS) -> dict:
    """Paged KV blocks that fit in `free_bytes`, and the sequences and tokens they hold.

    >>> kv_cache_sizing(1e9, 1e5, 100)["max_sequences"]  # 625 blocks of 16 tokens, 7 blocks per sequence
    89
    """
    block_bytes = kv_bytes_per_token * block_tokens
    blocks = int(max(free_bytes, 0) // block_bytes) if block_bytes > 0 else 0
    per_sequence = math.ceil(max(tokens_per_sequence, 1) / block_tokens)
    return {"block_tokens": block_tokens, "block_bytes": int(block_bytes), "blocks": blocks,
            "max_tokens": blocks * block_tokens, "max_sequences": blocks // per_sequence}


def _infer_map(plan: dict, graph, cluster) -> dict:
    decision, predicted, inputs = plan["decision"], plan["predicted"], plan["inputs"]
    br = predicted["memory_breakdown_bytes"]
    devices, arenas = [], []
    tp, pp, dp = decision["tp"], decision["pp"], decision["dp"]
    batch = max(math.ceil(decision["batch"] / dp), 1)
    tokens = batch if decision["phase"] == "decode" else batch * decision["input_len"]
    tokens = tokens if decision["phase"] != "serve" else decision["input_len"]
    hidden = _hidden(graph)
    for s, stage in enumerate(decision["stages"]):
        device = _device_of(cluster, stage["device"])
        comm = (2 * tokens * hidden * 2) if tp > 1 or pp > 1 else 0
        static = {"weights": int(br.get("weights", 0)), "kv_cache": int(br.get("kv_cache", 0)),
                  **_split_reserve(br.get("reserve", 0), device.memory_bytes, comm)}
        regions, layout = _regions(static, [("activations", 0, 1, int(br.get("activations", 0)))], 1)
        arenas.append(_hbm_arena(f"stage{s}/hbm", device, regions))
        devices.append(_device_entry(stage, device, regions, layout, predicted.get("memory_per_device_bytes")))
        layer = _layer_arena(graph, tokens, tp, static["workspace"] + static["fragmentation"], f"stage{s}/layer_forward")
        if layer:
            arenas.append(layer)
    groups = int((decision.get("serving") or {}).get("expert_parallel_groups") or 1)  # wide expert parallelism
    options = Options(tp=tp, pp=pp, dp=dp, batch=decision["batch"], input_len=decision["input_len"],
                      output_len=decision["output_len"], dtype=inputs.get("dtype", "bf16"), ep=groups,
                      ep_over_dp=groups > 1)
    ctx = make_context(graph, cluster, options)
    per_token = kv_bytes_per_token_at(ctx, decision["input_len"] + decision["output_len"])
    free = ctx.capacity_bytes - br.get("weights", 0) - br.get("activations", 0) - br.get("reserve", 0)
    kv = kv_cache_sizing(free, per_token, decision["input_len"] + decision["output_len"]) if per_token else None
    if kv:
        kv["max_sequences"] *= dp
    return {"version": MAP_VERSION, "kind": "inference", "devices": devices, "arenas": arenas, "kv_cache": kv}


def memory_map_for_plan(plan_dict: dict, graph, cluster) -> dict:
    """The per-device memory map of a plan dict (a JSON-able dict of ints and strings).

    >>> import planner
    >>> from cost_models.cluster import parse_cluster
    >>> p = planner.plan("tiny-llama", cluster="2xcpu", workload="train", batch=8, seq_len=64)
    >>> m = memory_map_for_plan(p.data, planner.capture("tiny-llama", seq_len=64), parse_cluster("2xcpu"))
    >>> m["devices"][0]["total_bytes"] == p.data["predicted"]["memory_per_device_bytes"], verify_memory_map(m)
    (True, [])
    """
    kind = plan_dict.get("decision", {}).get("kind")
    if kind == "train":
        return _train_map(plan_dict, graph, cluster)
    if kind == "inference":
        return _infer_map(plan_dict, graph, cluster)
    raise UserError(f"cannot map memory of a plan of kind {kind!r}; expected 'train' or 'inference'")


def verify_memory_map(memory_map: dict) -> list[str]:
    """Every violation in a map, one line each: overlapping live buffers, capacity, totals.

    >>> verify_memory_map({"devices": [], "arenas": [{"name": "a", "capacity_bytes": 8, "buffers": [
    ...     {"id": "x", "lower": 0, "upper": 2, "size": 4, "offset": 0},
    ...     {"id": "y", "lower": 1, "upper": 2, "size": 4, "offset": 6}]}]})
    ['arena a: buffer y ends at 10, beyond the capacity 8']
    """
    problems = []
    for arena in memory_map.get("arenas", []):
        bufs = tuple(Buffer(b["id"], b["lower"], b["upper"], b["size"]) for b in arena["buffers"])
        offsets = {b["id"]: b["offset"] for b in arena["buffers"]}
        inst = PackingInstance(bufs, capacity=arena["capacity_bytes"])
        problems += [f"arena {arena['name']}: {p}" for p in verify_packing(inst, offsets)]
    for dev in memory_map.get("devices", []):
        where = f"stage {dev['stage']} ({dev['device']})"
        top = max((r["offset"] + r["bytes"] for r in dev["regions"]), default=0)
        if top != dev["total_bytes"]:
            problems.append(f"{where}: regions end at {top:,} but the map says {dev['total_bytes']:,} bytes")
        if dev["total_bytes"] > dev["capacity_bytes"]:
            problems.append(f"{where}: needs {dev['total_bytes'] / 1e9:.2f} GB, holds {dev['capacity_bytes'] / 1e9:.2f} GB")
        pred = dev.get("predicted_bytes")
        if pred is not None and abs(pred - dev["total_bytes"]) > max(64, pred * 1e-6):
            problems.append(f"{where}: map total {dev['total_bytes']:,} B disagrees with the predicted {pred:,} B")
    return problems
