"""Serving strategy: search deployments (policy, per-phase parallelism, replicas) by simulated goodput with
the iteration-level simulator (`cost_models.serving`): candidates from `passes.serving_candidates`, branch
and bound from `passes.serving_search`; the chosen deployment is then settled (below) and recorded in the
decision's `serving` section, from which `passes.serving_evaluate` recomputes its predictions.

Settling: the search rated one unit on its own request sample; the deployment (k units, on their own
requests) must hold 90% attainment with a stable queue (`metrics.is_sustainable`) at what the plan reports.
With a target rate, units are added while it misses; else the reported rate is lowered in steps of 5%. A
deployment that still misses after `SETTLE_STEPS` is an error naming its attainment, not a plan.
"""

from __future__ import annotations

import math

from cost_models.estimator import estimate_graph, is_generative
from cost_models.parallel_config import Options
from cost_models.serving.capacity import MAX_UTILIZATION
from cost_models.serving.deployment import costs_for
from cost_models.serving.engine_settings import serving_engine_facts
from cost_models.serving.metrics import ATTAINMENT, MAX_QUEUE_GROWTH
from cost_models.serving.policies import Chunked, Layered, PrefillFirst
from cost_models.serving.workload import context_filter
from ir.errors import UserError
from passes.inference_strategy import (
    SERVING,
    evaluate_estimate,
    inference_capture_shape,
    inference_decision,
    inference_layouts,
    no_fit_message,
    prepare_inference,
)
from passes.memory_mapping import memory_map_for_plan
from passes.serving_candidates import ServingCandidate, serving_candidates
from passes.serving_evaluate import POLICY_NAMES, base_workload, evaluate_serving
from passes.serving_search import (
    SERVE_REQUESTS,
    SERVE_REQUESTS_MAX,
    SERVE_SEED,
    horizon_s,
    requests_at,
    search_serving,
    units_for,
)
from passes.strategy import CaptureShape, Outcome, Problem, Request

FINAL_REQUESTS_MAX = 24000  # the chosen deployment: the per-unit count times the units, at most this
DEFAULT_SLO = {"ttft": 5.0, "tpot": 0.25}  # used for an SLO key the user leaves out (documented in the plan)
SETTLE_STEPS, SETTLE_FACTOR = 12, 0.95  # the chosen deployment re-checked on its own requests: steps of -5%


def serving_section(c: ServingCandidate, k: int, source: str, requests: int, rate: float, slo: dict, cluster) -> dict:
    """The decision's `serving` record: what `passes.serving_evaluate` rebuilds and simulates."""
    p = c.policy
    section = {"policy": POLICY_NAMES[type(p)], "chunked_prefill": isinstance(p, Chunked),
               "chunk_tokens": p.budget if isinstance(p, Chunked) else None,
               "layer_groups": p.groups if isinstance(p, Layered) else None, "disaggregated": None,
               "description": c.scaled(k).describe(), "workload": source, "requests": requests, "seed": SERVE_SEED,
               "rate_rps": rate, "slo": slo, "units": k, "unit": c.describe()}
    if isinstance(p, Layered):
        section["layer_groups_rule"] = "per batch from the prefill tokens: <=512 1, <=1024 2, <=2048 4, <=4096 8, else 16"
    if isinstance(p, PrefillFirst):
        section["max_num_batched_tokens"] = p.max_batched_tokens
    if c.ep_dp > 1:
        section["expert_parallel_groups"] = c.ep_dp
    if c.disaggregated:
        x, ptp = k * p.prefill_instances, p.prefill_tp
        section["disaggregated"] = {
            "prefill_instances": x, "decode_instances": k * p.decode_instances, "prefill_tp": ptp,
            "prefill_pp": p.prefill_pp, "decode_tp": p.decode_tp, "decode_pp": p.decode_pp,
            "prefill_ranks": [list(range(i * ptp, (i + 1) * ptp)) for i in range(x)],
            "kv_transfer_link": cluster.link_between(0, min(x * ptp, cluster.num_devices - 1)).name}
    return section


