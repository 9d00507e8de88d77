"""Inference strategy for prefill and decode: every consistent tp x pp layout (tp within a node, KV heads
replicated as vLLM does, pp across nodes) replicated dp times, priced by the analytic estimator
(`cost_models.estimator`); the best layout meeting the SLO by the objective (latency, throughput per
device, or throughput per dollar). Serving workloads (`passes.serving_strategy`) share the layout
rules, the shape of the decision and the no-fit explanation defined here.

Serving workloads use built-in mean lengths (chat: 1024 prompt / 256 output tokens, summarize:
4096 / 256, code: 2048 / 512; assumptions in the spirit of the ShareGPT, arXiv-summarization and
code-completion workloads used by Sarathi-Serve and DistServe) or the means of a trace CSV with
`num_prefill_tokens,num_decode_tokens` columns.
"""

from __future__ import annotations

from cost_models.cluster import parse_cluster
from cost_models.estimator import estimate_graph, is_generative
from cost_models.parallel_config import Options
from cost_models.serving.deployment import costs_for
from cost_models.serving.engine_settings import engine_settings
from cost_models.serving.policies import Chunked
from cost_models.serving.trace_files import trace_lengths
from ir.errors import UserError
from passes.memory_mapping import memory_map_for_plan
from passes.parallel_layouts import TP_DEGREES, tp_ok
from passes.placement import place
from passes.strategy import CaptureShape, Outcome, Problem, Request

SERVING = {"chat": (1024, 256), "summarize": (4096, 256), "code": (2048, 512)}
PHASE_OF = {"prefill": "prefill", "decode": "decode"}
PP_DEGREES = (1, 2, 4, 8)
CAPTURE_MAX_SEQ = 8192  # inference graphs are captured at the prompt length, at most this (costs scale by phase)


def workload_shape(workload: str, batch, seq_len, input_len, output_len) -> tuple[str, int, int, int]:
    """(phase, batch, input_len, output_len) of an inference workload, defaults filled in."""
    if workload in PHASE_OF:
        return PHASE_OF[workload], batch or (1 if workload == "prefill" else 64), input_len or seq_len or 2048, \
            output_len or 128
    if workload in SERVING:
        i, o = SERVING[workload]
    elif workload.endswith(".csv"):
        i, o = (input_len, output_len) if input_len and output_len else trace_lengths(workload)
    else:
        raise UserError(f"unknown workload '{workload}'; use train, prefill, decode, chat, summarize, code "
                        f"or a trace .csv")
    return "serve", batch or 1, input_len or i, output_len or o


def inference_layouts(graph, cluster, fixed: dict):
    """(tp, pp, dp) layouts of one GPU type: tp within a node and dividing the heads, pp at most the blocks."""
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


def meets_slo(r: dict, slo: dict) -> bool:
    return all(r.get(k) is not None and r[k] <= limit for k, limit in (("ttft_s", slo.get("ttft")),
                                                                          ("tpot_s", slo.get("tpot"))) if limit)


def _score(r: dict, phase: str, objective: str) -> float:
    if objective == "latency" or phase == "prefill":
        return r["latency_s"] if phase != "decode" else r["tpot_s"]
    if objective == "cost" and r.get("dollars_per_hour"):
        return -r["output_tokens_per_s"] / r["dollars_per_hour"]
    devices = r["parallel"]["dp"] * r["parallel"]["tp"] * r["parallel"]["pp"]
    return -(r["output_tokens_per_s"] or r["tokens_per_s"]) / devices


def evaluate_estimate(graph, cluster, decision: dict, dtype: str, rate: float | None) -> dict:
    """The estimator's answer for an inference decision (shared by the search and `verify`)."""
    options = Options(tp=decision["tp"], pp=decision["pp"], dp=decision["dp"], batch=decision["batch"],
                      input_len=decision["input_len"], output_len=decision["output_len"], dtype=dtype,
                      qps=rate if decision["phase"] == "serve" else None)
    r = estimate_graph(graph, cluster, decision["phase"], options)
    devices = decision["dp"] * decision["tp"] * decision["pp"]
    price = (r.get("device") and next(n.device.price_per_hour for n in cluster.nodes)) or None
    r["dollars_per_hour"] = price * devices if price else None
    r["devices"] = devices
    return r


