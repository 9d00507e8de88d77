"""What-if sweeps: plan (or estimate) a model over clusters and varied workload settings.

Every point is one `planner.plan` call (or `planner.estimate` with `mode="estimate"`); points run in
parallel processes and come back in sweep order, so the records are deterministic. A point that
cannot be planned (does not fit, misses the SLO) is a record with its reason, not a failure.
Captured graphs come from the on-disk cache, so workers do not re-capture (or even import torch).

>>> rows = what_if("tiny-llama", ["2xcpu"], workload="decode", vary={"batch": [1, 4], "input_len": [64]}, jobs=1)
>>> [r["batch"] for r in rows], all(r["ok"] for r in rows)
([1, 4], True)
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from ir.errors import UserError

log = logging.getLogger(__name__)

VARY_KEYS = {"batch": int, "rate": float, "input_len": int, "output_len": int, "seq_len": int, "tp": int, "pp": int,
             "dp": int, "ttft": float, "tpot": float}
SLO_KEYS = ("ttft", "tpot")  # varied SLOs (seconds) replace that part of --slo at each point (plan mode only)
RECORD_KEYS = ("step_time_s", "tokens_per_s", "output_tokens_per_s", "ttft_s", "tpot_s", "latency_s", "mfu",
               "memory_per_device_bytes", "max_batch", "dollars_per_hour", "dollars_per_million_tokens",
               "energy_per_token_j", "devices", "gpus_used", "goodput_rps", "goodput_per_gpu")


def parse_vary(items: list[str]) -> dict[str, list]:
    """["batch=1,8,64", "rate=2,4"] -> {"batch": [1, 8, 64], "rate": [2.0, 4.0]}."""
    out: dict[str, list] = {}
    for item in items:
        key, _, values = item.partition("=")
        key = key.strip().replace("-", "_")
        if key not in VARY_KEYS:
            raise UserError(f"--vary {item!r}: unknown key {key!r}; vary one of {', '.join(VARY_KEYS)}")
        try:
            parsed = [VARY_KEYS[key](v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise UserError(f"--vary {item!r}: values must be {VARY_KEYS[key].__name__}s separated by commas") from None
        if not parsed or not all(0 < v < float("inf") for v in parsed):  # nan and inf are not values to sweep
            raise UserError(f"--vary {item!r}: give positive values, e.g. {key}=1,2,4")
        out[key] = parsed
    return out


def _point(args: tuple) -> dict:
    model, cluster, workload, settings, slo, objective, mode, dtype, trust = args
    import planner

    record = {"cluster": cluster, **settings, "ok": False, "reason": None}
    try:
        if mode == "estimate":
            phase = {"train": "train", "prefill": "prefill", "decode": "decode"}.get(workload, "serve")
            options = {k: v for k, v in settings.items() if k != "rate"}
            if "rate" in settings:
                options["qps"] = settings["rate"]
            seq = options.pop("seq_len", None)
            if seq and "input_len" not in options:
                options["input_len"] = seq
            result = planner.estimate(model, cluster, phase, dtype=dtype, trust_model_code=trust, **options)
            record["layout"] = "dp={dp} tp={tp} pp={pp}".format(**result["parallel"])
            record["ok"] = bool(result["fits"])
            record["reason"] = None if result["fits"] else "does not fit in memory"
        else:
            options = {k: v for k, v in settings.items() if k not in SLO_KEYS}
            slo = {**slo, **{k: v for k, v in settings.items() if k in SLO_KEYS}}
            result = planner.plan(model, cluster, workload, slo=slo, objective=objective, dtype=dtype,
                                  trust_model_code=trust, **options).to_dict()
            d = result["decision"]
            record["layout"] = f"dp={d['dp']} tp={d['tp']} pp={d['pp']}"
            if d.get("serving"):
                record["policy"] = d["serving"]["description"]
            result = {**result["predicted"], "uncertainty": result["predicted"].get("uncertainty")}
            record["ok"] = True
        for key in RECORD_KEYS:
            record[key] = result.get(key)
        band = (result.get("uncertainty") or {}).get("relative_error_80")
        record["relative_error_80"] = band
    except UserError as exc:
        record["reason"] = str(exc)
    return record


def what_if(model: str, clusters: list[str], *, workload: str = "chat", vary: dict | None = None, slo: dict | None = None,
            objective: str | None = None, mode: str = "plan", dtype: str = "bf16", jobs: int = 2,
            progress=None, trust_model_code: bool = False) -> list[dict]:
    """One record per (cluster, combination of varied values), in sweep order."""
    if not clusters:
        raise UserError("give at least one --cluster")
    if mode not in ("plan", "estimate"):
        raise UserError(f"mode must be plan or estimate, got {mode!r}")
    vary = vary or {}
    slo_keys = "/".join(sorted(set(vary) & set(SLO_KEYS)))
    if slo_keys and mode == "estimate":
        raise UserError(f"--vary {slo_keys} needs --mode plan: an estimate has no SLO to meet")
    if slo_keys and workload in ("train", "prefill", "decode"):
        raise UserError(f"--vary {slo_keys} applies to serving workloads (chat, summarize, code or a trace .csv); "
                        f"{workload!r} plans have no TTFT/TPOT SLO")
    keys = sorted(vary)
    combos = [dict(zip(keys, values)) for values in itertools.product(*(vary[k] for k in keys))] or [{}]
    points = [(model, c, workload, s, slo or {}, objective, mode, dtype, trust_model_code) for c in clusters
              for s in combos]
    out = []
    # the first point runs here: it captures the graph into this process's cache, which forked
    # workers inherit, so no worker captures (or imports torch) again
    serial = points if jobs <= 1 or len(points) <= 2 else points[:1]
    for p in serial:
        out.append(_point(p))
        if progress:
            progress()
    if len(serial) == len(points):
        return out
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("fork")) as pool:
        for record in pool.map(_point, points[len(serial):], chunksize=max(len(points) // (4 * jobs), 1)):
            out.append(record)
            if progress:
                progress()
    return out
