"""Calibration: fit a device's peak FLOP/s, memory bandwidth and `Efficiency` to measurements on
this machine, and write them as a device profile YAML (what `planner calibrate` does).

`calibrate()` runs the microbenchmarks of `cost_models.microbench` (GEMM sweep, memory streaming,
attention, per-op overhead, 2-process all-reduce) and fits, by coordinate search on squared log
errors, the same formula `cost_models.compute.op_time` uses:

    t = max(flops / (peak x e), bytes / (bandwidth x memory)) + kernel_overhead_s

with e = `Efficiency.gemm(m, n, k)` for GEMMs, `Efficiency.attention(rows)` for attention and 1
otherwise. Peak and efficiency only enter as a product for GEMMs, so `peak` is pinned to the larger
of the detected datasheet-style peak and the best measured GEMM rate, and `bandwidth` to the best
measured streaming rate; the fractions are fitted against those. The GEMM sweep is a full
m x n x k grid, so its measured efficiencies are also kept as `gemm_table` (`gemm_table()`), which
the cost model interpolates instead of the fitted curve; on CPUs a second grid timed in a shuffled
sequence of shapes (`gemm_table_streaming`) prices models whose weights outgrow the last-level cache
(`streaming_above_bytes`), see `microbench.bench_gemm`. The all-reduce points give the
loopback link (t = 2 x latency + overhead + S / bus bandwidth for two ranks, `comm` = 1).

The profile is a device profile (top-level `device:`, read by `load_device_profile`) and at the same
time a one-node cluster file (`devices:` and `nodes:` of the schema in `cost_models.cluster`), so
`--cluster PROFILE.yaml` works; a `calibration:` mapping records how it was measured.
"""

from __future__ import annotations

import datetime
import logging
import math
import platform
import re
import statistics
import time
from dataclasses import dataclass, replace

import numpy as np
import yaml

from cost_models.compute import gemm_efficiency
from cost_models.efficiency import Efficiency, table_is_grid
from cost_models.microbench import (
    Bench,
    Point,
    bench_all_reduce,
    bench_attention,
    bench_eager_model,
    bench_gemm,
    bench_memory,
    bench_overhead,
    last_level_cache_bytes,
)
from ir.errors import UserError

log = logging.getLogger(__name__)

_FITTED = ("gemm_max", "gemm_half_m", "gemm_half_nk", "attention_max", "attention_half_m", "memory", "kernel_overhead_s")
_BOUNDS = {"gemm_max": (1e-3, 1.0), "gemm_half_m": (0.05, 4096.0), "gemm_half_nk": (0.05, 16384.0),
           "attention_max": (1e-3, 1.0), "attention_half_m": (0.01, 4096.0), "memory": (0.05, 1.0),
           "kernel_overhead_s": (1e-7, 1e-3)}


@dataclass(frozen=True)
class Fit:
    """Fitted device numbers and efficiency, with the relative errors of every point."""

    peak_flops: float
    bandwidth_bytes_per_s: float
    eff: Efficiency
    link_bandwidth_bytes_per_s: float | None
    link_latency_s: float | None
    errors: dict[str, list[float]]  # kind -> |predicted / measured - 1| per point

    @property
    def residual(self) -> float:
        """Mean relative error over all points."""
        values = [e for errs in self.errors.values() for e in errs]
        return statistics.fmean(values) if values else 0.0


def predict(point: Point, peak: float, bandwidth: float, eff: Efficiency, execution: str = "eager") -> float:
    """Seconds the cost model gives a microbenchmark point (the formula of `compute.op_time`).

    >>> p = Point("memory", "copy", 0.0, 2e9, 0.1)
    >>> round(predict(p, 1e11, 2e10, Efficiency(memory=1.0, kernel_overhead_s=0.0)), 3)
    0.1
    """
    if point.kind == "gemm":
        e = gemm_efficiency(eff, *point.gemm_mnk, execution)
    elif point.kind == "attention":
        e = eff.attention(point.query_rows)
    else:
        e = 1.0
    compute = point.flops / (peak * max(e, 1e-9)) if point.flops else 0.0
    return max(compute, point.bytes / (bandwidth * eff.memory)) + eff.kernel_overhead_s


