"""Rows of a vLLM engine's calibration (`engine_fit.Row`) from the loads of `planner.engines.calibrate` and the
results vLLM's benchmark client saved for them (TTFTs, inter-token latencies, start times, the engine's /metrics
histograms around each load); see `calibrate`'s module docstring for what each kind of load and row measures.
Also the quantities read from the same results outside the fit: the engine's wake-up after idle time and the
part of a first token outside the engine's own count (`client_path_from`)."""

from __future__ import annotations

import logging

import numpy as np

from cost_models.serving.engine_fit import FitResult, Row, errors_by_kind, fit_idle_wakeup
from cost_models.serving.iteration_cost import causal_pairs
from cost_models.serving.workload import Workload
from ir.errors import UserError

log = logging.getLogger(__name__)
DECODER_PROMPT = 64  # prompt tokens of the decoders in decode, beside and mixed loads
BESIDE_MIN_PROMPTS = 3  # prompts a `beside` row's median needs


def _chunks(tokens: int, budget: int, cached: int = 0) -> tuple[int, float]:
    """Chunk iterations of a prompt's `tokens` computed after `cached` ones under the token `budget`, and their
    causal query-key pairs (the cached prefix included)."""
    left, done, pairs, chunks = tokens, cached, 0.0, 0
    while left > 0:
        q = min(left, budget)
        pairs += causal_pairs(q, done)
        done, left, chunks = done + q, left - q, chunks + 1
    return chunks, pairs


def _first_token_rows(kind: str, w: Workload, result: dict, block_size: int, budget: int) -> list[Row]:
    """One row per group of requests with the same prompt and cached prefix: their median TTFT."""
    groups: dict = {}
    shared = w.shared_prefix_tokens()
    for i, ttft in enumerate(result["ttfts"]):
        prompt = int(w.prompt_tokens[i])
        hit = min(int(shared[i]), prompt - 1) // block_size * block_size
        groups.setdefault((prompt, hit), []).append(float(ttft))
    rows = []
    for (prompt, hit), ttfts in sorted(groups.items()):
        chunks, pairs = _chunks(prompt - hit, budget, hit)
        rows.append(Row(kind, float(np.median(ttfts)), chunks, prompt - hit, pairs, 0.0, 1.0, True, chunks))
    return rows


PREFILL_METRIC = "vllm:request_prefill_time_seconds"  # from the engine core scheduling a request to its first token


def _engine_prefill_row(w: Workload, result: dict, budget: int) -> Row | None:
    """The prompt's own iterations as the engine core stamps them (scheduled to first token; the mean over a
    `prefill` load, whose requests share one length): no request latency in it, so this row and the client's
    first-token row of the same load tell an iteration that computes a prompt apart from the time around it
    (`Row.prefill_iterations` against `first_token`). None without the engine's metrics."""
    prefill = engine_mean_s(result, PREFILL_METRIC)
    if prefill is None or len(set(w.prompt_tokens.tolist())) != 1:
        return None
    chunks, pairs = _chunks(int(w.prompt_tokens[0]), budget)
    return Row("prefill_engine", prefill, chunks, int(w.prompt_tokens[0]), pairs, 0.0, 1.0, False, chunks)


BURST_GAP_S = 1e-4  # an inter-token gap shorter than any engine iteration: a token that came in the same chunk


def step_per_delivery(itls: list[float]) -> float | None:
    """One request's time per decode iteration from its inter-token latencies, robust to token bursts: a front end
    that falls behind streams several tokens in one chunk (one long gap, then gaps of microseconds), so each
    delivery's gap is divided among the tokens it carried; the median over deliveries leaves out the few that
    spanned other requests' prefills. None without a delivery.

    >>> step_per_delivery([0.002, 0.002, 0.006, 0.00001, 0.00001, 0.002])
    0.002
    """
    deliveries: list[list[float]] = []
    for gap in itls:
        if gap < BURST_GAP_S:
            if deliveries:  # a token of the previous delivery's chunk (one right after the first token: skipped)
                deliveries[-1][1] += 1
        else:
            deliveries.append([gap, 1])
    return float(np.median([gap / n for gap, n in deliveries])) if deliveries else None


