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

Values for GPUs are fitted to the kernel, layer and collective rows of the published measurement
set (`benchmarks/bench_validation.py` refits and reports them); a calibrated profile overrides
them per device (the `efficiency:` mapping of a profile YAML).
"""

from __future__ import annotations

import bisect
import functools
import math
from dataclasses import dataclass, fields, replace

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


# Defaults per device family: fitted by benchmarks/bench_validation.py on 34 rows of
# published_measurements.csv (GEMM/operator GT121-134, GT149-154, GT171-172, GT174-175; attention GT176,
# GT178; collectives GT155-161, GT163-164, GT167), by coordinate grid search on the mean |relative
# error|; 30 other rows are held out (LLMCompass per-op and per-layer GT135-148, Korthikanti training
# layers GT029-034, user-reported collectives GT168-169). Resulting MAPE: GEMM/operator 6% (24 rows),
# attention 0% (2 rows, one per family: fitted exactly), prefill ops+layer 16% (7, held out), decode
# ops+layer 11% (5, held out), training layer 24% (6, held out: 2022 Megatron, unfused attention),
# collectives 12% (14). Rerun the benchmark after changing anything here.
# - gemm_max: per family from large GEMMs (A100: LLMCompass 287 of 312 TFLOP/s, Vidur, MAMF 268;
#   H100: Vidur 706-838 of 989, MAMF 792); MI300X from its one MAMF row (782 of 1307, GT174).
# - gemm_half_m / gemm_half_nk: curve shape shared by A100 and H100 (too few small-shape rows per
#   family): LLMCompass M=64..512 and K=N=64..1024 rows, Vidur 1..4096-token rows.
# - attention_max: FlashAttention-3 forward 740 of 989 (GT176); FlashAttention-2 up to 73% (GT178).
# - memory: GEMV weight streaming (Vidur decode-size rows: 80% A100, 89% H100 of HBM peak).
# - kernel_overhead_s: Vidur CUDA-graph kernel times (4 us floor on H100, GT134); also the fixed part
#   of each collective call.
# - comm: Vidur 64 MiB all-reduce / send-recv rows and the NCCL maintainer's 370 GB/s (GT167).
# - _GPU_DEFAULT (devices without rows: L4, L40S, A10G, B200): geometric mean of A100 and H100.
# Not fitted: link latencies (nodes.yaml, 2 KiB all-reduce rows); freeing them moves H100 NVLink to
# 1.8 us and A100 to 3.9 us, trading the 2 KiB rows for the 1 MiB row, so they stay as derived.
_GPU_DEFAULT = Efficiency(gemm_max=0.85, gemm_half_m=90.0, gemm_half_nk=64.0, attention_max=0.74, memory=0.85,
                          kernel_overhead_s=5e-6, comm=0.72,
                          source="GPU family default: geometric mean of the A100 and H100 fits "
                                 "(benchmarks/bench_validation.py)")
_FAMILY = {
    "A100": replace(_GPU_DEFAULT, gemm_max=0.91, attention_max=0.73, memory=0.82, kernel_overhead_s=7e-6, comm=0.65,
                    source="A100: fitted by benchmarks/bench_validation.py (Vidur, LLMCompass, MAMF, FA2 rows)"),
    "H100": replace(_GPU_DEFAULT, gemm_max=0.79, attention_max=0.75, memory=0.89, kernel_overhead_s=4e-6, comm=0.80,
                    source="H100: fitted by benchmarks/bench_validation.py (Vidur, MAMF, FA3, NCCL rows)"),
    "H200": replace(_GPU_DEFAULT, gemm_max=0.79, attention_max=0.75, memory=0.89, kernel_overhead_s=4e-6, comm=0.80,
                    source="H200: the H100 fit (same SM and NVLink; no H200 rows)"),
    "MI300X": replace(_GPU_DEFAULT, gemm_max=0.62,
                      source="MI300X: gemm_max from MAMF 782 of 1307 TFLOP/s (GT174), rest the GPU default"),
}
# CPUs run eager PyTorch: small ops are dominated by dispatcher overhead (~10 us per aten op on a
# 2-core host, measured by `planner calibrate`), GEMMs reach ~60% of the FMA peak via oneDNN/MKL.
_CPU_DEFAULT = Efficiency(gemm_max=0.6, gemm_half_m=16.0, gemm_half_nk=64.0, attention_max=0.3,
                          memory=0.6, kernel_overhead_s=10e-6, comm=0.5,
                          source="CPU default before calibration; run `planner calibrate --device cpu`")


def default_efficiency(device) -> Efficiency:
    """The efficiency for a DeviceSpec: a calibrated profile's, else the family default."""
    calibrated = getattr(device, "efficiency", None)
    if calibrated:
        tables = {name: tuple(tuple(row) for row in calibrated.get(name, ())) for name in GEMM_TABLES}
        return Efficiency(**{**calibrated, **tables})
    if getattr(device, "kind", "gpu") == "cpu":
        return _CPU_DEFAULT
    for family, eff in _FAMILY.items():
        if device.name.upper().startswith(family):
            return eff
    return _GPU_DEFAULT


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
