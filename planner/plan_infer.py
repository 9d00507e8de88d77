"""Inference and serving plans: choose tp, pp and data-parallel replicas for prefill, decode or a
serving workload under SLOs, by evaluating every consistent layout with the estimator.

Serving workloads use built-in mean lengths (chat: 1024 prompt / 256 output tokens, summarize:
4096 / 256, code: 2048 / 512; assumptions in the spirit of the ShareGPT, arXiv-summarization
and code-completion workloads used by Sarathi-Serve and DistServe) or the means of a trace CSV
with `num_prefill_tokens,num_decode_tokens` columns. Prefill and decode plans use the analytic
estimator; serving plans (`serve`) search with the iteration-level simulator (`cost_models.serving`):

- candidates: colocated instances of every fitting tp x pp (tp within a node, KV heads replicated as
  vLLM does; pp across nodes) under prefill-first, chunked prefill (budgets `CHUNK_BUDGETS`) and, for
  MoE models, layered prefill (the published rule for G); disaggregated xPyD units (x prefill, y decode
  instances, each phase with its own tp, pp 1, gcd(x, y) = 1 since units are replicated);
- each candidate's goodput (highest rate with >= 90% of requests meeting TTFT and TPOT) comes from
  simulated requests of the workload's length distribution (seed `SERVE_SEED`, Poisson arrivals; at least
  `SERVE_REQUESTS` and `SERVE_HORIZON_S` seconds of arrivals, so that an overloaded queue shows rather than a
  short burst draining) on one unit, by log-scale bisection; units are then replicated over the cluster (round-robin dispatch);
- branch and bound: candidates go in order of an offline throughput bound per GPU; one simulation at
  the rate needed to beat the incumbent prunes a candidate that cannot;
- objective: per-GPU goodput, or with `--rate R` the fewest GPUs whose goodput covers R;
- the plan's predictions are one simulation of the chosen deployment at its operating rate (goodput,
  or R), recomputed by `evaluate_inference` from `decision.serving` (deterministic, so `verify` agrees).
"""

from __future__ import annotations

import csv
from pathlib import Path

from cost_models.estimator import estimate_graph, is_generative
from cost_models.parallel_config import Options
from ir.errors import UserError
from passes.memory_mapping import memory_map_for_plan, verify_memory_map
from passes.parallel_layouts import TP_DEGREES, tp_ok
from passes.placement import place
from planner.plan_file import PLAN_FORMAT, Plan, fingerprint
from planner.serving_evaluate import evaluate_serving

SERVING = {"chat": (1024, 256), "summarize": (4096, 256), "code": (2048, 512)}
PHASE_OF = {"prefill": "prefill", "decode": "decode"}
PP_DEGREES = (1, 2, 4, 8)


def trace_lengths(path: str) -> tuple[int, int]:
    """Mean prompt and output lengths of a trace CSV; a bad row names its line."""
    file = Path(path)
    try:
        rows = list(csv.DictReader(file.open(newline="")))
    except OSError as exc:
        raise UserError(f"cannot read trace {file}: {exc.strerror}") from None
    if not rows or not {"num_prefill_tokens", "num_decode_tokens"} <= set(rows[0]):
        raise UserError(f"{file}: a trace needs columns num_prefill_tokens,num_decode_tokens")
    inputs, outputs = [], []
    for line, row in enumerate(rows, start=2):
        try:
            p, d = int(float(row["num_prefill_tokens"])), int(float(row["num_decode_tokens"]))
        except (TypeError, ValueError):
            raise UserError(f"{file}:{line}: num_prefill_tokens and num_decode_tokens must be numbers, "
                            f"got {row.get('num_prefill_tokens')!r}, {row.get('num_decode_tokens')!r}") from None
        if p < 1 or d < 0:
            raise UserError(f"{file}:{line}: token counts must be positive, got {p}, {d}")
        inputs.append(p)
        outputs.append(d)
    return round(sum(inputs) / len(inputs)), max(round(sum(outputs) / len(outputs)), 1)


def _shape(workload: str, batch, seq_len, input_len, output_len) -> tuple[str, int, int, int]:
    if workload in PHASE_OF:
        return PHASE_OF[workload], batch or (1 if workload == "prefill" else 64), input_len or seq_len or 2048, \
            output_len or 128
    if workload in SERVING:
        i, o = SERVING[workload]
    elif workload.endswith(".csv"):
        i, o = trace_lengths(workload)
    else:
        raise UserError(f"unknown workload '{workload}'; use train, prefill, decode, chat, summarize, code "
                        f"or a trace .csv")
    return "serve", batch or 1, input_len or i, output_len or o


def _layouts(graph, cluster, fixed: dict):
    node = cluster.nodes[0]
    blocks = sum(1 for layer in graph.layers if layer.kind == "block")
    for tp in TP_DEGREES:
        for pp in PP_DEGREES:
            if tp * pp > cluster.num_devices or pp > blocks or not tp_ok(graph, tp, node.devices_per_node,
                                                                                 replicate_kv=True):
                continue
            if any(fixed.get(k) not in (None, v) for k, v in (("tp", tp), ("pp", pp))):
                continue
            dp = fixed.get("dp") or cluster.num_devices // (tp * pp)
            if dp * tp * pp <= cluster.num_devices:
                yield tp, pp, dp


