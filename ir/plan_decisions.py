"""The decisions a plan records, one type per workload kind: training, inference (prefill, decode and
serving, with the serving policy) and fleets of GPU types. Typed, frozen, JSON round trip exact
(`ir.records`); the meaning of every field is the design notes' plan contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from ir.records import ABSENT, Absent, Record

Schedule = Literal["1f1b", "interleaved", "gpipe"]
Recompute = Literal["none", "selective", "full"]
PolicyName = Literal["prefill_first", "chunked", "layered", "disaggregated"]


@dataclass(frozen=True)
class Slo(Record):
    """Service-level objectives in seconds (mean TTFT, mean TPOT); a key left out is not constrained."""

    ttft: float | Absent = ABSENT
    tpot: float | Absent = ABSENT


@dataclass(frozen=True)
class Stage(Record):
    """One pipeline stage: layers [start, end), its device type, tp, and its ranks (dp rows of tp ranks).
    With interleaved 1F1B, `chunks` lists the stage's virtual stages in order (`layers` is the first)."""

    stage: int
    layers: tuple[int, int]
    first_layer: str
    last_layer: str
    device: str
    tp: int
    node_group: int
    ranks: tuple[tuple[int, ...], ...]
    chunks: tuple[tuple[int, int], ...] | Absent = ABSENT


@dataclass(frozen=True)
class TrainDecision(Record):
    """Parallel layout, microbatching, pipeline schedule, recomputation and ZeRO stage of a training plan.
    `tp` is one degree, or one per stage when stages on different GPU types use different tp."""

    kind: Literal["train"]
    dp: int
    tp: int | tuple[int, ...]
    pp: int
    ep: int
    microbatch_size: int
    microbatches: int
    schedule: Schedule
    recompute: Recompute
    zero_stage: Literal[0, 1, 2, 3]
    sequence_parallel: bool
    stages: tuple[Stage, ...]
    virtual_stages: int | Absent = ABSENT  # left out by plans written before interleaving (then 1)


@dataclass(frozen=True)
class Disaggregation(Record):
    """Disaggregated prefill/decode: instance counts and each phase's parallelism (DistServe's xPyD)."""

    prefill_instances: int
    decode_instances: int
    prefill_tp: int
    prefill_pp: int
    decode_tp: int
    decode_pp: int
    prefill_ranks: tuple[tuple[int, ...], ...]
    kv_transfer_link: str


@dataclass(frozen=True)
class InstanceEngine(Record):
    """What one instance's engine must be told to run as simulated (`cost_models.serving.engine_settings`): its
    scheduler limits, its KV pool (tokens per attention group, bytes per GPU), the memory around it, the KV
    block; `attention_groups` > 1 for a wide expert-parallel instance (limits are the instance's totals)."""

    max_num_seqs: int
    max_num_batched_tokens: int | None
    kv_cache_tokens: int
    kv_bytes_per_token: float
    kv_cache_bytes: int
    weights_bytes: int
    device_memory_bytes: int
    block_size: int
    attention_groups: int | Absent = ABSENT


@dataclass(frozen=True)
class ServingSection(Record):
    """The serving deployment as simulated: policy and its settings, the simulated workload (source,
    request count, seed, rate) and the SLO, and the replicated unit."""

    policy: PolicyName
    chunked_prefill: bool
    chunk_tokens: int | None
    layer_groups: int | None
    disaggregated: Disaggregation | None
    description: str
    workload: str
    requests: int
    seed: int
    rate_rps: float
    slo: Slo
    units: int
    unit: str
    layer_groups_rule: str | Absent = ABSENT
    max_num_batched_tokens: int | Absent = ABSENT
    context_tokens: int | Absent = ABSENT
    requests_over_context: float | Absent = ABSENT
    # wide expert parallelism: attention groups of tp ranks per instance, experts over all of them (ep = tp x this)
    expert_parallel_groups: int | Absent = ABSENT
    # what the engine scripts need (codegen/serving.py): the engines' context limit, their defaults as simulated,
    # and per instance role ("instance", or "prefill" and "decode") its engine settings
    longest_request_tokens: int | Absent = ABSENT
    prefix_caching: bool | Absent = ABSENT
    dispatch: Literal["round_robin"] | Absent = ABSENT
    engines: Mapping[str, InstanceEngine] | Absent = ABSENT


@dataclass(frozen=True)
class InstanceCounts(Record):
    prefill_instances: int
    decode_instances: int


@dataclass(frozen=True)
class EngineSettings(Record):
    """The serving section of plans written before the serving simulator recorded its deployment: engine
    settings only (still read, so that those plans compile)."""

    chunked_prefill: bool | None
    chunk_tokens: int | None
    disaggregated: InstanceCounts | None


@dataclass(frozen=True)
class InferenceDecision(Record):
    """tp x pp instances replicated dp times for prefill, decode or serving (`serving`: how it is served)."""

    kind: Literal["inference"]
    phase: Literal["prefill", "decode", "serve"]
    dp: int
    tp: int
    pp: int
    ep: int
    batch: int
    input_len: int
    output_len: int
    stages: tuple[Stage, ...]
    serving: ServingSection | EngineSettings | Absent = ABSENT
    engines: Mapping[str, InstanceEngine] | Absent = ABSENT  # prefill/decode batch plans: what their engines run


@dataclass(frozen=True)
class FleetRow(Record):
    """Instances bought of one (GPU type, tp) configuration and the load slices they carry per bucket."""

    config: str
    device: str
    tp: int
    instances: int
    gpus: int
    dollars_per_hour: float
    slices: Mapping[str, int]
    engine: InstanceEngine | Absent = ABSENT  # one instance's engine settings (codegen renders them)


@dataclass(frozen=True)
class FleetDecision(Record):
    """A serving fleet of several GPU types (Melange-style): what to buy, the per-instance policy, the SLO."""

    kind: Literal["fleet"]
    instances: tuple[FleetRow, ...]
    policy: str
    slo: Slo
    longest_request_tokens: int | Absent = ABSENT  # the engines' context limit


Decision = TrainDecision | InferenceDecision | FleetDecision
