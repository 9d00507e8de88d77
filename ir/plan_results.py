"""What a plan predicts and how it was found: predictions per workload kind, the solver report, the
runners-up, the per-device memory map and a fleet's capacity profile. Typed, frozen, JSON round trip
exact (`ir.records`). Units are SI and in the names (seconds, bytes, FLOP/s, tokens/s, $/h).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from ir.records import ABSENT, Absent, Record


@dataclass(frozen=True)
class Uncertainty(Record):
    """Relative error covering 80% of the validation points of this kind of estimate (None: unvalidated)."""

    relative_error_80: float | None
    points: int
    basis: str


@dataclass(frozen=True)
class Parallel(Record):
    dp: int
    tp: int
    pp: int
    ep: int


@dataclass(frozen=True)
class TrainPredictions(Record):
    """One optimizer step of the plan's batch: time, throughput, MFU, memory per stage, cost."""

    step_time_s: float
    tokens_per_s: float
    tflops_per_device: float
    mfu: float
    fits: bool
    devices: int
    memory_per_device_bytes: int
    stage_memory_bytes: tuple[int, ...]
    stage_capacity_bytes: tuple[int, ...]
    stage_times_s: tuple[float, ...]
    breakdown: Mapping[str, float]
    bubble_fraction: float
    dollars_per_hour: float | None
    dollars_per_million_tokens: float | None
    memory_breakdown_bytes: Mapping[str, int]
    uncertainty: Uncertainty | Absent = ABSENT
    # what the memory "reserve" holds, by name (runtime, NCCL buffers, fp32 gradient accumulation, ...)
    memory_margin_bytes: Mapping[str, int] | Absent = ABSENT


@dataclass(frozen=True)
class InferencePredictions(Record):
    """The estimator's answer (the `planner estimate --json` contract keys) for prefill and decode plans;
    serving plans add the simulated latencies, attainment and goodput of the deployment."""

    model: str
    cluster: str
    phase: Literal["prefill", "decode", "serve"]
    parallel: Parallel
    fits: bool
    memory_per_device_bytes: int | None
    step_time_s: float | None
    tokens_per_s: float | None
    tflops_per_device: float | None
    mfu: float | None
    latency_s: float | None
    ttft_s: float | None
    tpot_s: float | None
    output_tokens_per_s: float | None
    max_batch: int | None
    energy_per_token_j: float | None
    breakdown: Mapping[str, float]
    memory_breakdown_bytes: Mapping[str, int]
    memory_capacity_bytes: int
    device: str
    uncertainty: Uncertainty
    devices: int | Absent = ABSENT
    dollars_per_hour: float | Absent | None = ABSENT
    stages: tuple[tuple[int, int], ...] | Absent = ABSENT
    memory_margin_bytes: Mapping[str, int] | Absent = ABSENT  # the reserve by name (runtime, NCCL, logits, ...)
    queue_growth: float | Absent = ABSENT  # serving: seconds of extra wait per second of arrivals (0: stable)
    saturation_rps: float | Absent = ABSENT  # serving: requests/s the deployment completes when saturated
    microbatches: int | Absent = ABSENT
    requests_per_s: float | Absent = ABSENT
    achieved_requests_per_s: float | Absent = ABSENT
    ttft_p50_s: float | Absent | None = ABSENT
    ttft_p90_s: float | Absent | None = ABSENT
    ttft_p99_s: float | Absent | None = ABSENT
    tpot_p50_s: float | Absent | None = ABSENT
    tpot_p90_s: float | Absent | None = ABSENT
    tpot_p99_s: float | Absent | None = ABSENT
    slo_attainment: float | Absent = ABSENT
    rate_rps: float | Absent = ABSENT
    gpus: int | Absent = ABSENT
    gpus_used: int | Absent = ABSENT
    goodput_rps: float | Absent = ABSENT
    goodput_per_gpu: float | Absent = ABSENT
    preemptions: int | Absent = ABSENT
    rejected: int | Absent = ABSENT
    utilization: float | Absent = ABSENT
    expert_bytes_per_prompt: float | Absent = ABSENT
    simulated_requests: int | Absent = ABSENT


@dataclass(frozen=True)
class CheapestConfig(Record):
    config: str
    instances: int
    dollars_per_hour: float


@dataclass(frozen=True)
class FleetPredictions(Record):
    """Cost of the fleet for the rate, and of the cheapest fleets of one configuration or one GPU type."""

    dollars_per_hour: float
    rate_rps: float
    gpus: int
    cheapest_single_config: CheapestConfig | None
    single_type_dollars_per_hour: Mapping[str, float | None]
    cheapest_single_type: str | None
    saving_vs_single_type: float | None