def _meets(r: dict, slo: dict) -> bool:
    return all(r.get(k) is not None and r[k] <= limit for k, limit in (("ttft_s", slo.get("ttft")),
                                                                          ("tpot_s", slo.get("tpot"))) if limit)


def _score(r: dict, phase: str, objective: str) -> float:
    if objective == "latency" or phase == "prefill":
        return r["latency_s"] if phase != "decode" else r["tpot_s"]
    if objective == "cost" and r.get("dollars_per_hour"):
        return -r["output_tokens_per_s"] / r["dollars_per_hour"]
    devices = r["parallel"]["dp"] * r["parallel"]["tp"] * r["parallel"]["pp"]
    return -(r["output_tokens_per_s"] or r["tokens_per_s"]) / devices


def evaluate_inference(graph, cluster, decision: dict, dtype: str, rate: float | None, costs=None,
                       engine_profile: str | None = None) -> dict:
    """The estimator's answer for an inference decision (shared by `plan` and `verify`); serving
    decisions with a `serving` section are simulated (`evaluate_serving`)."""
    if decision["phase"] == "serve" and decision.get("serving"):
        return evaluate_serving(graph, cluster, decision, dtype, costs, engine_profile)
    options = Options(tp=decision["tp"], pp=decision["pp"], dp=decision["dp"], batch=decision["batch"],
                      input_len=decision["input_len"], output_len=decision["output_len"], dtype=dtype,
                      qps=rate if decision["phase"] == "serve" else None)
    r = estimate_graph(graph, cluster, decision["phase"], options)
    devices = decision["dp"] * decision["tp"] * decision["pp"]
    price = (r.get("device") and next(n.device.price_per_hour for n in cluster.nodes)) or None
    r["dollars_per_hour"] = price * devices if price else None
    r["devices"] = devices
    return r


def _decision(graph, cluster, phase, tp, pp, dp, batch, input_len, output_len, stages) -> dict:
    device = cluster.nodes[0].device.name
    placements = place(cluster, dp, [(0, device, tp)] * pp)
    return {"kind": "inference", "phase": phase, "dp": dp, "tp": tp, "pp": pp, "ep": 1, "batch": batch,
            "input_len": input_len, "output_len": output_len,
            "stages": [{"stage": p.stage, "layers": list(rng), "first_layer": graph.layers[rng[0]].name,
                        "last_layer": graph.layers[rng[1] - 1].name, "device": p.device, "tp": tp,
                        "node_group": 0, "ranks": [list(r) for r in p.ranks]}
                       for p, rng in zip(placements, stages)]}