def _loss(points: list[Point], peak: float, bandwidth: float, eff: Efficiency, execution: str) -> float:
    return sum(math.log(predict(p, peak, bandwidth, eff, execution) / p.seconds) ** 2 for p in points)


def _coordinate_search(points: list[Point], peak: float, bandwidth: float, eff: Efficiency,
                       execution: str, passes: int = 8, names: tuple[str, ...] = _FITTED) -> Efficiency:
    """Minimise the squared log error one parameter at a time on shrinking multiplicative grids."""
    best = _loss(points, peak, bandwidth, eff, execution)
    for i in range(passes):
        span = math.log(8.0) * 0.6**i
        for name in names:
            low, high = _BOUNDS[name]
            current = getattr(eff, name)
            for factor in np.exp(np.linspace(-span, span, 25)):
                candidate = replace(eff, **{name: float(min(max(current * factor, low), high))})
                loss = _loss(points, peak, bandwidth, candidate, execution)
                if loss < best:
                    best, eff = loss, candidate
    return eff


def _fit_link(points: list[Point], overhead_s: float) -> tuple[float | None, float | None]:
    """(bus bandwidth, per-step latency) of the loopback link from all-reduce points, by least squares."""
    if len(points) < 2:
        return None, None
    sizes = np.array([p.bytes for p in points])
    times = np.array([p.seconds for p in points])
    weights = 1.0 / times  # relative errors: small messages count as much as large ones
    design = np.stack([np.ones_like(sizes), sizes], axis=1) * weights[:, None]
    (alpha, inverse_bw), *_ = np.linalg.lstsq(design, times * weights, rcond=None)
    if inverse_bw <= 0:
        inverse_bw = float(np.min(times / sizes))
    latency = max((alpha - overhead_s) / 2.0, 1e-6)
    return float(1.0 / inverse_bw), float(latency)


def fit(points: list[Point], detected_peak: float, execution: str = "eager") -> Fit:
    """Fit peak, bandwidth, `Efficiency` and the loopback link to measured points.

    >>> pts = [Point("memory", "copy", 0.0, 2e8, 0.01), Point("overhead", "tiny", 16, 192, 3e-6),
    ...        Point("gemm", "big", 2e9, 1.2e7, 0.025, gemm_mnk=(1000, 1000, 1000))]
    >>> f = fit(pts, 1e11)
    >>> round(f.bandwidth_bytes_per_s / 1e9), f.residual < 0.05
    (20, True)
    """
    kernels = [p for p in points if p.kind not in ("all_reduce", "eager_op")]
    tiny = [p.seconds for p in kernels if p.kind == "overhead"]
    overhead = statistics.median(tiny) if tiny else 5e-6
    streams = [p.bytes / max(p.seconds - overhead, 1e-9) for p in kernels if p.kind == "memory"]
    bandwidth = max(streams) if streams else 1e10
    gemm_rates = [p.flops / p.seconds for p in kernels if p.kind == "gemm"]
    peak = max([detected_peak, *gemm_rates])
    start = Efficiency(gemm_max=max(gemm_rates, default=0.5 * peak) / peak, gemm_half_m=16.0,
                       gemm_half_nk=64.0, attention_max=0.3, attention_half_m=16.0, memory=1.0,
                       kernel_overhead_s=overhead, comm=1.0)
    gemms = [p for p in kernels if p.kind == "gemm" and p.regime == "resident"]
    kernels = [p for p in kernels if not (p.kind == "gemm" and p.regime == "streaming")]
    table = gemm_table(gemms, peak, overhead)
    streaming = gemm_table([p for p in points if p.kind == "gemm" and p.regime == "streaming"], peak, overhead)
    if table:  # streaming, attention and overhead from their own points; the curve only extends the table
        others = [p for p in kernels if p.kind != "gemm"]
        eff = _coordinate_search(others, peak, bandwidth, start, execution, names=("attention_max", "attention_half_m", "memory"))
        eff = _coordinate_search(gemms, peak, bandwidth, eff, execution, names=("gemm_max", "gemm_half_m", "gemm_half_nk"))
    else:
        eff = _coordinate_search(kernels, peak, bandwidth, start, execution)
    errors: dict[str, list[float]] = {}
    for p in kernels:
        errors.setdefault(p.kind, []).append(abs(predict(p, peak, bandwidth, eff, execution) / p.seconds - 1.0))
    eff = replace(eff, gemm_table=table, gemm_table_streaming=streaming,
                  streaming_above_bytes=last_level_cache_bytes() / 2 if streaming else None)
    eager = [p for p in points if p.kind == "eager_op"]
    if eager:
        eff = replace(eff, **eager_costs(eager))
    link_bw, link_latency = _fit_link([p for p in points if p.kind == "all_reduce"], eff.kernel_overhead_s)
    for p in points:
        if p.kind == "eager_op":
            errors.setdefault("eager_op", []).append(abs(_eager_predict(p, eff) / p.seconds - 1.0))
        if p.kind == "all_reduce" and link_bw:
            predicted = 2 * link_latency + eff.kernel_overhead_s + p.bytes / link_bw
            errors.setdefault("all_reduce", []).append(abs(predicted / p.seconds - 1.0))
    return Fit(peak, bandwidth, eff, link_bw, link_latency, errors)


