"""Parallel degrees and run options of one estimate, validated against the model and cluster."""

from __future__ import annotations

from dataclasses import dataclass

from ir.errors import UserError
from ir.graph import Graph

DTYPES = ("bf16", "fp16", "fp8", "fp32")
WEIGHT_DTYPES = ("bf16", "fp16", "fp8", "int8", "int4", "fp32")
KV_DTYPES = ("bf16", "fp16", "fp8", "int8", "fp32")
KV_BYTES = {"bf16": 2, "fp16": 2, "fp8": 1, "int8": 1, "fp32": 4}
COLLECTIVE_IMPLS = ("auto", "nccl", "custom")
ATTENTION_KERNELS = ("flash", "unfused")
RUNTIMES = ("engine", "cpp-engine", "compiled")


@dataclass(frozen=True)
class Options:
    """Everything `planner estimate` takes besides model, cluster and phase (CLI flag names)."""

    tp: int = 1
    pp: int = 1
    dp: int | None = None  # default: the devices left over by tp x pp
    ep: int = 1
    # where the ep ranks come from. Training (Megatron-Core, torchtitan): data-parallel replicas,
    # ep | dp, experts split ep x tp ways, expert gradients reduced over the dp / ep replicas of an
    # expert. Serving engines (vLLM --enable-expert-parallel): the tp ranks, experts split max(ep, tp).
    ep_over_dp: bool = False
    batch: int = 1
    input_len: int | None = None
    output_len: int = 128
    microbatch_size: int | None = None
    recompute: str = "none"
    sequence_parallel: bool = False
    zero_stage: int = 0
    dtype: str = "bf16"
    weight_dtype: str | None = None
    kv_dtype: str | None = None
    qps: float | None = None
    schedule: str = "1f1b"  # pipeline schedule: 1f1b, interleaved or gpipe (cost_models.pipeline_schedule)
    virtual_stages: int = 1  # interleaved 1F1B: model chunks per pipeline rank
    # interleaved 1F1B's sends overlap the rank's next chunk (Megatron-core's overlap_p2p_comm, on with virtual
    # stages in NeMo / Megatron-Bridge; torch.distributed.pipelining's asynchronous sends); False: each send
    # waits in line (Megatron-LM before 2023). 1F1B and GPipe always pay their sends in line.
    p2p_overlap: bool = True
    # tensor-parallel all-reduce: "custom" = an inference engine's own kernel inside an NVLink node (vLLM,
    # SGLang, TensorRT-LLM), "nccl" = NCCL (training frameworks, gpt-fast); "auto": custom unless training
    collectives: str = "auto"
    # attention kernel: "flash" (fused, FlashAttention / cuDNN / engines' paged kernels) or "unfused"
    # (QK^T and AV batched GEMMs with the scores in memory: Megatron-LM before FlashAttention, eager HF)
    attention: str = "flash"
    # inference host loop: "engine" = a serving engine whose Python scheduler schedules, samples and launches
    # every iteration (vLLM, SGLang, DistServe: Efficiency.iteration_overhead_s); "cpp-engine" = a C++
    # executor doing the same (TensorRT-LLM: Efficiency.cpp_iteration_overhead_s); "compiled" = a compiled
    # generation loop replaying CUDA graphs with no scheduler (gpt-fast, FasterTransformer)
    runtime: str = "engine"


def _positive(name: str, value) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")