def _decode_row(kind: str, w: Workload, result: dict, batch: int) -> Row | None:
    """The time of one decode iteration of `batch` sequences: the median over requests of each request's time per
    iteration from its inter-token latencies (`step_per_delivery`). A request's mean time per output token would
    also count the iterations in which other requests' prompts were prefilled beside it (with 16 prompts of 1,244
    tokens, a few 40-55 ms steps among 5.7 ms ones: 17.9 ms mean per token against 5.7 ms per decode step), which
    the fit prices as prefill, not as decode; a plain median of the gaps reads bursts as free iterations (on 2
    shared cores, decode loads of 16 and 32 requests gave medians of 2.3 us). Without inter-token latencies in the
    result, or where most requests' tokens came in one chunk: (latency - TTFT) / (output - 1), per request; where
    that too is a chunk, no row (None)."""
    steps = [step for step in map(step_per_delivery, result.get("itls") or []) if step is not None]
    if len(steps) < len(w) / 2:  # no inter-token latencies, or most streams came in one chunk: time per token
        steps = [(lat - ttft) / (out - 1) for lat, ttft, out in
                 zip(result["latencies"], result["ttfts"], result["output_lens"]) if out > 1]
        steps = [step for step in steps if step >= BURST_GAP_S]
    if len(steps) < len(w) / 2:
        log.warning("decode load of %d requests at a time left out: its tokens arrived in one chunk per request "
                    "(a front end starved of CPU), so they do not time the iterations", batch)
        return None
    step = float(np.median(steps))
    prompt, output = int(w.prompt_tokens[0]), int(w.output_tokens[0])
    context = batch * (prompt + output / 2)  # mean context over the decode steps
    return Row(kind, step, 1.0, batch, 0.0, context, batch, False)


def _beside_decoders(kind: str, w: Workload, result: dict) -> dict | None:
    """What `mixed` and `beside` loads share: the B decoders (arrived at 0), the prompts that arrived while all B
    decoded, and the decoders' step; None (with a warning) where a request failed, the decoders' streams do not
    time their iterations or no prompt arrived while all B decoded."""
    if result.get("failed"):
        log.warning("load %s left out: %s of its requests failed (see the client log)", kind, result["failed"])
        return None
    decoders = int(np.sum(w.arrival_s == 0))
    starts, ttfts = np.asarray(result["start_times"], float), np.asarray(result["ttfts"], float)
    ends = starts + np.asarray(result["latencies"], float)
    steps = [step for step in map(step_per_delivery, (result.get("itls") or [])[:decoders]) if step is not None]
    if len(steps) < decoders / 2:
        log.warning("load %s left out: the decoders' tokens arrived in chunks (a front end starved of CPU)", kind)
        return None
    first, last = float(np.max(starts[:decoders] + ttfts[:decoders])), float(np.min(ends[:decoders]))
    inside = [i for i in range(decoders, len(w)) if first < starts[i] and starts[i] + ttfts[i] < last]
    if not inside:
        log.warning("load %s left out: no prompt arrived while its %d decoders ran", kind, decoders)
        return None
    return {"decoders": decoders, "starts": starts, "ttfts": ttfts, "ends": ends, "step": float(np.median(steps)),
            "first": first, "inside": inside}