Predictions = TrainPredictions | InferencePredictions | FleetPredictions

SolverStatus = Literal["optimal", "feasible", "best found", "infeasible", "invalid", "unknown", "interrupted"]


@dataclass(frozen=True)
class SolverReport(Record):
    """How the plan was found: method, status (the weakest of its parts), objective, bound and gap where a
    solver proves one, and the size of the search."""

    status: SolverStatus
    candidates_evaluated: int
    candidates_pruned: int
    grouping: str | Absent = ABSENT
    grouping_status: str | Absent = ABSENT  # the chosen layout's grouping: optimal, feasible, equal chunks, ...
    search: str | Absent = ABSENT
    solver: str | Absent = ABSENT
    objective: float | str | Absent = ABSENT
    objective_us: int | Absent | None = ABSENT
    bound_us: int | Absent | None = ABSENT
    gap: float | Absent | None = ABSENT
    step_objective_us: int | Absent | None = ABSENT
    objective_milli_per_hour: int | Absent = ABSENT
    bound_milli_per_hour: int | Absent | None = ABSENT
    interrupted: bool | Absent = ABSENT
    warm_start: bool | Absent = ABSENT
    candidates: int | Absent = ABSENT
    policies_considered: tuple[str, ...] | Absent = ABSENT
    layouts_considered: tuple[tuple[int, int], ...] | Absent = ABSENT
    simulations: int | Absent = ABSENT
    simulated_requests_per_candidate: tuple[int, int] | Absent = ABSENT


@dataclass(frozen=True)
class Alternative(Record):
    """A runner-up layout and how it compares."""

    layout: str
    tokens_per_s: float | Absent = ABSENT
    step_time_s: float | Absent = ABSENT
    slower_by: float | Absent = ABSENT
    latency_s: float | Absent | None = ABSENT
    tpot_s: float | Absent | None = ABSENT
    output_tokens_per_s: float | Absent | None = ABSENT
    gpus: int | Absent = ABSENT
    goodput_rps: float | Absent = ABSENT
    goodput_per_gpu: float | Absent = ABSENT


@dataclass(frozen=True)
class Baseline(Record):
    """A simpler layout the plan is measured against (e.g. the best uniform split)."""

    layout: str
    tokens_per_s: float
    speedup_of_plan: float


@dataclass(frozen=True)
class PlacedBuffer(Record):
    id: str
    lower: int
    upper: int
    offset: int
    size: int


@dataclass(frozen=True)
class Arena(Record):
    """One packed address space: buffers live in [lower, upper) steps at an offset; `capacity_bytes` bounds it."""

    name: str
    capacity_bytes: int
    buffers: tuple[PlacedBuffer, ...]
    layer: str | Absent = ABSENT
    peak_bytes: int | Absent = ABSENT
    lower_bound_bytes: int | Absent = ABSENT
    method: str | Absent = ABSENT
    status: str | Absent = ABSENT


@dataclass(frozen=True)
class Region(Record):
    name: str
    bytes: int
    lower: int
    upper: int
    offset: int


@dataclass(frozen=True)
class DeviceMemory(Record):
    """What lives on the devices of one stage (all its ranks hold the same bytes)."""

    stage: int
    ranks: tuple[int, ...]
    device: str
    capacity_bytes: int
    predicted_bytes: int | None
    total_bytes: int
    by_kind_bytes: Mapping[str, int]
    regions: tuple[Region, ...]


@dataclass(frozen=True)
class KvCacheSizing(Record):
    """Paged KV cache: blocks of `block_tokens` tokens in the memory left over."""

    block_tokens: int
    block_bytes: int
    blocks: int
    max_tokens: int
    max_sequences: int


@dataclass(frozen=True)
class MemoryMap(Record):
    version: int
    kind: Literal["train", "inference"]
    devices: tuple[DeviceMemory, ...]
    arenas: tuple[Arena, ...]
    kv_cache: KvCacheSizing | None


@dataclass(frozen=True)
class Bucket(Record):
    """A request-size bucket of a fleet: prompt and output token ranges (lo, hi], hi None for no limit."""

    name: str
    prompt_tokens: tuple[int, int | None]
    output_tokens: tuple[int, int | None]
    share: float
    rate_rps: float


@dataclass(frozen=True)
class FleetProfile(Record):
    """The simulated capacities a fleet plan was solved over (what verify re-checks the solution against)."""

    buckets: tuple[Bucket, ...]
    capacity_rps: Mapping[str, tuple[float, ...]]
    price_milli_per_hour: Mapping[str, int]
    gpu_limits: Mapping[str, int]
    slices: int
    seed: int
    simulations: int
    context_tokens: int | Absent = ABSENT
    requests_over_context: float | Absent = ABSENT
