"""Collective algorithms and protocols by message size: NCCL's choice, and engines' custom all-reduce.

NCCL predicts, for every (algorithm, protocol), time = latency + bytes / algorithm bandwidth and runs
the fastest (NVIDIA/nccl src/graph/tuning.cc); this module evaluates the same model with its constants
(`data/collectives.yaml`) on one level of links:

- ring over n ranks, `steps` = 2(n-1) for all-reduce, n-1 for all-gather / reduce-scatter / all-to-all,
  1 for send/recv: latency = base(proto) + steps x hop(link class, proto); algorithm bandwidth =
  bus bandwidth x n / steps, where the bus bandwidth is the link's achievable rate (line rate x
  `Efficiency.comm`) x the protocol's share: LL moves 8-byte words carrying 4 bytes of data and
  reaches 1/4 of it for all-reduce (1/3 otherwise, capped at 87.7 GB/s per node), LL128 0.92 (NVLink
  only), Simple all of it. Small messages pick LL (lowest latency), large ones Simple.
- tree (across nodes): latency base + 2 log2(nodes) hops, algorithm bandwidth 0.92 x bus / 2.
- NVLS (NVLink SHARP on NVSwitch 3+, all-reduce in one node): latency 23 us, the switch reduces, bus
  bandwidth `nvls_busbw` of the link (480 GB/s measured on 8x H100; all-gather and reduce-scatter stay
  at ring speed, 370 GB/s, per the NCCL maintainer).
- custom all-reduce of inference engines (vLLM, TensorRT-LLM, SGLang; one node, NVLink peer access,
  buffers up to 8 MiB): one-shot = t0 + (n-1) x bytes / bandwidth (every rank reads every peer's
  buffer), two-shot = 2 t0 + 2 (n-1)/n x bytes / bandwidth; the engine takes the faster, and NCCL
  when neither applies. t0 (barrier plus launch) is `Efficiency.custom_allreduce_latency_s`.
Every call also pays `Efficiency.collective_launch_s` (the host launch and the skew between ranks
arriving at the collective, which NCCL's latency table leaves out).
- measured all-reduce inside one NVSwitch node (`data/nccl_measured.yaml`, DGX A100 / DGX H100 at 2,
  4 and 8 ranks, 4-64 MiB): NCCL's model is what NCCL uses to choose, and it is optimistic for the
  mid-size buffers of tensor parallelism; where a measured curve exists the time is the larger of
  the model and the measurement (`measured_allreduce_time`).

>>> round(nccl_time("all_reduce", 8, 2048, "nvlink", 300e9 * 0.8) * 1e6, 1)  # LL: 6.6 + 14 x 0.6 us
15.1
>>> nccl_protocol("all_reduce", 8, 2048, "nvlink", 240e9), nccl_protocol("all_reduce", 8, 2**28, "nvlink", 240e9)
('ring/ll', 'ring/simple')
"""

from __future__ import annotations

import functools
import itertools
import math
from pathlib import Path

import yaml

DATA_FILE = Path(__file__).parent / "data" / "collectives.yaml"
MEASURED_FILE = Path(__file__).parent / "data" / "nccl_measured.yaml"
_STEPS = {"all_reduce": lambda n: 2 * (n - 1), "all_gather": lambda n: n - 1, "reduce_scatter": lambda n: n - 1,
          "all_to_all": lambda n: n - 1, "send_recv": lambda n: 1}
NVLS_KINDS = ("all_reduce",)  # the NCCL maintainer: all-gather/reduce-scatter stay at ring speed (GT167)


@functools.cache
def constants() -> dict:
    """The NCCL tuning constants and custom all-reduce limits of `data/collectives.yaml`."""
    return yaml.safe_load(DATA_FILE.read_text())


def _ring_candidates(kind: str, n: int, link_class: str, busbw: float) -> list[tuple[str, float, float]]:
    """(name, latency s, algorithm bandwidth B/s) of ring with each protocol allowed on the link."""
    c = constants()["nccl"]
    steps = _STEPS[kind](n)
    hop = c["hop_latency_us"][link_class]["ring"]
    out = []
    for proto in ("ll", "ll128", "simple"):
        if proto == "ll128" and link_class not in c["ll128_links"]:
            continue
        if proto == "ll":
            share = c["ll_busbw_fraction"]["all_reduce" if kind == "all_reduce" else "other"]
            bw = min(busbw * share, c["ll_max_busbw_gb_s"] * 1e9)
        else:
            bw = busbw * (c["ll128_busbw_fraction"] if proto == "ll128" else 1.0)
        latency = (c["base_latency_us"]["ring"][proto] + steps * hop[proto]) * 1e-6
        ratio = 1.0 if kind == "send_recv" else n / max(steps, 1)  # bus to algorithm bandwidth (nccl-tests)
        out.append((f"ring/{proto}", latency, bw * ratio))
    return out


def _candidates(kind: str, n: int, link_class: str, busbw: float, nodes: int = 1,
                nvls_busbw: float | None = None) -> list[tuple[str, float, float]]:
    c = constants()["nccl"]
    out = _ring_candidates(kind, n, link_class, busbw)
    if kind == "all_reduce" and nodes > 1:
        hop = c["hop_latency_us"][link_class]["tree"]
        for proto in ("ll", "ll128", "simple"):
            if proto == "ll128" and link_class not in c["ll128_links"]:
                continue
            bw = busbw * c["tree_busbw_fraction"] * (c["ll_busbw_fraction"]["all_reduce"] if proto == "ll" else 1.0)
            latency = (c["base_latency_us"]["tree"][proto] + 2 * math.log2(nodes) * hop[proto]) * 1e-6
            out.append((f"tree/{proto}", latency, bw / 2))
    if nvls_busbw and kind in NVLS_KINDS and n > 2:
        steps = _STEPS[kind](n)
        out.append(("nvls", c["hop_latency_us"][link_class]["nvls"] * 1e-6, nvls_busbw * n / steps))
    return out


