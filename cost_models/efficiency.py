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


# Defaults per device family. Derivations (each refit by benchmarks/bench_validation.py):
# - gemm_max: large bf16 GEMMs reach ~90% of peak on A100 (LLMCompass measured 286.9 of 312 TFLOP/s
#   at M=8192, K=N=12288) and ~75% on H100 SXM (cuBLAS ~740 of 989 TFLOP/s, NVIDIA's published
#   Transformer Engine GEMM numbers); 0.80 is the family default, A100/H100 below.
# - gemm_half_m: LLMCompass A100 rows: M=64 reaches 101.7 TFLOP/s, M=512 252.7 (ratio fits ~40-60).
# - attention_max: FlashAttention-2 forward reaches 50-73% of A100 peak (Dao 2023, Fig. 4).
# - memory: STREAM-like kernels reach 80-90% of HBM peak (vendor best practices; nvbandwidth).
# - kernel_overhead_s: CUDA launch + tail ~4-6 us per kernel (Vidur RMSNorm row: 4 us for 1 token).
# - comm: nccl-tests bus bandwidth ~80% of NVLink line rate on DGX systems.
_GPU_DEFAULT = Efficiency(source="family default for GPUs (derivations in cost_models/efficiency.py)")
_FAMILY = {
    "A100": replace(_GPU_DEFAULT, gemm_max=0.90, source="A100: LLMCompass GEMM rows (cost_models/efficiency.py)"),
    "H100": replace(_GPU_DEFAULT, gemm_max=0.75, source="H100: cuBLAS bf16 ~740/989 TFLOP/s"),
    "H200": replace(_GPU_DEFAULT, gemm_max=0.75, source="H200: same SM as H100"),
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