def serving_record(c: ServingCandidate, k: int, shape: dict, requests: int, rate: float, cluster, costs) -> dict:
    """The whole `decision.serving` of k units of `c` on the problem's shape: the simulated deployment
    (`serving_section`), the context filter, and what the engine scripts need (`serving_engine_facts`)."""
    section = serving_section(c, k, shape["source"], requests, rate, shape["slo"], cluster)
    if shape["context"]:
        section.update(context_tokens=shape["context"], requests_over_context=round(shape["over"], 4))
    section.update(serving_engine_facts(costs, c.policy, c.tp, c.pp, shape["source"], shape["context"], c.ep_dp))
    return section


def serving_decision(graph, cluster, c: ServingCandidate, k: int, batch, input_len, output_len, dtype) -> dict:
    """The inference decision of k units of `c` (decode instances' ranks, for a disaggregated unit)."""
    if not c.disaggregated:
        dp = k * c.ep_dp  # a wide expert-parallel unit is ep_dp attention groups of tp ranks
        options = Options(tp=c.tp, pp=c.pp, dp=dp, batch=batch, input_len=input_len, output_len=output_len,
                          dtype=dtype, ep=c.ep_dp, ep_over_dp=c.ep_dp > 1)
        stages = [tuple(s) for s in estimate_graph(graph, cluster, "serve", options)["stages"]]
        decision = inference_decision(graph, cluster, "serve", c.tp, c.pp, dp, batch, input_len, output_len, stages)
        decision["ep"] = c.ep
        return decision
    p = c.policy
    y, tp = k * p.decode_instances, p.decode_tp
    offset = -(-k * p.prefill_instances * p.prefill_tp // tp) * tp
    device = cluster.nodes[0].device.name
    return {"kind": "inference", "phase": "serve", "dp": y, "tp": tp, "pp": 1, "ep": 1, "batch": batch,
            "input_len": input_len, "output_len": output_len,
            "stages": [{"stage": 0, "layers": [0, len(graph.layers)], "first_layer": graph.layers[0].name,
                        "last_layer": graph.layers[-1].name, "device": device, "tp": tp, "node_group": 0,
                        "ranks": [list(range(offset + j * tp, offset + (j + 1) * tp)) for j in range(y)]}]}


def _holds(predicted: dict) -> bool:
    """A deployment holds at its rate: 90% attainment, a queue that does not grow, and the rate at most
    MAX_UTILIZATION of the saturated service rate (steady state, `cost_models.serving.capacity`)."""
    return (predicted["slo_attainment"] >= ATTAINMENT and predicted["queue_growth"] <= MAX_QUEUE_GROWTH
            and predicted["rate_rps"] <= MAX_UTILIZATION * predicted["saturation_rps"] * (1 + 1e-9))


def _binding(r: dict, slo: dict, c: ServingCandidate, k: int, cluster, rate) -> list[str]:
    out = [f"memory: {r['memory_per_device_bytes'] / 1e9:.1f} of {r['memory_capacity_bytes'] / 1e9:.1f} GB per device"]
    out.append(f"SLO ttft: mean {r['ttft_s']:.4f} s, p90 {r['ttft_p90_s']:.4f} s against {slo['ttft']} s")
    if r.get("tpot_s") is not None:
        out.append(f"SLO tpot: mean {r['tpot_s']:.4f} s, p90 {r['tpot_p90_s']:.4f} s against {slo['tpot']} s")
    out.append(f"SLO attainment {r['slo_attainment']:.1%} at {r['rate_rps']:.3g} req/s (goodput needs >= 90%)")
    out.append(f"devices: {k * c.gpus} of {cluster.num_devices} used ({k} x {c.describe()})"
               + (f" for {rate} req/s" if rate is not None else ""))
    return out


class ServingStrategy:
    """Serving workloads (chat, summarize, code, a trace .csv): simulated goodput under the SLO."""

    name = "serve"

    def capture_shape(self, request: Request) -> CaptureShape:
        return inference_capture_shape(request)

    def prepare(self, request: Request, graph) -> Problem:
        problem = prepare_inference(request)
        if not is_generative(graph):
            raise UserError(f"{graph.model} does not generate tokens; plan it with --workload prefill or train")
        s = problem.shape
        named = request.workload in SERVING or request.workload.endswith(".csv")
        fixed_lengths = request.input_len is not None or request.output_len is not None
        source = request.workload if named and not fixed_lengths else f"fixed:{s['input_len']}:{s['output_len']}"
        # a named workload keeps to the model's context (prompt + output), as serving benchmarks filter traces
        context, over = context_filter(source, graph.config.get("max_position_embeddings"))
        s.update(source=source, context=context, over=over,
                 slo={**DEFAULT_SLO, **{k: v for k, v in (request.slo or {}).items() if v}})
        return problem

    def costs(self, graph, problem: Problem):
        return costs_for(graph, problem.cluster, problem.request.dtype, problem.request.engine_profile)

    def propose(self, graph, problem: Problem, costs) -> list[ServingCandidate]:
        s = problem.shape
        w = base_workload(s["source"], SERVE_REQUESTS, SERVE_SEED, s["context"])
        s["mean_output"] = float(w.output_tokens.mean())
        return serving_candidates(graph, problem.cluster, costs, problem.request.fixed, w)

    def search(self, graph, problem: Problem, costs, candidates: list[ServingCandidate]) -> Outcome:
        request, cluster, s = problem.request, problem.cluster, problem.shape
        slo, rate, fixed = s["slo"], request.rate, request.fixed
        if not candidates:
            tried = [((tp, pp, 1), evaluate_estimate(graph, cluster, {"phase": "serve", "tp": tp, "pp": pp, "dp": 1,
                      "batch": s["batch"], "input_len": s["input_len"], "output_len": s["output_len"]},
                      request.dtype, None)) for tp, pp, _ in inference_layouts(graph, cluster, fixed)]
            raise UserError(no_fit_message(graph, cluster, tried, s["batch"], s["input_len"], s["output_len"],
                                           request.dtype))
        warm = self._warm_unit(request)
        horizon = horizon_s(slo, s["mean_output"])
        best, search = search_serving(cluster, costs, s["source"], candidates, slo, rate, fixed, warm, s["context"],
                                      horizon)
        if best is None:
            raise UserError(self._unmet(cluster, costs, s, candidates, search, rate, fixed))

        def settle(k: int, operating: float) -> tuple[dict, dict]:
            requests = min(requests_at(operating / k, horizon) * k, FINAL_REQUESTS_MAX)
            decision = serving_decision(graph, cluster, best, k, s["batch"], s["input_len"], s["output_len"],
                                        request.dtype)
            decision["serving"] = serving_record(best, k, s, requests, operating, cluster, costs)
            return decision, evaluate_serving(graph, cluster, decision, request.dtype, costs)

        k = units_for(best, cluster, fixed, rate)
        operating = rate if rate is not None else best.goodput * k
        decision, predicted = settle(k, operating)
        for _ in range(SETTLE_STEPS):
            if _holds(predicted):
                break
            if rate is None:
                operating *= SETTLE_FACTOR
            elif not (fixed.get("dp") and not best.disaggregated) and best.ranks_needed(k + 1) <= cluster.num_devices:
                k += 1
            else:
                break
            decision, predicted = settle(k, operating)
        if not _holds(predicted):
            raise UserError(f"the best deployment found ({best.describe()} x {k}) keeps only "
                            f"{predicted['slo_attainment']:.1%} of requests within the SLO ttft={slo['ttft']},"
                            f"tpot={slo['tpot']} at {operating:.3g} req/s on its own requests (90% needed), its queue "
                            f"growing {predicted['queue_growth']:.3f} s per s (at most {MAX_QUEUE_GROWTH}), at "
                            f"{operating / max(predicted['saturation_rps'], 1e-12):.0%} of its saturated rate (at most "
                            f"{MAX_UTILIZATION:.0%}); "
                            + ("lower --rate, relax the SLO or add devices" if rate is not None else
                               "relax the SLO or add devices"))
        goodput = operating / k if rate is None else best.goodput
        predicted.update(goodput_rps=goodput * k, goodput_per_gpu=goodput / best.gpus, gpus_used=k * best.gpus)
        ranked = sorted((c for c in candidates if c.goodput > 0 and c is not best),
                        key=lambda c: (-c.goodput / c.gpus, c.key()))
        evaluated = sum(1 for c in candidates if c.goodput > 0)
        solver = {"search": "branch and bound over simulated goodput (cost_models.serving)", "status": "best found",
                  "objective": "min GPUs for the rate" if rate is not None else "max per-GPU goodput",
                  "candidates": len(candidates), "candidates_evaluated": evaluated,
                  "policies_considered": sorted({POLICY_NAMES[type(c.policy)] for c in candidates}),
                  "layouts_considered": sorted({(c.tp, c.pp) for c in candidates if not c.disaggregated}),
                  "candidates_pruned": len(candidates) - evaluated, "simulations": search.simulations,
                  "simulated_requests_per_candidate": [SERVE_REQUESTS, SERVE_REQUESTS_MAX],
                  "warm_start": warm is not None and any(c.describe() == warm for c in candidates)}
        alternatives = [{"layout": c.describe(), "gpus": c.gpus, "goodput_rps": c.goodput,
                         "goodput_per_gpu": c.goodput / c.gpus} for c in ranked[:5]]
        return Outcome(decision, predicted, solver, _binding(predicted, slo, best, k, cluster, rate),
                       alternatives=alternatives)

    @staticmethod
    def _warm_unit(request: Request) -> str | None:
        warm = request.warm
        if warm is None or warm.kind != "inference" or not hasattr(warm.decision.serving, "unit"):
            return None
        return warm.decision.serving.unit

    @staticmethod
    def _unmet(cluster, costs, s: dict, candidates, search, rate, fixed) -> str:
        """Why no deployment qualifies: the SLO at light load, or the rate at the most the cluster serves."""
        slo = s["slo"]
        if not math.isfinite(search.best_ttft) or search.best_ttft > slo["ttft"] or \
                search.best_tpot > slo["tpot"] or rate is None:
            ttft = f"{search.best_ttft:.4g}" if math.isfinite(search.best_ttft) else "n/a"
            tpot = f"{search.best_tpot:.4g}" if math.isfinite(search.best_tpot) else "n/a"
            return (f"no serving plan meets the SLO ttft={slo['ttft']},tpot={slo['tpot']}: the best achievable on "
                    f"{cluster.describe()} is TTFT {ttft} s and TPOT {tpot} s (mean, light load); relax the SLO or "
                    f"add devices")
        top, _ = search_serving(cluster, costs, s["source"], candidates, slo, None, fixed, context=s["context"],
                                horizon=horizon_s(slo, s["mean_output"]))
        total = top.goodput * units_for(top, cluster, fixed, None) if top else 0.0
        return (f"no deployment on {cluster.describe()} serves {rate} req/s under the SLO ttft={slo['ttft']},"
                f"tpot={slo['tpot']}: the most is {total:.3g} req/s ({top.describe() if top else 'none'}); lower "
                f"--rate or add devices")

    def memory_map(self, graph, problem: Problem, plan_json: dict) -> dict:
        return memory_map_for_plan(plan_json, graph, problem.cluster)

    def evaluate(self, graph, cluster, plan_json: dict) -> dict:
        inputs, decision = plan_json["inputs"], plan_json["decision"]
        if decision.get("serving"):
            return evaluate_serving(graph, cluster, decision, inputs["dtype"], None, inputs.get("engine_profile"))
        return evaluate_estimate(graph, cluster, decision, inputs["dtype"], inputs["workload"].get("rate"))

    def check(self, graph, cluster, plan_json: dict) -> list[str]:
        """Wide expert parallelism: ep = tp x the attention groups, dividing the experts; whole instances."""
        d = plan_json["decision"]
        groups = int((d.get("serving") or {}).get("expert_parallel_groups") or 1)
        if d.get("ep", 1) == 1 and groups == 1:
            return []
        experts = graph.config.get("num_experts") or 0
        problems = []
        if d["ep"] != d["tp"] * groups:
            problems.append(f"ep={d['ep']} is not tp={d['tp']} x {groups} expert-parallel attention groups")
        if not experts or experts % d["ep"]:
            problems.append(f"ep={d['ep']} does not divide the {experts} experts of the model")
        if d["dp"] % groups:
            problems.append(f"dp={d['dp']} attention groups do not form whole instances of {groups}")
        return problems