def eager_costs(points: list[Point]) -> dict:
    """Per-op costs of eager model code from whole-model times of tiny models (work negligible).

    Least squares of t = c_phase + a_phase x compute ops + v x views over the prefill and decode
    points (`flops` holds a point's compute-op count, `bytes` its views), in relative error so every
    model counts alike. Ops inside model code pay Python module and dispatch overhead, not only
    dispatch; a cached decode step skips the mask and position set-up of a prefill, so each phase has
    its own `a`; views (no kernel) share `v`; `c` is the fixed cost of one forward call (mask, position
    and cache set-up, output objects), separable because the references come at two depths. Simpler
    models are tried in turn when a fit comes out negative or the points do not separate its terms:
    no view term, then no call term, then the median cost per op of each phase.

    >>> pts = [Point("eager_op", f"m {ph}", n, v, c + n * a + v * 1e-6) for ph, a, c in
    ...        (("prefill", 6e-6, 3e-4), ("decode", 4e-6, 2e-4)) for n, v in ((80, 20), (60, 70), (160, 40))]
    >>> {k: round(x * 1e6, 2) for k, x in eager_costs(pts).items()}  # doctest: +NORMALIZE_WHITESPACE
    {'kernel_overhead_s': 6.0, 'decode_overhead_s': 4.0, 'view_overhead_s': 1.0, 'call_overhead_s': 300.0,
     'decode_call_overhead_s': 200.0}
    """
    times = np.array([p.seconds for p in points])
    decode = np.array([1.0 if "decode" in p.label else 0.0 for p in points])
    prefill = 1.0 - decode
    ops, views = np.array([p.flops for p in points]), np.array([p.bytes for p in points])
    models = (  # (term names, columns)
        (("kernel", "decode", "view", "call", "decode_call"), (ops * prefill, ops * decode, views, prefill, decode)),
        (("kernel", "decode", "call", "decode_call"), ((ops + views) * prefill, (ops + views) * decode, prefill, decode)),
        (("kernel", "decode", "view"), (ops * prefill, ops * decode, views)),
    )
    for names, columns in models:
        design = np.stack(columns, axis=1) / times[:, None]
        if np.linalg.matrix_rank(design) < len(names):
            continue
        solution, *_ = np.linalg.lstsq(design, np.ones_like(times), rcond=None)
        fitted = dict(zip(names, (float(x) for x in solution)))
        if fitted["kernel"] > 0 and fitted["decode"] > 0 and all(x >= 0 for x in fitted.values()):
            break
    else:
        def per_op(decode_phase: bool) -> float:
            picked = [p.seconds / (p.flops + p.bytes) for p in points if ("decode" in p.label) == decode_phase]
            return float(np.median(picked)) if picked else float("nan")

        first, second = per_op(False), per_op(True)
        fitted = {"kernel": second if math.isnan(first) else first, "decode": first if math.isnan(second) else second}

    def rounded(name: str) -> float | None:
        return float(f"{fitted[name]:.4g}") if name in fitted else None

    return {"kernel_overhead_s": rounded("kernel"), "decode_overhead_s": rounded("decode"),
            "view_overhead_s": rounded("view"), "call_overhead_s": rounded("call"),
            "decode_call_overhead_s": rounded("decode_call")}


