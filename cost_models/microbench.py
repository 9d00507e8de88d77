"""Microbenchmarks that `planner calibrate` fits the cost model to: GEMMs, memory streaming,
scaled-dot-product attention, per-op dispatch overhead and all-reduce between two local processes.

Each benchmark returns `Point`s: the work of one call in the units the cost model uses (FLOPs,
bytes moved, GEMM m/n/k or attention query rows) and its measured time, the best of several
timed repeats after a warm-up. Nothing here fits or decides; `cost_models.calibration` does.
"""

from __future__ import annotations

import glob
import itertools
import logging
import os
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ir.graph import AttentionSpec

log = logging.getLogger(__name__)

_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
_COLD_BYTES = 96 * 2**20  # more than a GPU's L2 (40-60 MiB on A100/H100) and most CPUs' last-level cache
_COLD_BYTES_MAX = 2 * 2**30  # the rotation pool never takes more memory than this


def last_level_cache_bytes() -> int:
    """The largest CPU cache level of cpu0 in bytes (sysfs; 0 when unknown)."""
    largest = 0
    for size_file in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
        text = Path(size_file).read_text().strip().upper()
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        largest = max(largest, int(digits) * scale if digits.isdigit() else 0)
    return largest


def cold_bytes(device: str) -> int:
    """Bytes of weights a GEMM benchmark rotates through so each call reads them from memory, not cache,
    as a model's layers do: twice this CPU's last-level cache (sysfs; servers now carry 100-500 MiB of
    L3), at least `_COLD_BYTES`; `_COLD_BYTES` on GPUs.

    >>> cold_bytes("cuda") == _COLD_BYTES and cold_bytes("cpu") >= _COLD_BYTES
    True
    """
    if device != "cpu":
        return _COLD_BYTES
    return min(max(_COLD_BYTES, 2 * last_level_cache_bytes()), _COLD_BYTES_MAX)


@dataclass(frozen=True)
class Point:
    """One measured call: `kind` is gemm | memory | attention | overhead | all_reduce."""

    kind: str
    label: str
    flops: float
    bytes: float
    seconds: float
    gemm_mnk: tuple[int, int, int] | None = None
    regime: str = "resident"  # gemm: timed per shape ("resident") or in a shuffled sequence ("streaming")
    query_rows: float = 1.0  # attention: batch x query length (the efficiency curve's m)


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1, inner: int = 1,
                sync: Callable[[], None] | None = None) -> float:
    """Best (minimum) wall-clock seconds of `fn` over `repeats` timed runs (each of `inner` calls), after
    `warmup` calls. The minimum, as `timeit` recommends, filters out interference from other processes
    on a shared machine; the name is kept for its callers. (Thread CPU time is no substitute on a VM:
    here it reads 5-15% below wall time even for a pure busy loop, steal time not being charged.)

    >>> median_time(lambda: sum(range(100)), repeats=3) > 0
    True
    """
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        sync()
        times.append((time.perf_counter() - start) / inner)
    return min(times)


@dataclass(frozen=True)
class Bench:
    """Where and how to run: torch device string, dtype name, repeats and the time budget per call."""

    device: str = "cpu"
    dtype: str = "fp32"
    repeats: int = 5
    quick: bool = False

    @property
    def torch_dtype(self):
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.dtype]

    def sync(self) -> Callable[[], None]:
        import torch

        return torch.cuda.synchronize if self.device == "cuda" else (lambda: None)

    def time(self, fn: Callable[[], object], seconds_hint: float = 0.0) -> float:
        """Median time of `fn`; calls far below a millisecond are batched in an inner loop."""
        inner = 1 if seconds_hint > 1e-3 else max(1, min(200, int(1e-3 / max(seconds_hint, 1e-6))))
        return median_time(fn, repeats=self.repeats, warmup=1, inner=inner, sync=self.sync())