def inference_decision(graph, cluster, phase, tp, pp, dp, batch, input_len, output_len, stages) -> dict:
    """The plan's decision for dp replicas of a tp x pp instance whose stages hold `stages` layer ranges."""
    device = cluster.nodes[0].device.name
    placements = place(cluster, dp, [(0, device, tp)] * pp)
    return {"kind": "inference", "phase": phase, "dp": dp, "tp": tp, "pp": pp, "ep": 1, "batch": batch,
            "input_len": input_len, "output_len": output_len,
            "stages": [{"stage": p.stage, "layers": list(rng), "first_layer": graph.layers[rng[0]].name,
                        "last_layer": graph.layers[rng[1] - 1].name, "device": p.device, "tp": tp,
                        "node_group": 0, "ranks": [list(r) for r in p.ranks]}
                       for p, rng in zip(placements, stages)]}


def batch_engines(graph, cluster, dtype: str, tp: int, pp: int, dp: int, batch: int, input_len: int,
                  output_len: int) -> dict:
    """Engine settings of a prefill or decode batch plan's instances, so its engine scripts serve the batch:
    each replica runs its share of the batch at once (chunked prefill, a budget of at least vLLM's 2048 tokens,
    the batch and one prompt), requests of input_len + output_len tokens."""
    seqs = max(-(-batch // dp), 1)
    longest = input_len + max(output_len, 1)
    budget = max(2048, seqs, input_len)
    cost = costs_for(graph, cluster, dtype).get(tp, pp)
    return {"instance": engine_settings(cost, Chunked(budget, max_num_seqs=seqs), longest)}


def no_fit_message(graph, cluster, tried, batch: int, input_len: int, output_len: int, dtype: str) -> str:
    """The no-fit line, plus what offloading to host memory would give at the widest tp tried."""
    from passes.offload import inference_offload

    line = _no_fit(graph, cluster, tried)
    tps = [k[0] for k, _ in tried if k[1] == 1]
    if not tps:
        return line
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


def prepare_inference(request: Request) -> Problem:
    """Checks and defaults shared by inference and serving plans (one GPU type, lengths resolved)."""
    cluster = parse_cluster(request.cluster_spec)
    if not cluster.is_homogeneous:
        raise UserError("inference plans need one GPU type; plan each type of a mixed cluster separately "
                        "(mixed-type training plans are supported: --workload train)")
    phase, batch, input_len, output_len = workload_shape(request.workload, request.batch, request.seq_len,
                                                         request.input_len, request.output_len)
    objective = request.objective or ("latency" if phase == "prefill" else "throughput")
    inputs = {"workload": {"kind": request.workload, "batch": batch, "input_len": input_len, "output_len": output_len,
                           "rate": request.rate},
              "objective": objective, "slo": request.slo, "fixed": request.fixed, "dtype": request.dtype}
    if request.engine_profile:
        inputs["engine_profile"] = request.engine_profile
    return Problem(request, cluster, objective, inputs,
                   {"phase": phase, "batch": batch, "input_len": input_len, "output_len": output_len})


def inference_capture_shape(request: Request) -> CaptureShape:
    _, _, input_len, _ = workload_shape(request.workload, request.batch, request.seq_len, request.input_len,
                                        request.output_len)
    return CaptureShape(min(input_len, CAPTURE_MAX_SEQ), "bf16" if request.dtype == "fp8" else request.dtype)


class InferenceStrategy:
    """`--workload prefill` or `decode`: the analytic estimator over every layout."""

    name = "inference"

    def capture_shape(self, request: Request) -> CaptureShape:
        return inference_capture_shape(request)

    def prepare(self, request: Request, graph) -> Problem:
        problem = prepare_inference(request)
        if problem.shape["phase"] != "prefill" and not is_generative(graph):
            raise UserError(f"{graph.model} does not generate tokens; plan it with --workload prefill or train")
        if request.engine_profile:
            raise UserError(f"--engine-profile prices serving iterations; {request.workload!r} plans use the cost "
                            f"model (use a serving --workload: chat, summarize, code or a trace .csv)")
        return problem

    def costs(self, graph, problem: Problem):
        return None  # the estimator prices each layout from the graph's phase costs

    def propose(self, graph, problem: Problem, costs) -> list:
        return list(inference_layouts(graph, problem.cluster, problem.request.fixed))

    def search(self, graph, problem: Problem, costs, candidates: list) -> Outcome:
        request, cluster, s = problem.request, problem.cluster, problem.shape
        phase, slo = s["phase"], request.slo
        tried = []
        for tp, pp, dp in candidates:
            d = {"phase": phase, "tp": tp, "pp": pp, "dp": dp, "batch": s["batch"], "input_len": s["input_len"],
                 "output_len": s["output_len"]}
            tried.append(((tp, pp, dp), evaluate_estimate(graph, cluster, d, request.dtype, request.rate)))
        fitting = [(k, r) for k, r in tried if r["fits"]]
        if not fitting:
            raise UserError(no_fit_message(graph, cluster, tried, s["batch"], s["input_len"], s["output_len"],
                                           request.dtype))
        meeting = [(k, r) for k, r in fitting if meets_slo(r, slo)]
        if not meeting:
            best_ttft = min((r["ttft_s"] for _, r in fitting if r.get("ttft_s")), default=None)
            best_tpot = min((r["tpot_s"] for _, r in fitting if r.get("tpot_s")), default=None)
            raise UserError(f"no plan meets the SLO {slo}: the best achievable on {cluster.describe()} is "
                            f"TTFT {best_ttft if best_ttft is None else round(best_ttft, 4)} s and TPOT "
                            f"{best_tpot if best_tpot is None else round(best_tpot, 4)} s; relax the SLO or add devices")
        meeting.sort(key=lambda kr: (_score(kr[1], phase, problem.objective), kr[0]))
        (tp, pp, dp), best = meeting[0]
        decision = inference_decision(graph, cluster, phase, tp, pp, dp, s["batch"], s["input_len"], s["output_len"],
                                      [tuple(st) for st in best["stages"]])
        decision["engines"] = batch_engines(graph, cluster, request.dtype, tp, pp, dp, s["batch"], s["input_len"],
                                            s["output_len"])
        solver = {"grouping": "min-max DP per layout (cost_models.stage_partition)", "status": "optimal",
                  "objective": _score(best, phase, problem.objective), "candidates_evaluated": len(tried),
                  "candidates_pruned": len(tried) - len(meeting)}
        alternatives = [{"layout": f"tp={k[0]} pp={k[1]} dp={k[2]}", "latency_s": r["latency_s"], "tpot_s": r["tpot_s"],
                         "output_tokens_per_s": r["output_tokens_per_s"], "tokens_per_s": r["tokens_per_s"]}
                        for k, r in meeting[1:5]]
        return Outcome(decision, best, solver, _binding(best, slo, phase), alternatives=alternatives)

    def memory_map(self, graph, problem: Problem, plan_json: dict) -> dict:
        return memory_map_for_plan(plan_json, graph, problem.cluster)

    def evaluate(self, graph, cluster, plan_json: dict) -> dict:
        return evaluate_estimate(graph, cluster, plan_json["decision"], plan_json["inputs"]["dtype"],
                                 plan_json["inputs"]["workload"].get("rate"))

    def check(self, graph, cluster, plan_json: dict) -> list[str]:
        return []