def _eager_predict(p: Point, eff: Efficiency) -> float:
    decode = "decode" in p.label
    per_op = eff.decode_overhead_s if decode and eff.decode_overhead_s else eff.kernel_overhead_s
    view = eff.view_overhead_s if eff.view_overhead_s is not None else per_op
    return eff.call_overhead(decode) + p.flops * per_op + p.bytes * view


def gemm_table(points: list[Point], peak: float, overhead_s: float) -> tuple:
    """(m, n, k, efficiency) rows that reproduce each measured GEMM (its time less the dispatch
    overhead, as compute at `peak` x efficiency), or () unless the points form a full m x n x k grid.

    >>> pts = [Point("gemm", "", 2.0 * m * 8 * 8, 0.0, 1e-6 * m, gemm_mnk=(m, 8, 8)) for m in (1, 2)]
    >>> gemm_table(pts, 1e9, 0.0)
    ((1.0, 8.0, 8.0, 0.128), (2.0, 8.0, 8.0, 0.128))
    """
    def efficiency(p: Point) -> float:
        return float(f"{min(p.flops / (peak * max(p.seconds - overhead_s, 1e-9)), 1.0):.4g}")

    rows = tuple(sorted((float(m), float(n), float(k), efficiency(p)) for p in points for m, n, k in [p.gemm_mnk]))
    return rows if rows and table_is_grid(rows) else ()


# --- running and writing -------------------------------------------------------------------------
def _check_device(device: str) -> None:
    import torch

    if device not in ("cpu", "cuda"):
        raise UserError(f"unknown calibration device {device!r}; use cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible to torch on this machine; "
                        "use --device cpu or run on a GPU host")


def measure(device: str = "cpu", quick: bool = False, collectives: bool = True) -> list[Point]:
    """Run every microbenchmark on `device` (fp32 on CPU, bf16 on CUDA); returns the points."""
    _check_device(device)
    bench = Bench(device=device, dtype="fp32" if device == "cpu" else "bf16", repeats=3 if quick else 5,
                  quick=quick)
    # the eager model first: a heap not yet churned by the large GEMM buffers, as in a fresh model process
    steps = [bench_eager_model] if device == "cpu" else []
    steps += [bench_overhead, bench_memory, bench_gemm, bench_attention]
    steps += [bench_all_reduce] if collectives else []
    points: list[Point] = []
    for step in steps:
        start = time.perf_counter()
        points += step(bench)
        log.info("%s: %.1f s", step.__name__, time.perf_counter() - start)
    return points


def _device_facts(device: str) -> dict:
    """Name, vendor, memory and the datasheet-style peak to pin against, for the calibrated device."""
    import torch

    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        name = re.sub(r"[^A-Za-z0-9.]+", "-", props.name.replace("NVIDIA ", "")).strip("-")
        return {"name": f"{name}-calibrated", "vendor": "nvidia", "kind": "gpu", "peak": 0.0,
                "memory_bytes": int(props.total_memory), "memory_source": "torch.cuda total_memory"}
    from cost_models.hardware import get_device

    cpu = get_device("cpu")
    cores = max(int(re.search(r"(\d+) cores", cpu.notes).group(1)) if "cores" in cpu.notes else 1, 1)
    share = min(torch.get_num_threads(), cores) / cores  # torch uses this many of the cores
    return {"name": "cpu-calibrated", "vendor": "host", "kind": "cpu", "peak": cpu.peak_flops["fp32"] * share,
            "memory_bytes": cpu.memory_bytes, "memory_source": cpu.source_of("memory_bytes")}


def calibrate(device: str = "cpu", quick: bool = False, threads: int | None = None,
              collectives: bool = True) -> dict:
    """Measure this machine and return a device profile dict (see the module docstring).

    `threads` sets torch's intra-op threads for the run (recorded in the profile); None keeps torch's.

    >>> profile = calibrate("cpu", quick=True)            # doctest: +SKIP
    >>> profile["device"]["efficiency"]["kernel_overhead_s"]  # doctest: +SKIP
    4.1e-06
    """
    import torch

    _check_device(device)
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        points = measure(device, quick, collectives)
        facts = _device_facts(device)
        result = fit(points, facts["peak"], "eager" if device == "cpu" else "fused")
        seconds = time.perf_counter() - start
        return build_profile(result, points, facts, device, torch.get_num_threads(), seconds)
    finally:
        torch.set_num_threads(previous)