def _mixed_rows(kind: str, w: Workload, result: dict, budget: int) -> list[Row]:
    """The held-out rows of one `mixed B P` load (see the module docstring); none where `_beside_decoders` finds
    nothing to time.

    - `mixed_ttft`: the median TTFT of the prompts that arrived while every decoder was past its first token and
      not finished: half a decode iteration of B (the one in flight at arrival, on average), then the prompt's
      chunk iterations, each with the B decodes, at the decoders' context when it arrived (their tokens so far,
      from their measured time per iteration);
    - `mixed_tpot`: the decoders' median time per output token: decode iterations of B at their mean context,
      with the arrived prompts' tokens, pairs and sampled tokens spread over the decoders' output tokens.
    """
    b = _beside_decoders(f"held-out {kind}", w, result)
    if b is None:
        return []
    decoders, starts, ttfts, ends, inside = b["decoders"], b["starts"], b["ttfts"], b["ends"], b["inside"]
    prompt, output = int(w.prompt_tokens[-1]), int(w.output_tokens[0])
    chunks, pairs = _chunks(prompt, budget)
    context = float(np.median([DECODER_PROMPT + 1 + (starts[i] - b["first"]) / b["step"] for i in inside]))
    ttft = Row("mixed_ttft", float(np.median(ttfts[inside])), chunks + 0.5, prompt + decoders * (chunks + 0.5), pairs,
               decoders * context * (chunks + 0.5), 1 + decoders * (chunks + 0.5), True, chunks)
    share = len(inside) / (output - 1)  # arrived prompts per decoder output token
    tpots = (ends[:decoders] - starts[:decoders] - ttfts[:decoders]) / (output - 1)
    tpot = Row("mixed_tpot", float(np.median(tpots)), 1.0, decoders + share * prompt, share * pairs,
               decoders * (DECODER_PROMPT + output / 2), decoders + 2 * share, False, share * chunks)
    return [ttft, tpot]


def _beside_row(kind: str, w: Workload, result: dict, budget: int) -> Row | None:
    """The fitted row of one `beside B P` load: the iteration that computes a prompt beside B running decodes,
    timed by the decoders' streams (their gap that ends with the prompt's first token: the same iteration outputs
    both), the median over decoders and then over the prompts that arrived while all B decoded; None where
    `_beside_decoders` finds nothing to time, fewer than `BESIDE_MIN_PROMPTS` prompts were timed (a client busy
    reading the decoders' streams sends prompts late), or the prompt takes more than one chunk."""
    b = _beside_decoders(kind, w, result)
    prompt = int(w.prompt_tokens[-1])
    chunks, pairs = _chunks(prompt, budget)
    if b is None or chunks != 1:
        return None
    decoders, step = b["decoders"], b["step"]
    times = [b["starts"][j] + b["ttfts"][j] + np.cumsum(result["itls"][j]) for j in range(decoders)]
    gaps, contexts = [], []
    for i in b["inside"]:
        token = b["starts"][i] + b["ttfts"][i]  # the prompt's first token at the client
        near = []
        for t in times:  # each decoder's longest gap ending within half a step of it
            k = np.nonzero(np.abs(t[1:] - token) <= step / 2)[0] + 1
            if len(k):
                near.append(float(np.max(t[k] - t[k - 1])))
        if len(near) >= decoders / 2:
            gaps.append(float(np.median(near)))
            contexts.append(DECODER_PROMPT + 1 + (b["starts"][i] - b["first"]) / step)
    if len(gaps) < BESIDE_MIN_PROMPTS:  # one stall of the shared machine would be the row
        log.warning("load %s left out: %d of its prompts timed beside all decoders (%d needed)", kind, len(gaps),
                    BESIDE_MIN_PROMPTS)
        return None
    context = float(np.median(contexts))
    return Row("beside", float(np.median(gaps)), 1.0, prompt + decoders, pairs, decoders * context, decoders + 1,
               False, 1.0)


def held_out_rows(loads: list[dict], results: list[dict], budget: int) -> list[Row]:
    """The rows of the held-out `mixed` loads (`_mixed_rows`), to score a fit made without them."""
    rows = []
    for load, result in zip(loads, results):
        if load["kind"].startswith("mixed"):
            rows += _mixed_rows(load["kind"], load["workload"], result, budget)
    return rows


