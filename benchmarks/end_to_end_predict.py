"""Predictions of the end-to-end development set's rows (`end_to_end_rows.Row`): `predict()` runs
`cost_models.estimator.estimate_graph` with the row's own setup (cluster, layout, engine, schedule) and
converts the estimate into the row's metric with its source's conventions (`end_to_end_rows`' docstring);
`with_efficiency()` swaps in the fit's trial parameters."""

from __future__ import annotations

import functools
from dataclasses import replace

from end_to_end_models import cluster_of, graph_of
from end_to_end_rows import VIRTUAL_STAGES_CHOSEN, Row


def megatron_eq3_flops(batch: int, seq: int, layers: int, h: int, vocab: int) -> float:
    """Narayanan et al. 2021 eq. 3: FLOPs of one step with full recomputation.

    >>> round(megatron_eq3_flops(1536, 2048, 96, 12288, 51200) / 1e18, 2)
    4.51
    """
    return 96.0 * batch * seq * layers * h * h * (1 + seq / (6 * h) + vocab / (16 * layers * h))


def _planners_schedule(row: Row) -> dict:
    """The training estimate under the interleaved schedule the planner's search would pick for the row's layout:
    of its virtual-stage options (`passes.parallel_layouts.VIRTUAL_STAGES`) that the blocks and microbatches
    allow, the fastest (memory is not checked: the sources that leave v unstated leave their sharding and
    recomputation unstated too)."""
    from cost_models.pipeline_schedule import schedule_problem
    from passes.parallel_layouts import VIRTUAL_STAGES

    blocks = sum(1 for layer in graph_of(row.model).layers if layer.kind == "block")
    microbatches = row.batch // (row.dp * row.microbatch)
    runs = [v for v in VIRTUAL_STAGES if schedule_problem("interleaved", row.pp, microbatches, v, blocks) is None]
    if not runs:
        raise ValueError(f"{row.id}: none of the virtual stages {VIRTUAL_STAGES} runs at pp={row.pp}")
    return min((_estimate(replace(row, vp=v), "train") for v in runs), key=lambda r: r["step_time_s"])


def _options(row: Row, phase: str, **over):
    """The estimator's `Options` for the row's own setup (layout, dtypes, engine, schedule)."""
    from cost_models.parallel_config import Options

    options = dict(tp=row.tp, pp=row.pp, dp=row.dp, batch=row.batch, input_len=row.input_len,
                   output_len=max(row.output_len, 1), dtype=row.dtype, weight_dtype=row.weight_dtype,
                   kv_dtype=row.kv_dtype, collectives=row.collectives, attention=row.attention)
    if phase != "train":
        options["runtime"] = row.runtime
    if phase == "train":
        options.update(microbatch_size=row.microbatch, recompute=row.recompute,
                       sequence_parallel=row.sequence_parallel, zero_stage=row.zero_stage,
                       schedule="interleaved" if row.vp > 1 else "1f1b", virtual_stages=row.vp,
                       p2p_overlap=row.p2p_overlap)
    options.update(over)
    return Options(**options)


def _estimate(row: Row, phase: str, **over) -> dict:
    from cost_models.estimator import estimate_graph

    return estimate_graph(graph_of(row.model), _cluster(row), phase, _options(row, phase, **over))


def inference_pass(row: Row, **over):
    """The estimator's own forward pass (`cost_models.estimate_infer.PassResult`, with each layer's GEMM,
    attention, other-op and communication time) of a prefill or decode row, as `predict` prices it."""
    from cost_models.estimate_context import make_context
    from cost_models.estimate_infer import forward_pass, replica_batch
    from cost_models.parallel_config import validate

    graph, cluster = graph_of(row.model), _cluster(row)
    options = validate(graph, cluster, row.phase, _options(row, row.phase, **over))
    ctx = make_context(graph, cluster, options)
    context = options.input_len if row.phase == "decode" else None
    return forward_pass(ctx, row.phase, replica_batch(ctx), options.input_len, context)


@functools.cache
def _cluster_cached(spec: str):
    from cost_models.cluster import parse_cluster

    return parse_cluster(spec)


_EFFICIENCY: dict = {}  # family -> Efficiency overriding the fitted defaults (set by `with_efficiency`)


def with_efficiency(families: dict | None) -> None:
    """Predict with these per-family `Efficiency` values instead of `cost_models/data/fitted_gpu.yaml`'s
    (the fit's trial values); None restores the data file's. They reach the estimator as the devices'
    calibrated efficiency, the way a `planner calibrate` profile does."""
    _EFFICIENCY.clear()
    _EFFICIENCY.update(families or {})


def _cluster(row: Row):
    from cost_models.efficiency import family_of

    cluster = _cluster_cached(row.cluster or cluster_of(row.device, row.tp * row.pp * row.dp))
    eff = _EFFICIENCY.get(family_of(cluster.nodes[0].device))
    if eff is None:
        return cluster
    groups = tuple((replace(node, device=replace(node.device, efficiency=eff.to_dict())), count)
                   for node, count in cluster.groups)
    return replace(cluster, groups=groups)


def predict(row: Row) -> float:
    """The row's metric as the estimator predicts it, in the row's unit."""
    if row.phase == "train":
        return _predict_train(row)
    if row.phase == "decode":
        r = _estimate(row, "decode")
        return r["tpot_s"] * 1e3 if row.unit == "ms" else 1.0 / r["tpot_s"]
    if row.phase == "prefill":
        return _estimate(row, "prefill")["latency_s"] * 1e3
    if row.phase == "serve":
        return _estimate(row, "serve")["output_tokens_per_s"]
    if row.phase == "static_batch":
        pre = _estimate(row, "prefill")["latency_s"]
        dec = _estimate(row, "decode", input_len=row.input_len + row.output_len // 2)["tpot_s"]
        return row.batch * row.output_len / (pre + row.output_len * dec)
    if row.phase == "serve_qps":
        r = _estimate(row, "serve", qps=row.qps)
        return (r["ttft_s"] if row.metric == "mean_TTFT" else r["tpot_s"]) * 1e3
    raise ValueError(f"{row.id}: no prediction for phase {row.phase}")


def _predict_train(row: Row) -> float:
    r = _planners_schedule(row) if row.vp == VIRTUAL_STAGES_CHOSEN else _estimate(row, "train")
    step, gpus = r["step_time_s"], row.tp * row.pp * row.dp
    if row.unit == "s":
        return step
    if row.unit == "tokens/s/GPU":
        return row.batch * row.input_len / step / gpus
    if row.flops_convention == "megatron-eq3":
        h, layers, _, vocab = row.model.shape
        return megatron_eq3_flops(row.batch, row.input_len, layers, h, vocab) / step / gpus / 1e12
    return r["tflops_per_device"]
