"""Achievable-efficiency parameters of a device: how far real kernels get from the datasheet.

A roofline with peak numbers predicts what no kernel reaches. These parameters turn it into what
kernels achieve, and they are what `planner calibrate` measures and fits on a user's machine:

- GEMM efficiency grows with the problem: e(m, n, k) = gemm_max * m/(m + gemm_half_m)
  * d/(d + gemm_half_nk) with d = min(n, k) (small GEMMs and decode GEMVs do not reach peak);
- flash attention reaches `attention_max` of peak on large problems (same m-curve on queries);
- memory-bound kernels stream at `memory` x peak bandwidth;
- every kernel pays `kernel_overhead_s` (launch + tail), every collective call its link latency;
- collectives reach `comm` x line rate as nccl-tests bus bandwidth.

Values for GPUs are fitted to the kernel, layer and collective rows of the published measurement
set (`benchmarks/bench_validation.py` refits and reports them); a calibrated profile overrides
them per device (the `efficiency:` mapping of a profile YAML).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from ir.errors import UserError


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

    def gemm(self, m: float, n: float, k: float) -> float:
        """Fraction of peak reached by an m x k @ k x n GEMM.

        >>> round(Efficiency().gemm(4096, 4096, 4096), 3), round(Efficiency().gemm(1, 4096, 4096), 3)
        (0.773, 0.016)
        """
        d = min(n, k)
        return self.gemm_max * (m / (m + self.gemm_half_m)) * (d / (d + self.gemm_half_nk))

    def attention(self, q_len: float) -> float:
        return self.attention_max * (q_len / (q_len + self.gemm_half_m))

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


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
        return Efficiency(**calibrated)
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
        try:
            values[key] = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{origin}: efficiency.{key} must be a number, got {value!r}") from None
        if values[key] < 0:
            raise UserError(f"{origin}: efficiency.{key} must not be negative, got {value}")
    return Efficiency(**values)