def build_profile(result: Fit, points: list[Point], facts: dict, device: str, threads: int,
                  seconds: float) -> dict:
    """The profile dict: `calibration:`, `device:` (a DeviceSpec mapping), `devices:` and `nodes:`."""
    import torch

    dtype = "fp32" if device == "cpu" else "bf16"
    when = datetime.date.today().isoformat()
    host = platform.node() or "unknown host"
    basis = (f"measured by planner calibrate on {when}, {host}, {len(points)} points, "
             f"fit residual {result.residual:.1%}")
    eff = replace(result.eff, source=basis)
    spec = {
        "name": facts["name"], "vendor": facts["vendor"], "kind": facts["kind"],
        "peak_flops": {dtype: float(f"{result.peak_flops:.4g}")},
        "memory_bytes": facts["memory_bytes"],
        "memory_bandwidth_bytes_per_s": float(f"{result.bandwidth_bytes_per_s:.4g}"),
        "efficiency": {k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in eff.to_dict().items()},
        "sources": {
            "peak_flops": f"{basis}; max of the detected peak and the best {dtype} GEMM rate",
            "memory_bandwidth_bytes_per_s": f"{basis}; best large copy/add rate",
            "memory_bytes": facts["memory_source"],
        },
        "notes": f"torch {torch.__version__}, {threads} intra-op threads, {dtype} kernels",
    }
    return {
        "name": facts["name"],
        "calibration": {
            "date": when, "host": host, "device": device, "dtype": dtype, "torch_threads": threads,
            "torch_version": str(torch.__version__), "points": len(points), "seconds": round(seconds, 1),
            "fit_residual": round(result.residual, 4),
            "residual_by_kind": {k: round(statistics.fmean(v), 4) for k, v in result.errors.items()},
        },
        "device": spec,
        "devices": [spec],  # the same mapping (a YAML alias): the file is also a cluster file
        "nodes": [_node_entry(result, spec["name"], device)],
    }


def _node_entry(result: Fit, name: str, device: str) -> dict:
    entry: dict = {"device": name, "devices_per_node": 1, "nics": 1}
    if result.link_bandwidth_bytes_per_s:
        backend = "gloo" if device == "cpu" else "nccl"
        entry["intra_link"] = {
            "name": f"{backend}-measured", "bandwidth_bytes_per_s": float(f"{result.link_bandwidth_bytes_per_s:.4g}"),
            "latency_s": float(f"{result.link_latency_s:.3g}"),
            "source": f"2-process {backend} all-reduce measured by planner calibrate (bus bandwidth; comm = 1)"}
    else:
        entry["intra_link"] = "gloo-loopback" if device == "cpu" else "pcie-gen5-x16"
    entry["nic_link"] = "ethernet-10g" if device == "cpu" else "ib-ndr-400g"
    return entry


def profile_to_yaml(profile: dict) -> str:
    """YAML text of a profile; `devices:` refers to `device:` through an anchor, so edit one place.

    >>> text = profile_to_yaml({"device": {"name": "x"}, "devices": [{"name": "x"}], "nodes": []})
    >>> "&dev" in text and "*dev" in text
    True
    """
    header = ("# Device profile written by `planner calibrate`. Load it with --cluster THIS_FILE or\n"
              "# cost_models.hardware.load_device_profile; `devices:` aliases `device:`.\n")
    doc = {k: v for k, v in profile.items() if k not in ("device", "devices")}
    nodes = doc.pop("nodes", [])
    body = yaml.safe_dump(doc, sort_keys=False, width=120)
    device = yaml.safe_dump({"device": profile["device"]}, sort_keys=False, width=120)
    device = device.replace("device:\n", "device: &dev\n", 1)
    rest = yaml.safe_dump({"nodes": nodes}, sort_keys=False, width=120)
    return header + body + device + "devices: [*dev]\n" + rest
