"""Achievable-efficiency parameters of a device: how far real kernels get from the datasheet.

A roofline with peak numbers predicts what no kernel reaches. These parameters turn it into what
kernels achieve, and they are what `planner calibrate` measures and fits on a user's machine:

- GEMM efficiency grows with the problem: e(m, n, k) = gemm_max * m/(m + gemm_half_m)
  * d/(d + gemm_half_nk) with d = min(n, k) (small GEMMs and decode GEMVs do not reach peak);
- flash attention reaches `attention_max` of peak on large problems (same m-curve on queries);
- memory-bound kernels stream at `memory` x peak bandwidth;
- every kernel pays `kernel_overhead_s` (launch + tail), every collective call its link latency;
  eager CPU execution may carry its own per-op cost inside decode steps (`decode_overhead_s`: Hugging
  Face's prefill builds masks and positions in Python that a cached decode step skips), and attention
  its own curve half point (`attention_half_m`: CPU flash attention is not a GEMM's shape curve);
  eager views (no kernel, only a dispatcher and Python call) cost `view_overhead_s`; an eager forward
  call pays a fixed cost once besides its ops (`call_overhead_s` for a prefill, `decode_call_overhead_s`
  for a cached decode step: Hugging Face's mask, position and cache set-up and output objects, the
  same for 2 layers or 40);
- collectives reach `comm` x line rate as nccl-tests bus bandwidth;
- optionally, `gemm_table`: GEMM efficiencies measured by `planner calibrate` on a grid of (m, n, k),
  interpolated log-linearly (the per-shape profiling tables of Vidur and AIConfigurator). BLAS
  libraries change blocking with the shape and slow down once the weights and outputs outgrow the
  last-level cache (a 50257 x 768 vocabulary projection reaches about 60% of the rate of a
  768 x 768 one on a 32 MiB-L3 host), which no closed-form curve captures; beyond the grid's m
  range the curve's m-dependence extends the table, and n, k are clamped to the grid.
  `gemm_table_streaming` is the same grid timed in a shuffled sequence of shapes; it prices the GEMMs
  of models whose weights per device exceed `streaming_above_bytes` (half the last-level cache: a
  cyclic pass over a working set near the cache size thrashes it, and a VM shares its host's cache),
  whose layers' GEMMs evict each other's operands (see `microbench.bench_gemm`).

Values per device family live in `data/fitted_gpu.yaml` with the rows each was fitted on, its fit
error and its source (`benchmarks/end_to_end_fit.py` refits them); a calibrated profile overrides
them per device (the `efficiency:` mapping of a profile YAML).
"""

from __future__ import annotations

import bisect
import functools
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path

import yaml

from ir.errors import UserError

GEMM_TABLES = ("gemm_table", "gemm_table_streaming")  # measured grids, (m, n, k, efficiency) rows