def _best(kind: str, n: int, nbytes: float, link_class: str, busbw: float, nodes: int = 1,
          nvls_busbw: float | None = None) -> tuple[str, float]:
    options = [(lat + nbytes / bw, name) for name, lat, bw in
               _candidates(kind, n, link_class, busbw, nodes, nvls_busbw) if bw > 0]
    t, name = min(options)
    return name, t


def nccl_time(kind: str, n: int, nbytes: float, link_class: str, busbw: float, nodes: int = 1,
              nvls_busbw: float | None = None) -> float:
    """Seconds of one NCCL collective of `nbytes` over `n` ranks on one link class whose achievable
    bus bandwidth is `busbw` (B/s): the fastest algorithm/protocol (module docstring). `nbytes` is
    the buffer as nccl-tests counts it (the whole gathered buffer for all-gather/reduce-scatter)."""
    if n <= 1 or nbytes <= 0:
        return 0.0
    return _best(kind, n, nbytes, link_class, busbw, nodes, nvls_busbw)[1]


def nccl_protocol(kind: str, n: int, nbytes: float, link_class: str, busbw: float, nodes: int = 1,
                  nvls_busbw: float | None = None) -> str:
    """The algorithm/protocol NCCL's model picks (`ring/ll`, `ring/ll128`, `ring/simple`, `tree/..`, `nvls`)."""
    return _best(kind, n, nbytes, link_class, busbw, nodes, nvls_busbw)[0]


def custom_allreduce_time(n: int, nbytes: float, bandwidth: float, latency_s: float) -> float | None:
    """Seconds of an inference engine's custom all-reduce (one-shot or two-shot, the faster), or None
    when the buffer is over the engines' limit (they fall back to NCCL).

    >>> round(custom_allreduce_time(8, 8192, 300e9, 3e-6) * 1e6, 2)  # one-shot: 3 us + 7 x 8 KiB / 300 GB/s
    3.19
    """
    if n <= 1 or nbytes <= 0:
        return 0.0
    if nbytes > constants()["custom_allreduce"]["max_bytes"]:
        return None
    one_shot = latency_s + (n - 1) * nbytes / bandwidth
    two_shot = 2 * latency_s + 2 * (n - 1) / n * nbytes / bandwidth
    return min(one_shot, two_shot)


def custom_allreduce_links() -> tuple[str, ...]:
    return tuple(constants()["custom_allreduce"]["links"])


@functools.cache
def _measured() -> dict:
    return yaml.safe_load(MEASURED_FILE.read_text())


def measured_allreduce_curve(family: str, n: int, link_class: str) -> tuple[tuple[float, float], ...]:
    """(bytes, seconds) of NCCL all-reduce measured on `family`'s NVSwitch node at `n` ranks, or ()
    where none was measured (`data/nccl_measured.yaml`).

    >>> measured_allreduce_curve("A100", 2, "nvlink")[0], measured_allreduce_curve("A100", 2, "pci")
    ((4194304.0, 6.5e-05), ())
    """
    data = _measured()
    if link_class != data["link_class"]:
        return ()
    family = data.get("aliases", {}).get(family, family)
    points = data["families"].get(family, {}).get("ranks", {}).get(n)
    return tuple((float(b), float(t)) for b, t in points) if points else ()


def _loglog(curve: tuple[tuple[float, float], ...], nbytes: float) -> float:
    for (b0, t0), (b1, t1) in itertools.pairwise(curve):
        if nbytes in (b0, b1):
            return t0 if nbytes == b0 else t1
        if nbytes < b1:
            w = math.log(nbytes / b0) / math.log(b1 / b0)
            return math.exp(math.log(t0) + w * math.log(t1 / t0))
    return curve[-1][1]


def measured_allreduce_time(model, nbytes: float, curve: tuple[tuple[float, float], ...]) -> float:
    """Seconds of an all-reduce of `nbytes` given NCCL's model (`model(bytes)` -> seconds) and a
    measured curve: inside the curve the larger of the two; below it the model plus the excess
    measured at the smallest size, scaled by size; above it the model plus the excess at the
    largest size (continuous, and monotonic where the model is).

    >>> curve = ((4e6, 60e-6), (8e6, 90e-6))
    >>> model = lambda b: 10e-6 + b / 200e9
    >>> [round(measured_allreduce_time(model, b, curve) * 1e6, 1) for b in (2e6, 4e6, 8e6, 16e6)]
    [35.0, 60.0, 90.0, 130.0]
    """
    if not curve or nbytes <= 0:
        return model(nbytes)
    (b0, t0), (b1, t1) = curve[0], curve[-1]
    if nbytes < b0:
        return model(nbytes) + max(t0 - model(b0), 0.0) * nbytes / b0
    if nbytes > b1:
        return model(nbytes) + max(t1 - model(b1), 0.0)
    return max(model(nbytes), _loglog(curve, nbytes))