def plan_inference(model_ref, cluster, cluster_spec, workload, *, objective, batch, seq_len, rate, slo, fixed,
                   dtype, input_len, output_len, warm_start: dict | None = None, engine_profile: str | None = None) -> Plan:
    import planner

    if not cluster.is_homogeneous:
        raise UserError("inference plans need one GPU type; plan each type of a mixed cluster separately "
                        "(mixed-type training plans are supported: --workload train)")
    given = (input_len, output_len)
    phase, batch, input_len, output_len = _shape(workload, batch, seq_len, input_len, output_len)
    graph = planner.capture(model_ref, seq_len=min(input_len, 8192), dtype="bf16" if dtype == "fp8" else dtype)
    if phase != "prefill" and not is_generative(graph):
        raise UserError(f"{graph.model} does not generate tokens; plan it with --workload prefill or train")
    objective = objective or ("latency" if phase == "prefill" else "throughput")
    if phase == "serve":
        from planner.plan_serving import plan_serving

        data = plan_serving(graph, cluster, workload, model_ref=model_ref, cluster_spec=cluster_spec, slo=slo, rate=rate,
                            fixed=fixed, dtype=dtype, objective=objective, batch=batch, input_len=input_len,
                            output_len=output_len, fixed_lengths=given[0] is not None or given[1] is not None,
                            warm_start=warm_start, engine_profile=engine_profile)
        data["memory_map"] = _checked_memory_map(data, graph, cluster)
        return Plan(data)
    if engine_profile:
        raise UserError(f"--engine-profile prices serving iterations; {workload!r} plans use the cost model "
                        f"(use a serving --workload: chat, summarize, code or a trace .csv)")
    tried = []
    for tp, pp, dp in _layouts(graph, cluster, fixed):
        d = {"phase": phase, "tp": tp, "pp": pp, "dp": dp, "batch": batch, "input_len": input_len,
             "output_len": output_len}
        r = evaluate_inference(graph, cluster, d, dtype, rate)
        tried.append(((tp, pp, dp), r))
    fitting = [(k, r) for k, r in tried if r["fits"] and (phase != "serve" or (r["max_batch"] or 0) > 0)]
    if not fitting:
        raise UserError(_no_fit_offload(graph, cluster, tried, batch, input_len, output_len, dtype))
    meeting = [(k, r) for k, r in fitting if _meets(r, slo)]
    if not meeting:
        best_ttft = min((r["ttft_s"] for _, r in fitting if r.get("ttft_s")), default=None)
        best_tpot = min((r["tpot_s"] for _, r in fitting if r.get("tpot_s")), default=None)
        raise UserError(f"no plan meets the SLO {slo}: the best achievable on {cluster.describe()} is "
                        f"TTFT {best_ttft if best_ttft is None else round(best_ttft, 4)} s and TPOT "
                        f"{best_tpot if best_tpot is None else round(best_tpot, 4)} s; relax the SLO or add devices")
    meeting.sort(key=lambda kr: (_score(kr[1], phase, objective), kr[0]))
    (tp, pp, dp), best = meeting[0]
    inputs = {"model": model_ref, "cluster": cluster_spec, "workload": {"kind": workload, "batch": batch,
              "input_len": input_len, "output_len": output_len, "rate": rate}, "objective": objective,
              "slo": slo, "fixed": fixed, "dtype": dtype, "planner_version": "0.1.0"}
    decision = _decision(graph, cluster, phase, tp, pp, dp, batch, input_len, output_len,
                         [tuple(s) for s in best["stages"]])
    data = {
        "format": PLAN_FORMAT, "inputs": inputs, "fingerprint": fingerprint(inputs), "model_name": graph.model,
        "cluster_description": cluster.describe(), "decision": decision, "predicted": best,
        "solver": {"grouping": "min-max DP per layout (cost_models.stage_partition)", "status": "optimal",
                   "objective": _score(best, phase, objective), "candidates_evaluated": len(tried),
                   "candidates_pruned": len(tried) - len(meeting)},
        "alternatives": [{"layout": f"tp={k[0]} pp={k[1]} dp={k[2]}", "latency_s": r["latency_s"],
                          "tpot_s": r["tpot_s"], "output_tokens_per_s": r["output_tokens_per_s"],
                          "tokens_per_s": r["tokens_per_s"]} for k, r in meeting[1:5]],
        "binding_constraints": _binding(best, slo, phase),
    }
    data["memory_map"] = _checked_memory_map(data, graph, cluster)
    return Plan(data)


def _checked_memory_map(data: dict, graph, cluster) -> dict:
    """The plan's memory map, verified as the plan is made (a failure is a planner bug)."""
    memory_map = memory_map_for_plan(data, graph, cluster)
    broken = verify_memory_map(memory_map)
    if broken:
        raise RuntimeError(f"memory map of the plan does not verify: {broken[0]}")
    return memory_map


def _no_fit_offload(graph, cluster, tried, batch: int, input_len: int, output_len: int, dtype: str) -> str:
    """The no-fit line, plus what offloading to host memory would give at the widest tp tried."""
    line = _no_fit(graph, cluster, tried)
    tps = [k[0] for k, _ in tried if k[1] == 1]
    if not tps:
        return line
    from passes.offload import inference_offload

    try:
        report = inference_offload(graph, cluster, batch=max(batch, 1), input_len=input_len, output_len=output_len,
                                   tp=max(tps), dtype=dtype)
    except UserError:
        return line
    return f"{line}; {report['message']}"


def _no_fit(graph, cluster, tried) -> str:
    device = cluster.nodes[0].device
    smallest = min(tried, key=lambda kr: kr[1]["memory_per_device_bytes"]) if tried else None
    if smallest is None:
        return f"no tp/pp layout of {graph.model} is valid on {cluster.describe()}"
    (tp, pp, _), r = smallest
    weights = r.get("memory_breakdown_bytes", {}).get("weights", 0)
    return (f"{graph.model} does not fit on {cluster.describe()}: at tp={tp} pp={pp} the weights need "
            f"{weights / 1e9:.1f} GB per device and the total {r['memory_per_device_bytes'] / 1e9:.1f} GB; "
            f"a {device.name} holds {device.memory_bytes / 1e9:.0f} GB; add devices (tp*pp >= "
            f"{max(2 * tp * pp, 2)}) or use --weight-dtype int8/int4")


def _binding(r: dict, slo: dict, phase: str) -> list[str]:
    mem = r["memory_per_device_bytes"] / r["memory_capacity_bytes"]
    out = [f"memory: {r['memory_per_device_bytes'] / 1e9:.1f} of {r['memory_capacity_bytes'] / 1e9:.1f} GB "
           f"per device ({mem:.0%})"]
    for key, name in (("ttft", "ttft_s"), ("tpot", "tpot_s")):
        if slo.get(key) and r.get(name) is not None:
            out.append(f"SLO {key}: predicted {r[name]:.4f} s against {slo[key]} s")
    if phase == "serve" and r.get("max_batch") is not None:
        out.append(f"KV cache: at most {r['max_batch']} concurrent sequences")
    return out


# ---------------------------------------------------------------------------------------------------
# Serving plans: search over policies and layouts with the iteration-level simulator.