def validate(graph: Graph, cluster, phase: str, o: Options) -> Options:
    """Check degrees against heads, experts and devices; fill defaults. Raises UserError."""
    for name in ("tp", "pp", "ep", "batch", "input_len", "output_len", "microbatch_size", "dp"):
        _positive(name, getattr(o, name))
    weight_dtype, kv_dtype = o.weight_dtype or o.dtype, o.kv_dtype or "bf16"
    if o.dtype not in DTYPES or weight_dtype not in WEIGHT_DTYPES or kv_dtype not in KV_DTYPES:
        raise UserError(f"unknown dtype: --dtype takes {', '.join(DTYPES)}; --weight-dtype "
                        f"{', '.join(WEIGHT_DTYPES)}; --kv-dtype {', '.join(KV_DTYPES)}")
    if o.recompute not in ("none", "selective", "full"):
        raise UserError(f"--recompute takes none, selective or full, got {o.recompute!r}")
    if o.zero_stage not in (0, 1, 2, 3):
        raise UserError(f"--zero-stage takes 0, 1, 2 or 3, got {o.zero_stage!r}")
    if o.collectives not in COLLECTIVE_IMPLS:
        raise UserError(f"collectives must be one of {', '.join(COLLECTIVE_IMPLS)}, got {o.collectives!r}")
    if o.attention not in ATTENTION_KERNELS:
        raise UserError(f"attention must be one of {', '.join(ATTENTION_KERNELS)}, got {o.attention!r}")
    if o.runtime not in RUNTIMES:
        raise UserError(f"runtime must be one of {', '.join(RUNTIMES)}, got {o.runtime!r}")
    if o.qps is not None and not o.qps > 0:
        raise UserError(f"--qps must be a positive number, got {o.qps}")
    _check_schedule(graph, o)
    _check_divisibility(graph, o)
    devices = cluster.num_devices
    if o.tp * o.pp > devices:
        raise UserError(f"tp={o.tp} x pp={o.pp} needs {o.tp * o.pp} devices; cluster {cluster.name} has "
                        f"{devices}; lower tp or pp or add devices")
    dp = o.dp if o.dp is not None else max(devices // (o.tp * o.pp), 1)
    if dp * o.tp * o.pp > devices:
        raise UserError(f"dp={dp} x tp={o.tp} x pp={o.pp} = {dp * o.tp * o.pp} devices; cluster "
                        f"{cluster.name} has {devices}")
    # training takes ep ranks from the dp replicas; serving does for wide expert parallelism (ep_over_dp given)
    over_dp = phase == "train" or (o.ep_over_dp and o.ep > 1)
    if o.ep > 1 and over_dp and dp % o.ep:
        raise UserError(f"ep={o.ep} must divide dp={dp} (expert-parallel ranks are taken from the "
                        f"data-parallel replicas); use an ep dividing {dp}")
    if o.ep > 1 and (dp * o.tp) % o.ep:
        raise UserError(f"ep={o.ep} must divide dp x tp = {dp * o.tp} (experts are spread over data/tensor ranks)")
    layers = sum(1 for layer in graph.layers if layer.kind == "block")
    if o.pp > max(layers, 1):
        raise UserError(f"pp={o.pp} exceeds the {layers} blocks of {graph.model}; use pp <= {layers}")
    if phase == "train":
        mbs = o.microbatch_size or 1
        if o.batch % (dp * mbs):
            raise UserError(f"--batch {o.batch} must be a multiple of dp x microbatch size = {dp} x {mbs}")
    collectives = o.collectives if o.collectives != "auto" else ("nccl" if phase == "train" else "custom")
    return Options(**{**o.__dict__, "dp": dp, "ep_over_dp": over_dp, "collectives": collectives})


def _check_divisibility(graph: Graph, o: Options) -> None:
    cfg = graph.config
    heads, kv_heads = cfg.get("num_heads"), cfg.get("num_kv_heads")
    if o.tp > 1 and heads and heads % o.tp:
        raise UserError(f"tp={o.tp} does not divide the {heads} attention heads of {graph.model}; "
                        f"use a tp that divides {heads}")
    if o.tp > 1 and kv_heads and kv_heads % o.tp and o.tp % kv_heads:
        raise UserError(f"tp={o.tp} and the {kv_heads} KV heads of {graph.model} clash: one must divide "
                        f"the other")
    experts = cfg.get("num_experts")
    if o.ep > 1 and not experts:
        raise UserError(f"ep={o.ep} given but {graph.model} has no experts; use ep=1")
    if o.ep > 1 and experts % o.ep:
        raise UserError(f"ep={o.ep} does not divide the {experts} experts of {graph.model}")


def _check_schedule(graph: Graph, o: Options) -> None:
    """UserError unless the pipeline schedule can run (the microbatch rule is checked by the plan)."""
    from cost_models.pipeline_schedule import SCHEDULES, chunk_problem, runnable_virtual_stages

    _positive("virtual_stages", o.virtual_stages)
    if o.schedule not in SCHEDULES:
        raise UserError(f"unknown pipeline schedule {o.schedule!r}; use one of {', '.join(SCHEDULES)}")
    blocks = sum(1 for layer in graph.layers if layer.kind == "block")
    if o.schedule == "interleaved" and (o.virtual_stages < 2 or o.pp < 2):
        raise UserError(f"interleaved 1F1B needs pp >= 2 and virtual stages >= 2, got pp={o.pp}, v={o.virtual_stages}")
    problem = chunk_problem(blocks, o.pp, o.virtual_stages) if o.schedule == "interleaved" else None
    if problem:
        runs = runnable_virtual_stages(blocks, o.pp)
        raise UserError(f"{problem}; got pp={o.pp}, v={o.virtual_stages}: "
                        + (f"use v in {runs}" if runs else f"use the 1f1b schedule at pp={o.pp}"))
    if o.schedule != "interleaved" and o.virtual_stages != 1:
        raise UserError(f"virtual stages ({o.virtual_stages}) need the interleaved schedule, not {o.schedule}")