def held_out_errors(fit: FitResult, rows: list[Row]) -> dict:
    """|predicted / measured - 1| of `fit` on rows it was not fitted on, per kind of row and over all, with the
    mean signed error (`engine_fit.errors_by_kind`)."""
    return errors_by_kind(fit, rows, signed=True)


def rows_from(loads: list[dict], results: list[dict], block_size: int, budget: int) -> list[Row]:
    """The fitted rows of calibration loads and their client results (see the module docstring); a load with a
    failed request is left out with a warning (`require_decode_rows` says when too little is left)."""
    rows = []
    for load, result in zip(loads, results):
        if load["kind"].startswith("mixed"):
            continue  # held out (`held_out_rows`)
        if result.get("failed"):  # a reset connection on a stalled machine: this load's shape is missing
            log.warning("calibration load %s (concurrency %s) left out: %s of its requests failed (see the client log)",
                        load["kind"], load["max_concurrency"], result["failed"])
            continue
        if load["kind"].startswith("idle"):
            continue  # `idle_wakeup_from`
        if load["kind"].startswith("beside"):
            row = _beside_row(load["kind"], load["workload"], result, budget)
            rows += [row] if row is not None else []
            continue
        if load["kind"] in ("prefill", "prefix"):
            rows += _first_token_rows(load["kind"], load["workload"], result, block_size, budget)
            engine = _engine_prefill_row(load["workload"], result, budget) if load["kind"] == "prefill" else None
            rows += [engine] if engine is not None else []
        else:
            row = _decode_row(load["kind"], load["workload"], result, load["max_concurrency"])
            rows += [row] if row is not None else []
    return rows


def idle_wakeup_from(loads: list[dict], results: list[dict]) -> dict | None:
    """The engine's wake-up after idle time (`engine_fit.fit_idle_wakeup`) from the `idle` loads: median
    first-token time of identical requests per idle gap, pooled over the loads of one gap (several passes); the
    first request of each load, after the previous load, is left out."""
    per_gap: dict[float, list[float]] = {}
    for load, result in zip(loads, results):
        if load["kind"].startswith("idle") and len(result["ttfts"]) > 1:
            per_gap.setdefault(1e3 * float(load["kind"].split()[1]), []).extend(result["ttfts"][1:])
    gaps = sorted(per_gap)
    return fit_idle_wakeup(gaps, [1e3 * float(np.median(per_gap[g])) for g in gaps]) if len(gaps) >= 3 else None


TTFT_METRIC = "vllm:time_to_first_token_seconds"
ITL_METRIC = "vllm:inter_token_latency_seconds"
TPOT_METRIC = "vllm:request_time_per_output_token_seconds"  # per request: (last - first token) / (tokens - 1)


def engine_mean_s(result: dict, name: str) -> float | None:
    """The engine's own mean of histogram `name` over one client run (the `engine_metrics` the client saved);
    None where the run has none."""
    total, count = (result.get("engine_metrics") or {}).get(name, (0.0, 0.0))
    return total / count if count > 0 else None


def client_path_from(loads: list[dict], results: list[dict]) -> float | None:
    """Milliseconds a request's first token spends outside the engine's own count (`vllm_client`: from the HTTP
    request to the engine's arrival stamp, and the token's way back through the HTTP stream to the client): per
    first-token load (one request at a time), the client's mean TTFT minus the engine's; the median over loads.
    None where the results carry no engine metrics."""
    gaps = []
    for load, result in zip(loads, results):
        engine = engine_mean_s(result, TTFT_METRIC)
        if load["kind"] in ("prefill", "prefix") and engine is not None:
            gaps.append(1e3 * (float(np.mean(result["ttfts"])) - engine))
    return round(max(float(np.median(gaps)), 0.0), 6) if gaps else None


def require_decode_rows(rows: list[Row]) -> None:
    decode = sum(not row.first_token for row in rows)
    if decode < 3:
        raise UserError(f"only {decode} of the calibration's decode loads timed the engine's iterations (the rest came "
                        f"back as one chunk per request: a front end starved of CPU); rerun on a quieter machine")