@dataclass(frozen=True)
class Efficiency:
    """Fractions of peak and fixed overheads; see the module docstring for the model."""

    gemm_max: float = 0.80
    gemm_half_m: float = 48.0
    gemm_half_nk: float = 96.0
    attention_max: float = 0.60
    memory: float = 0.85
    kernel_overhead_s: float = 5e-6
    comm: float = 0.80
    fp8_gemm: float = 0.8  # fp8 GEMMs reach this share of the 16-bit efficiency, against the fp8 peak
    grouped_gemm: float = 0.7  # MoE grouped (expert) GEMMs reach this share of a dense GEMM's efficiency
    sustained_compute: float = 1.0  # training: share of the kernel benchmarks' FLOP/s kept under hours of load
    engine_sustained_compute: float = 1.0  # inference engines: the same share under an engine's iterations
    iteration_overhead_s: float = 0.0  # serving engines: host time per iteration (schedule, sample, launch)
    cpp_iteration_overhead_s: float = 0.0  # the same for an engine with a C++ executor (TensorRT-LLM)
    request_overhead_s: float = 0.0  # serving front end per request, on its first token (HTTP, tokenizer)
    collective_launch_s: float = 0.0  # per collective call on GPU links, beyond NCCL's latency model
    custom_allreduce_latency_s: float = 3e-6  # barrier + launch of an engine's one-shot all-reduce
    source: str = ""
    gemm_table: tuple[tuple[float, float, float, float], ...] = ()  # (m, n, k, efficiency), a full grid
    gemm_table_streaming: tuple[tuple[float, float, float, float], ...] = ()  # the grid in a shape sequence
    streaming_above_bytes: float | None = None  # weights per device above which the streaming grid applies
    attention_half_m: float | None = None  # the attention curve's own half point (None: gemm_half_m)
    decode_overhead_s: float | None = None  # eager: per-op cost inside a decode step (None: kernel_overhead_s)
    view_overhead_s: float | None = None  # eager: cost of a view op (no kernel; None: the per-op cost)
    call_overhead_s: float | None = None  # eager: fixed cost of one prefill forward call (None: 0)
    decode_call_overhead_s: float | None = None  # eager: fixed cost of one decode-step call (None: 0)

    def gemm(self, m: float, n: float, k: float, streaming: bool = False) -> float:
        """Fraction of peak reached by an m x k @ k x n GEMM.

        >>> round(Efficiency().gemm(4096, 4096, 4096), 3), round(Efficiency().gemm(1, 4096, 4096), 3)
        (0.773, 0.016)
        >>> t = Efficiency(gemm_table=((1, 8, 8, 0.1), (1, 64, 8, 0.2), (4, 8, 8, 0.3), (4, 64, 8, 0.4)))
        >>> round(t.gemm(2, 8, 8), 3), round(t.gemm(4, 512, 8), 3), round(t.gemm(4, 16, 8), 3)
        (0.173, 0.4, 0.33)
        """
        if streaming and self.gemm_table_streaming:
            return _table_gemm(self, m, n, k, self.gemm_table_streaming)
        if self.gemm_table:
            return _table_gemm(self, m, n, k, self.gemm_table)
        return self._curve(m, n, k)

    def _curve(self, m: float, n: float, k: float) -> float:
        d = min(n, k)
        return self.gemm_max * (m / (m + self.gemm_half_m)) * (d / (d + self.gemm_half_nk))

    def attention(self, q_len: float) -> float:
        half = self.gemm_half_m if self.attention_half_m is None else self.attention_half_m
        return self.attention_max * (q_len / (q_len + half))

    def under_sustained_load(self, training: bool = True) -> Efficiency:
        """This efficiency with the compute ceilings scaled by `sustained_compute` (training: GEMMs back to back
        for hours) or `engine_sustained_compute` (an inference engine's iterations), at the clocks the board's
        power limit allows (a kernel benchmark's burst runs faster)."""
        s = self.sustained_compute if training else self.engine_sustained_compute
        if s == 1.0:
            return self
        return replace(self, gemm_max=self.gemm_max * s, attention_max=self.attention_max * s,
                       gemm_table=tuple((m, n, k, e * s) for m, n, k, e in self.gemm_table),
                       gemm_table_streaming=tuple((m, n, k, e * s) for m, n, k, e in self.gemm_table_streaming),
                       sustained_compute=1.0, engine_sustained_compute=1.0)

    def host_overhead(self, runtime: str) -> float:
        """Host time per inference iteration of a runtime (`parallel_config.Options.runtime`)."""
        return {"engine": self.iteration_overhead_s, "cpp-engine": self.cpp_iteration_overhead_s}.get(runtime, 0.0)

    def call_overhead(self, decode: bool) -> float:
        """Fixed seconds of one eager forward call (0 unless calibrated)."""
        value = self.decode_call_overhead_s if decode else self.call_overhead_s
        return value or 0.0

    def to_dict(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for optional in ("attention_half_m", "decode_overhead_s", "view_overhead_s", "call_overhead_s",
                         "decode_call_overhead_s", "streaming_above_bytes"):
            if values[optional] is None:
                values.pop(optional)
        for table in GEMM_TABLES:
            if not getattr(self, table):
                values.pop(table)
            else:
                values[table] = [list(row) for row in getattr(self, table)]
        return values


@functools.lru_cache(maxsize=16)
def _grid(table) -> tuple[list[float], list[float], list[float], dict]:
    ms, ns, ks = (sorted({row[i] for row in table}) for i in range(3))
    return ms, ns, ks, {(row[0], row[1], row[2]): row[3] for row in table}


def _bracket(axis: list[float], x: float) -> tuple[float, float, float]:
    """(low, high, weight of high) around x on a sorted axis, in log space, clamped to its ends."""
    if x <= axis[0] or len(axis) == 1:
        return axis[0], axis[0], 0.0
    if x >= axis[-1]:
        return axis[-1], axis[-1], 0.0
    i = bisect.bisect_right(axis, x)
    lo, hi = axis[i - 1], axis[i]
    return lo, hi, math.log(x / lo) / math.log(hi / lo)


def _table_gemm(eff: Efficiency, m: float, n: float, k: float, table) -> float:
    """Trilinear interpolation of a measured grid in log m, log n, log k (see the module docstring)."""
    ms, ns, ks, cells = _grid(table)
    m_in = min(max(m, ms[0]), ms[-1])
    scale = eff._curve(m, n, k) / max(eff._curve(m_in, n, k), 1e-12)  # the curve's m-trend outside the grid
    total = 0.0
    for m_at, wm in _corners(ms, m_in):
        for n_at, wn in _corners(ns, n):
            for k_at, wk in _corners(ks, k):
                total += wm * wn * wk * math.log(cells[(m_at, n_at, k_at)])
    return min(math.exp(total) * scale, 1.0)


def _corners(axis: list[float], x: float) -> list[tuple[float, float]]:
    lo, hi, w = _bracket(axis, x)
    return [(lo, 1.0 - w), (hi, w)] if w > 0 else [(lo, 1.0)]


def table_is_grid(rows) -> bool:
    """Whether (m, n, k, e) rows cover every combination of their m, n and k values once, e > 0."""
    ms, ns, ks, cells = _grid(rows)
    return len(cells) == len(rows) == len(ms) * len(ns) * len(ks) and all(row[3] > 0 for row in rows)


# Values per device family are data: `data/fitted_gpu.yaml` holds, for every parameter of every
# family, its value, the rows it was fitted on, its fit error and its source (written by
# `benchmarks/end_to_end_fit.py --write`, which refits them: kernel-level parameters on the kernel and
# collective rows of benchmarks/data/calibration/published_measurements.csv, end-to-end ones on the development set).
FITTED_FILE = Path(__file__).parent / "data" / "fitted_gpu.yaml"
FAMILIES = ("A100", "H100", "H200", "MI300X", "GPU", "CPU")  # GPU: devices without rows of their own


@functools.cache
def fitted_records() -> dict:
    """{family: {parameter: {value, fitted_on, fit_error, source}}} from `data/fitted_gpu.yaml`."""
    data = yaml.safe_load(FITTED_FILE.read_text()) or {}
    families = data.get("families", {})
    missing = [f for f in FAMILIES if f not in families]
    if missing:
        raise UserError(f"{FITTED_FILE}: no parameters for {', '.join(missing)}; rerun benchmarks/end_to_end_fit.py")
    return families


@functools.cache
def family_efficiency(family: str) -> Efficiency:
    """The Efficiency of a device family from its fitted records (see `fitted_records`)."""
    records = fitted_records()[family]
    known = {f.name for f in fields(Efficiency)}
    values = {name: float(rec["value"]) for name, rec in records.items() if name in known and name != "source"}
    sources = sorted({str(rec.get("source", "")).split(":")[0] for rec in records.values()} - {""})
    return Efficiency(**values, source=f"{family}: data/fitted_gpu.yaml ({'; '.join(sources)[:200]})")


def default_efficiency(device) -> Efficiency:
    """The efficiency for a DeviceSpec: a calibrated profile's, else the family default."""
    calibrated = getattr(device, "efficiency", None)
    if calibrated:
        tables = {name: tuple(tuple(row) for row in calibrated.get(name, ())) for name in GEMM_TABLES}
        return Efficiency(**{**calibrated, **tables})
    return family_efficiency(family_of(device))


def family_of(device) -> str:
    """The fitted family a device belongs to: its name's prefix (A100, H100, H200, MI300X), CPU for
    CPUs, else the GPU default.

    >>> from types import SimpleNamespace as N
    >>> family_of(N(name="H100-PCIE", kind="gpu")), family_of(N(name="L40S", kind="gpu"))
    ('H100', 'GPU')
    """
    if getattr(device, "kind", "gpu") == "cpu":
        return "CPU"
    return next((f for f in FAMILIES[:4] if device.name.upper().startswith(f)), "GPU")


def efficiency_from_mapping(data: dict, origin: str) -> Efficiency:
    """An Efficiency from a profile's `efficiency:` mapping; unknown keys are an error."""
    known = {f.name for f in fields(Efficiency)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"{origin}: unknown efficiency keys {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    values = {}
    for key, value in data.items():
        if key == "source":
            values[key] = str(value)
            continue
        if key in GEMM_TABLES:
            values[key] = _table_from_yaml(value, origin, key)
            continue
        try:
            values[key] = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{origin}: efficiency.{key} must be a number, got {value!r}") from None
        if values[key] < 0:
            raise UserError(f"{origin}: efficiency.{key} must not be negative, got {value}")
    return Efficiency(**values)


def _table_from_yaml(value, origin: str, key: str = "gemm_table") -> tuple:
    try:
        rows = tuple(tuple(float(x) for x in row) for row in value)
    except (TypeError, ValueError):
        raise UserError(f"{origin}: efficiency.{key} must be a list of [m, n, k, efficiency] rows") from None
    if not rows or any(len(row) != 4 or min(row) <= 0 for row in rows) or not table_is_grid(rows):
        raise UserError(f"{origin}: efficiency.{key} must list positive [m, n, k, efficiency] rows for every "
                        f"combination of its m, n and k values; re-run `planner calibrate`")
    return rows