def gemm_grid(bench: Bench) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(ms, ns, ks) of the sweep, every combination measured: skinny decode rows (m = 1) up to
    compute-bound ones; n spans projection widths up to a vocabulary head (64k), whose weights and
    outputs outgrow the last-level cache; k spans hidden and MLP widths. On CPUs every small m up to
    32 is its own point: BLAS switches kernels there and the rate is not monotone in m (single-thread
    MKL on this project's host streams an m = 8 F.linear's weights at 4.6-6 GB/s, m = 16 at 6.5-7.8)."""
    if bench.device == "cuda":
        if bench.quick:
            return (1, 16, 256, 4096), (1024, 14336), (1024, 4096)
        return (1, 4, 16, 64, 256, 1024, 4096), (1024, 4096, 14336, 32768), (1024, 4096, 14336)
    if bench.quick:
        return (1, 16, 256), (256, 4096), (256, 2048)
    return (1, 2, 4, 8, 16, 32, 64, 256), (256, 1024, 4096, 65536), (256, 1024, 4096)


def gemm_shapes(bench: Bench) -> list[tuple[int, int, int]]:
    """(m, n, k) of the sweep: the full grid of `gemm_grid`."""
    ms, ns, ks = gemm_grid(bench)
    return [(m, n, k) for m in ms for n in ns for k in ks]


def bench_gemm(bench: Bench) -> list[Point]:
    """F.linear(x[m, k], w[n, k]) over `gemm_shapes`; bytes are x, w and the output once each.

    Weights rotate through more than the last-level cache, as a model's layers do, and each shape is
    timed on its own (`regime` "resident"). On CPUs (full calibration) the shapes are timed once more in
    a shuffled sequence, each call right after one of another shape, and a point's time is the median
    of those calls (`regime` "streaming"): in a model whose weights outgrow the last-level cache, GEMMs
    of changing shapes run back to back and evict each other's operands, and single-thread MKL then runs
    18-47% slower than on one shape repeated (measured on GPT-2's four decode shapes at m = 4, 8, 16).
    A model whose weights stay in cache behaves like the per-shape timing."""
    import torch
    import torch.nn.functional as F

    size = _BYTES[bench.dtype]
    pool_numel = cold_bytes(bench.device) // size
    pool = torch.empty(pool_numel, device=bench.device, dtype=bench.torch_dtype).normal_()
    own: dict = {}  # (n, k) -> a weight too large for the pool, shared by every m
    calls, shapes = [], gemm_shapes(bench)
    for m, n, k in shapes:
        x = torch.randn(m, k, device=bench.device, dtype=bench.torch_dtype)
        if n * k >= pool_numel:
            ws = [own.setdefault((n, k), torch.randn(n, k, device=bench.device, dtype=bench.torch_dtype))]
        else:
            ws = [pool[i * n * k:(i + 1) * n * k].view(n, k) for i in range(pool_numel // (n * k))]
        turn = itertools.cycle(ws)
        calls.append(lambda x=x, turn=turn: F.linear(x, next(turn)))
    regimes = {"resident": [bench.time(call, seconds_hint=2.0 * m * n * k / 5e10) for call, (m, n, k) in zip(calls, shapes)]}
    if bench.device == "cpu" and not bench.quick:
        regimes["streaming"] = _interleaved_seconds(calls, rounds=max(bench.repeats, 5))
    return [Point("gemm", f"linear m={m} n={n} k={k}" + ("" if regime == "resident" else " (streaming)"),
                  2.0 * m * n * k, size * (m * k + n * k + m * n), t, gemm_mnk=(m, n, k), regime=regime)
            for regime, seconds in regimes.items() for (m, n, k), t in zip(shapes, seconds)]


def _interleaved_seconds(calls: list[Callable[[], object]], rounds: int) -> list[float]:
    """Median seconds of each call over `rounds` shuffled passes over all calls (seeded order)."""
    import random

    order, times = list(range(len(calls))), [[] for _ in calls]
    rng = random.Random(0)
    for call in calls:
        call()
    for _ in range(rounds):
        rng.shuffle(order)
        for i in order:
            start = time.perf_counter()
            calls[i]()
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def bench_memory(bench: Bench) -> list[Point]:
    """Large copies and adds (out of cache): bytes read + written per call."""
    import torch

    sizes = (2**24, 2**25) if bench.device == "cpu" else (2**27, 2**28)
    sizes = sizes[:1] if bench.quick else sizes
    points = []
    size = _BYTES[bench.dtype]
    for numel in sizes:
        a = torch.randn(numel, device=bench.device, dtype=bench.torch_dtype)
        b = torch.randn(numel, device=bench.device, dtype=bench.torch_dtype)
        out = torch.empty_like(a)
        copy = bench.time(lambda a=a, out=out: out.copy_(a), seconds_hint=1.0)
        add = bench.time(lambda a=a, b=b, out=out: torch.add(a, b, out=out), seconds_hint=1.0)
        mib = numel * size // 2**20
        points.append(Point("memory", f"copy {mib} MiB", 0.0, 2.0 * numel * size, copy))
        points.append(Point("memory", f"add {mib} MiB", float(numel), 3.0 * numel * size, add))
    return points


def attention_shapes(bench: Bench) -> list[tuple[int, int, int, int, int]]:
    """(batch, heads, q_len, kv_len, head_dim): causal prefill shapes and q_len = 1 decode shapes."""
    if bench.device == "cuda":
        shapes = [(1, 32, 1024, 1024, 128), (4, 32, 2048, 2048, 128), (8, 32, 1, 4096, 128),
                  (32, 32, 1, 1024, 128)]
    else:
        shapes = [(1, 12, 128, 128, 64), (1, 12, 512, 512, 64), (4, 4, 256, 256, 16),
                  (1, 12, 1, 512, 64), (4, 12, 1, 1024, 64), (1, 4, 1, 256, 16)]
    return shapes[::2] + shapes[1::2][:1] if bench.quick else shapes


def bench_attention(bench: Bench) -> list[Point]:
    """torch's scaled_dot_product_attention; FLOPs and bytes as `ir.phases.op_work` counts them."""
    import torch
    import torch.nn.functional as F

    points = []
    size = _BYTES[bench.dtype]
    for b, h, q, kv, d in attention_shapes(bench):
        causal = q > 1
        query = torch.randn(b, h, q, d, device=bench.device, dtype=bench.torch_dtype)
        key = torch.randn(b, h, kv, d, device=bench.device, dtype=bench.torch_dtype)
        value = torch.randn(b, h, kv, d, device=bench.device, dtype=bench.torch_dtype)
        spec = AttentionSpec(b, h, h, q, kv, d, d, causal)
        # the efficiency curve's rows: one sequence's queries on CPU, the batch's on GPU (cost_models.compute)
        rows = q if bench.device == "cpu" else b * q
        flops = float(spec.flops(b, q, kv))
        kv_bytes = b * kv * 2 * h * d * size
        q_bytes = b * h * q * d * size
        seconds = bench.time(lambda q=query, k=key, v=value, c=causal: F.scaled_dot_product_attention(
            q, k, v, is_causal=c), seconds_hint=flops / 2e10)
        points.append(Point("attention", f"sdpa b={b} h={h} q={q} kv={kv} d={d}", flops,
                            2.0 * q_bytes + kv_bytes, seconds, query_rows=float(rows)))
    return points


def bench_overhead(bench: Bench) -> list[Point]:
    """Tiny element-wise ops (16 elements): what one eager op costs beyond its work."""
    import torch

    x = torch.randn(16, device=bench.device, dtype=bench.torch_dtype)
    y = torch.randn(16, device=bench.device, dtype=bench.torch_dtype)
    ops = {"add": lambda: torch.add(x, y), "mul": lambda: x * y, "silu": lambda: torch.nn.functional.silu(x),
           "layer_norm": lambda: torch.nn.functional.layer_norm(x, (16,))}
    size = _BYTES[bench.dtype]
    return [Point("overhead", f"tiny {name}", 16.0, 48.0 * size, bench.time(fn, 1e-6))
            for name, fn in ops.items()]


# --- collectives between two local processes ------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _all_reduce_worker(rank: int, port: int, backend: str, sizes: tuple[int, ...], repeats: int, queue) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(backend, rank=rank, world_size=2)
    device = f"cuda:{rank}" if backend == "nccl" else "cpu"
    sync = torch.cuda.synchronize if backend == "nccl" else (lambda: None)
    try:
        for nbytes in sizes:
            t = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
            dist.barrier()
            seconds = median_time(lambda t=t: dist.all_reduce(t), repeats=3 * repeats, warmup=3, sync=sync)
            if rank == 0:
                queue.put((nbytes, seconds))
    finally:
        dist.destroy_process_group()


def bench_all_reduce(bench: Bench) -> list[Point]:
    """All-reduce of float32 buffers between 2 spawned processes (gloo on CPU, NCCL on 2 GPUs)."""
    import torch
    import torch.multiprocessing as mp

    backend = "nccl" if bench.device == "cuda" else "gloo"
    if backend == "nccl" and torch.cuda.device_count() < 2:
        log.info("all-reduce skipped: NCCL needs 2 GPUs, found %d", torch.cuda.device_count())
        return []
    sizes = (2**12, 2**18, 2**22, 2**24) if not bench.quick else (2**12, 2**20, 2**22)
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(_all_reduce_worker, args=(_free_port(), backend, sizes, bench.repeats, queue),
                       nprocs=2, join=True, start_method="spawn")
    results = [queue.get() for _ in sizes]
    return [Point("all_reduce", f"all_reduce {nbytes // 1024} KiB", 0.0, float(nbytes), seconds)
            for nbytes, seconds in results]


# --- eager framework overhead ----------------------------------------------------------------------
def _reference_configs() -> list:
    """Tiny decoders of three transformers families the accuracy benchmark does not use (OPT, GPT-NeoX,
    BLOOM), each at 2 and 4 layers: the families' mix of views and compute ops differs, which separates
    the two per-op costs, and the two depths separate the per-op costs from a forward call's fixed cost."""
    import transformers

    configs = []
    for layers in (2, 4):
        small = {"vocab_size": 128, "num_hidden_layers": layers, "num_attention_heads": 2}
        configs += [
            (transformers.OPTConfig(hidden_size=32, ffn_dim=64, max_position_embeddings=256, word_embed_proj_dim=32,
                                    **small), "OPTForCausalLM"),
            (transformers.GPTNeoXConfig(hidden_size=32, intermediate_size=64, max_position_embeddings=256, **small),
             "GPTNeoXForCausalLM"),
            (transformers.BloomConfig(vocab_size=128, hidden_size=32, n_layer=layers, n_head=2), "BloomForCausalLM"),
        ]
    for config, arch in configs:
        config.architectures = [arch]
    return [config for config, _ in configs]


def bench_eager_model(bench: Bench, seq_len: int = 16) -> list[Point]:
    """Seconds of a prefill and of a decode step of tiny transformers models whose work is negligible:
    what ops cost in eager model code (Python modules plus dispatch). Each point carries the model's
    captured compute ops (`flops`) and views (`bytes`); calibration fits a cost per compute op per
    phase and one per view to them."""
    points = []
    for config in _reference_configs():
        points += _eager_points(bench, config, seq_len)
    return points


def _eager_points(bench: Bench, config, seq_len: int) -> list[Point]:
    import torch

    from ir.capture import capture_module
    from ir.hf_models import build_on_meta, example_inputs, model_class

    meta = build_on_meta(config, torch.float32)
    args, kwargs = example_inputs(meta, config, 1, seq_len)
    graph = capture_module(meta, args, kwargs, name="overhead-reference", seq_len=seq_len, causal=True,
                           config=config)
    views = sum(1 for op in graph.ops if op.kind == "view")
    others = len(graph.ops) - views
    torch.manual_seed(0)
    model = model_class(config)(config).float().eval()
    ids = torch.zeros(1, seq_len, dtype=torch.long)
    budget_s = 0.25 if bench.quick else 0.6  # ~1 ms calls: hundreds of repeats for a stable minimum
    name = f"{config.architectures[0]} {config.num_hidden_layers}L"
    with torch.inference_mode():
        cache = model(input_ids=ids[:, :-1], use_cache=True).past_key_values

        def step():
            model(input_ids=ids[:, :1], past_key_values=cache, use_cache=True)
            cache.crop(-1)

        calls = {"prefill": lambda: model(input_ids=ids, use_cache=False), "decode": step}
        points = []
        for phase, fn in calls.items():
            once = median_time(fn, repeats=3, warmup=2)
            seconds = median_time(fn, repeats=max(3 * bench.repeats, min(400, int(budget_s / once))))
            points.append(Point("eager_op", f"{name} {phase} ({others} ops, {views} views)", float(others),
                                float(views), seconds))
    return points
