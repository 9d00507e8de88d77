"""Serving plans: search deployments (policy, per-phase parallelism, replicas) by simulated goodput
with the iteration-level simulator (`cost_models.serving`); see `planner.plan_infer` for the
method, which calls `plan_serving` for serving workloads and `evaluate_serving`
(`planner.serving_evaluate`) to recompute one.
"""

from __future__ import annotations

import math

import numpy as np

from cost_models.estimator import estimate_graph
from cost_models.parallel_config import Options
from cost_models.serving.deployment import Deployment, costs_for, simulate
from cost_models.serving.engine_settings import serving_engine_facts
from cost_models.serving.metrics import ATTAINMENT, attainment, latencies
from cost_models.serving.policies import Chunked, Disaggregated, Layered, PrefillFirst
from cost_models.serving.workload import context_filter
from ir.errors import UserError
from passes.parallel_layouts import TP_DEGREES, tp_ok
from planner.plan_file import PLAN_FORMAT, fingerprint
from planner.plan_infer import PP_DEGREES, SERVING, _decision, _layouts, _no_fit_offload, evaluate_inference
from planner.serving_evaluate import _POLICY_NAMES, _base_workload, evaluate_serving

SERVE_REQUESTS = 400  # simulated requests per candidate unit at least (fixed seed): milliseconds per simulation
SERVE_HORIZON_S = 30.0  # ... and enough for this many seconds of arrivals, so an overloaded queue shows
SERVE_REQUESTS_MAX = 3200  # ... at most this many per unit
FINAL_REQUESTS_MAX = 8000  # the chosen deployment: the per-unit count times the units, at most this
SERVE_SEED = 0
CHUNK_BUDGETS = (512, 2048, 8192)
DISAGG_COUNTS = (1, 2, 3, 4)
DEFAULT_SLO = {"ttft": 5.0, "tpot": 0.25}  # used for an SLO key the user leaves out (documented in the plan)
_BOUND_SLACK = 1.5  # colocated: the offline bound ignores prefill riding on decode batches; searched up to x this
# A disaggregated unit's bound (min of x prefill and y decode instance rates at full batches) is a ceiling on its
# steady-state rate; above it a finite simulation only shows a queue still building (TPOT spreads a decode-queue
# wait over the output tokens), so its goodput is capped there.
_SEARCH_TOLERANCE = 0.04
_SEARCH_STEPS = 7
_SETTLE_STEPS, _SETTLE_FACTOR = 12, 0.95  # the chosen deployment re-checked on its own requests: steps of -5%


class _Candidate:
    """One unit to replicate: a colocated instance (policy, tp, pp) or a disaggregated xPyD unit."""

    def __init__(self, policy, tp: int, pp: int, gpus: int, bound: float):
        self.policy, self.tp, self.pp, self.gpus, self.bound = policy, tp, pp, gpus, bound
        self.goodput = 0.0

    @property
    def disaggregated(self) -> bool:
        return isinstance(self.policy, Disaggregated)

    def unit(self) -> Deployment:
        return Deployment(self.policy) if self.disaggregated else Deployment(self.policy, self.tp, self.pp, 1)

    def scaled(self, k: int) -> Deployment:
        if not self.disaggregated:
            return Deployment(self.policy, self.tp, self.pp, k)
        p = self.policy
        return Deployment(Disaggregated(k * p.prefill_instances, k * p.decode_instances, p.prefill_tp, p.prefill_pp,
                                        p.decode_tp, p.decode_pp))

    def ranks_needed(self, k: int) -> int:
        if not self.disaggregated:
            return k * self.gpus
        p = self.policy
        prefill = k * p.prefill_instances * p.prefill_tp * p.prefill_pp
        return -(-prefill // p.decode_tp) * p.decode_tp + k * p.decode_instances * p.decode_tp * p.decode_pp

    def describe(self) -> str:
        return self.policy.describe() if self.disaggregated else f"tp{self.tp}pp{self.pp} {self.policy.describe()}"

    def key(self) -> tuple:
        return (self.gpus, self.describe())


def _phase_rates(cost, mean_prompt: float, mean_output: float) -> tuple[float, float]:
    """Offline request rates of one instance doing only prefill (8K-token batches) or only decode (the largest
    batch the KV cache holds, at most 256): the terms of `metrics.capacity_rate`."""
    batch = int(max(min(cost.kv_capacity_tokens / max(mean_prompt + mean_output, 1), 256), 1))
    prefill = cost.time(prefill_tokens=8192, prefill_pairs=8192 * mean_prompt / 2, prompts_done=1) / 8192 * mean_prompt
    decode = cost.time(decodes=batch, decode_kv=batch * (mean_prompt + mean_output / 2)) / batch * mean_output
    return 1.0 / max(prefill, 1e-12), 1.0 / max(decode, 1e-12)


def _candidates(graph, cluster, costs, fixed: dict, w) -> list[_Candidate]:
    node, n = cluster.nodes[0], cluster.num_devices
    blocks = sum(1 for layer in graph.layers if layer.kind == "block")
    mean_p, mean_o = float(w.prompt_tokens.mean()), float(w.output_tokens.mean())
    need = int(np.median(w.prompt_tokens + w.output_tokens))
    dcosts = costs.for_policy(Disaggregated(1, 1))  # the disaggregating engine's, when it is another
    rates, drates = {}, {}
    tables = ((rates, costs),) if dcosts is costs else ((rates, costs), (drates, dcosts))
    for tp in TP_DEGREES:
        for pp in PP_DEGREES:
            if tp * pp > n or pp > blocks or not tp_ok(graph, tp, node.devices_per_node, replicate_kv=True):
                continue
            if any(fixed.get(k) not in (None, v) for k, v in (("tp", tp), ("pp", pp))):
                continue
            if fixed.get("dp") and fixed["dp"] * tp * pp > n:
                continue
            for table, engine in tables:
                # no profile, or no room for a median request
                if engine.supports(tp, pp) and engine.get(tp, pp).kv_capacity_tokens >= need:
                    table[(tp, pp)] = _phase_rates(engine.get(tp, pp), mean_p, mean_o)
    moe = any(layer.is_moe for layer in graph.layers)
    layered = moe and costs.engine is None  # engine profiles hold whole-model iteration times only
    policies = [PrefillFirst(), *(Chunked(b) for b in CHUNK_BUDGETS), *([Layered()] if layered else [])]
    out = [_Candidate(policy, tp, pp, tp * pp, 1.0 / (1.0 / pf + 1.0 / dc))
           for (tp, pp), (pf, dc) in rates.items() for policy in policies]
    if fixed or n < 2:
        return out
    drates = drates if dcosts is not costs else rates
    single = sorted(tp for tp, pp in drates if pp == 1)
    for ptp in single:
        for dtp in single:
            for x in DISAGG_COUNTS:
                for y in DISAGG_COUNTS:
                    c = _Candidate(Disaggregated(x, y, ptp, 1, dtp, 1), dtp, 1, x * ptp + y * dtp,
                                   min(x * drates[(ptp, 1)][0], y * drates[(dtp, 1)][1]))
                    if math.gcd(x, y) == 1 and c.ranks_needed(1) <= n:
                        out.append(c)
    return out


def _requests_at(rate: float) -> int:
    """Requests simulated per unit at `rate`: SERVE_HORIZON_S of arrivals, in steps of SERVE_REQUESTS."""
    steps = math.ceil(rate * SERVE_HORIZON_S / SERVE_REQUESTS)
    return min(max(steps, 1) * SERVE_REQUESTS, SERVE_REQUESTS_MAX)


class _Search:
    """Goodput of candidates by bisection on the rate, with the incumbent's rate as a pruning probe."""

    def __init__(self, costs, source: str, slo: dict, context: int | None = None):
        self.costs, self.source, self.slo, self.context = costs, source, slo, context
        self.workloads: dict = {}
        self.simulations = 0
        self.best_ttft = self.best_tpot = math.inf  # at light load, over all candidates (for the error)

    def _ok(self, d: Deployment, rate: float, light: bool = False) -> bool:
        n = _requests_at(rate)
        if n not in self.workloads:
            self.workloads[n] = _base_workload(self.source, n, SERVE_SEED, self.context)
        r = simulate(self.costs, d, self.workloads[n].with_rate(rate))
        self.simulations += 1
        if light:
            ttft, tpot = latencies(r)
            if np.isfinite(ttft).any():
                self.best_ttft = min(self.best_ttft, float(np.nanmean(ttft)))
            if np.isfinite(tpot).any():
                self.best_tpot = min(self.best_tpot, float(np.nanmean(tpot)))
        return attainment(r, self.slo) >= ATTAINMENT

    def goodput(self, c: _Candidate, need: float) -> float | None:
        """The unit's goodput (req/s); 0 when it misses the SLO at light load; None when it cannot reach `need`."""
        d, hi = c.unit(), c.bound * (1.0 if c.disaggregated else _BOUND_SLACK)
        if need >= hi:
            return None
        lo = hi / 64
        if not self._ok(d, lo, light=True):
            return 0.0
        if need > lo:
            if not self._ok(d, need):
                return None
            lo = need
        for _ in range(3 if not c.disaggregated else 1):  # widen when even the bound meets the SLO
            if not self._ok(d, hi):
                break
            if c.disaggregated:  # its bound is a steady-state ceiling (see _candidates)
                return hi
            lo, hi = hi, hi * 2
        else:
            return lo
        for _ in range(_SEARCH_STEPS):
            if hi / lo < 1 + _SEARCH_TOLERANCE:
                break
            mid = math.sqrt(lo * hi)
            if self._ok(d, mid):
                lo = mid
            else:
                hi = mid
        return lo


def _units(c: _Candidate, cluster, fixed: dict, rate: float | None) -> int:
    """How many units the deployment replicates: enough for `rate`, else as many as the cluster holds."""
    if rate is not None:
        return max(math.ceil(rate / c.goodput - 1e-9), 1)
    if fixed.get("dp") and not c.disaggregated:
        return fixed["dp"]
    k = max(cluster.num_devices // c.gpus, 1)
    while k > 1 and c.ranks_needed(k) > cluster.num_devices:
        k -= 1
    return k


def _search_serving(cluster, costs, source: str, cands: list[_Candidate], slo: dict, rate: float | None, fixed: dict,
                    warm: str | None = None, context: int | None = None):
    """Branch and bound over the candidates, most promising first; `warm` (a previous plan's unit) goes first, so
    its goodput prunes the rest from the start (a warm start: fewer simulations, an answer as good within the
    goodput search's tolerance; a candidate must beat the incumbent strictly, so exact ties keep it)."""
    search = _Search(costs, source, slo, context)
    n = cluster.num_devices
    best, best_gpus = None, n
    cands = sorted(cands, key=lambda c: (c.describe() != warm, -c.bound / c.gpus, c.key()))
    for c in cands:
        if rate is None:
            need = best.goodput / best.gpus * c.gpus if best else 0.0
        else:
            limit = best_gpus if best else n
            k_max = limit // c.gpus
            while k_max > 0 and c.ranks_needed(k_max) > n:
                k_max -= 1
            if k_max < 1:
                continue
            need = rate / k_max
        g = search.goodput(c, need)
        if not g:
            continue
        c.goodput = g
        if rate is None:
            better = best is None or g / c.gpus > best.goodput / best.gpus * (1 + 1e-9)
        else:
            gpus = _units(c, cluster, fixed, rate) * c.gpus
            better = best is None or (gpus, -g / c.gpus) < (best_gpus, -best.goodput / best.gpus)
            if better:
                best_gpus = gpus
        if better:
            best = c
    return best, search


def _serving_section(c: _Candidate, k: int, source: str, requests: int, rate: float, slo: dict, cluster) -> dict:
    p = c.policy
    section = {"policy": _POLICY_NAMES[type(p)], "chunked_prefill": isinstance(p, Chunked),
               "chunk_tokens": p.budget if isinstance(p, Chunked) else None,
               "layer_groups": p.groups if isinstance(p, Layered) else None, "disaggregated": None,
               "description": c.scaled(k).describe(), "workload": source, "requests": requests, "seed": SERVE_SEED,
               "rate_rps": rate, "slo": slo, "units": k, "unit": c.describe()}
    if isinstance(p, Layered):
        section["layer_groups_rule"] = "per batch from the prefill tokens: <=512 1, <=1024 2, <=2048 4, <=4096 8, else 16"
    if isinstance(p, PrefillFirst):
        section["max_num_batched_tokens"] = p.max_batched_tokens
    if c.disaggregated:
        x, ptp = k * p.prefill_instances, p.prefill_tp
        section["disaggregated"] = {
            "prefill_instances": x, "decode_instances": k * p.decode_instances, "prefill_tp": ptp,
            "prefill_pp": p.prefill_pp, "decode_tp": p.decode_tp, "decode_pp": p.decode_pp,
            "prefill_ranks": [list(range(i * ptp, (i + 1) * ptp)) for i in range(x)],
            "kv_transfer_link": cluster.link_between(0, min(x * ptp, cluster.num_devices - 1)).name}
    return section


def _serving_decision(graph, cluster, c: _Candidate, k: int, batch, input_len, output_len, dtype) -> dict:
    if not c.disaggregated:
        options = Options(tp=c.tp, pp=c.pp, dp=k, batch=batch, input_len=input_len, output_len=output_len, dtype=dtype)
        stages = [tuple(s) for s in estimate_graph(graph, cluster, "serve", options)["stages"]]
        return _decision(graph, cluster, "serve", c.tp, c.pp, k, batch, input_len, output_len, stages)
    p = c.policy
    y, tp = k * p.decode_instances, p.decode_tp
    offset = -(-k * p.prefill_instances * p.prefill_tp // tp) * tp
    device = cluster.nodes[0].device.name
    return {"kind": "inference", "phase": "serve", "dp": y, "tp": tp, "pp": 1, "ep": 1, "batch": batch,
            "input_len": input_len, "output_len": output_len,
            "stages": [{"stage": 0, "layers": [0, len(graph.layers)], "first_layer": graph.layers[0].name,
                        "last_layer": graph.layers[-1].name, "device": device, "tp": tp, "node_group": 0,
                        "ranks": [list(range(offset + j * tp, offset + (j + 1) * tp)) for j in range(y)]}]}


def plan_serving(graph, cluster, workload: str, *, model_ref, cluster_spec, slo, rate, fixed, dtype, objective, batch,
                 input_len, output_len, fixed_lengths: bool, warm_start: dict | None = None,
                 engine_profile: str | None = None) -> dict:
    """A serving plan's data: the deployment with the best per-GPU goodput under `slo` (or, with `rate`, the
    fewest GPUs whose goodput covers it), found by simulation (see the module docstring). `warm_start`, a
    previous serving plan, has its deployment unit evaluated first (see `_search_serving`)."""
    warm = ((warm_start or {}).get("decision", {}).get("serving") or {}).get("unit")
    effective = {**DEFAULT_SLO, **{k: v for k, v in (slo or {}).items() if v}}
    named = workload in SERVING or workload.endswith(".csv")
    source = workload if named and not fixed_lengths else f"fixed:{input_len}:{output_len}"
    # a named workload keeps to the model's context (prompt + output), as serving benchmarks filter traces
    context, over = context_filter(source, graph.config.get("max_position_embeddings"))
    w = _base_workload(source, SERVE_REQUESTS, SERVE_SEED, context)
    costs = costs_for(graph, cluster, dtype, engine_profile)
    cands = _candidates(graph, cluster, costs, fixed, w)
    if not cands:
        tried = [((tp, pp, 1), evaluate_inference(graph, cluster, {"phase": "serve", "tp": tp, "pp": pp, "dp": 1,
                  "batch": batch, "input_len": input_len, "output_len": output_len}, dtype, None))
                 for tp, pp, _ in _layouts(graph, cluster, fixed)]
        raise UserError(_no_fit_offload(graph, cluster, tried, batch, input_len, output_len, dtype))
    best, search = _search_serving(cluster, costs, source, cands, effective, rate, fixed, warm, context)
    if best is None:
        if not math.isfinite(search.best_ttft) or search.best_ttft > effective["ttft"] or \
                search.best_tpot > effective["tpot"] or rate is None:
            ttft = f"{search.best_ttft:.4g}" if math.isfinite(search.best_ttft) else "n/a"
            tpot = f"{search.best_tpot:.4g}" if math.isfinite(search.best_tpot) else "n/a"
            raise UserError(f"no serving plan meets the SLO ttft={effective['ttft']},tpot={effective['tpot']}: the best "
                            f"achievable on {cluster.describe()} is TTFT {ttft} s and TPOT {tpot} s (mean, light "
                            f"load); relax the SLO or add devices")
        top, _ = _search_serving(cluster, costs, source, cands, effective, None, fixed, context=context)
        total = top.goodput * _units(top, cluster, fixed, None) if top else 0.0
        raise UserError(f"no deployment on {cluster.describe()} serves {rate} req/s under the SLO "
                        f"ttft={effective['ttft']},tpot={effective['tpot']}: the most is {total:.3g} req/s "
                        f"({top.describe() if top else 'none'}); lower --rate or add devices")
    def settle(k: int, operating: float) -> tuple[dict, dict]:
        requests = min(_requests_at(operating / k) * k, FINAL_REQUESTS_MAX)
        decision = _serving_decision(graph, cluster, best, k, batch, input_len, output_len, dtype)
        decision["serving"] = _serving_section(best, k, source, requests, operating, effective, cluster)
        if context:
            decision["serving"].update(context_tokens=context, requests_over_context=round(over, 4))
        # what the engine scripts need to run as simulated (codegen/serving.py)
        decision["serving"].update(serving_engine_facts(costs, best.policy, best.tp, best.pp, source, context))
        return decision, evaluate_serving(graph, cluster, decision, dtype, costs)

    # The search rated one unit on its own request sample; the deployment (k units, on their own requests) must
    # hold 90% at what the plan reports: with a rate, add units while it misses; else lower the rate until it holds.
    k = _units(best, cluster, fixed, rate)
    operating = rate if rate is not None else best.goodput * k
    decision, predicted = settle(k, operating)
    for _ in range(_SETTLE_STEPS):
        if predicted["slo_attainment"] >= ATTAINMENT:
            break
        if rate is None:
            operating *= _SETTLE_FACTOR
        elif not (fixed.get("dp") and not best.disaggregated) and best.ranks_needed(k + 1) <= cluster.num_devices:
            k += 1
        else:
            break
        decision, predicted = settle(k, operating)
    goodput = operating / k if rate is None else best.goodput
    predicted.update(goodput_rps=goodput * k, goodput_per_gpu=goodput / best.gpus, gpus_used=k * best.gpus)
    inputs = {"model": model_ref, "cluster": cluster_spec, "workload": {"kind": workload, "batch": batch,
              "input_len": input_len, "output_len": output_len, "rate": rate}, "objective": objective,
              "slo": slo, "fixed": fixed, "dtype": dtype, "planner_version": "0.1.0",
              **({"engine_profile": engine_profile} if engine_profile else {})}
    ranked = sorted((c for c in cands if c.goodput > 0 and c is not best), key=lambda c: (-c.goodput / c.gpus, c.key()))
    evaluated = sum(1 for c in cands if c.goodput > 0)
    return {
        "format": PLAN_FORMAT, "inputs": inputs, "fingerprint": fingerprint(inputs), "model_name": graph.model,
        "cluster_description": cluster.describe(), "decision": decision, "predicted": predicted,
        "solver": {"search": "branch and bound over simulated goodput (cost_models.serving)", "status": "best found",
                   "objective": "min GPUs for the rate" if rate is not None else "max per-GPU goodput",
                   "candidates": len(cands), "candidates_evaluated": evaluated,
                   "policies_considered": sorted({_POLICY_NAMES[type(c.policy)] for c in cands}),
                   "layouts_considered": sorted({(c.tp, c.pp) for c in cands if not c.disaggregated}),
                   "candidates_pruned": len(cands) - evaluated, "simulations": search.simulations,
                   "simulated_requests_per_candidate": [SERVE_REQUESTS, SERVE_REQUESTS_MAX],
                   "warm_start": warm is not None and any(c.describe() == warm for c in cands)},
        "alternatives": [{"layout": c.describe(), "gpus": c.gpus, "goodput_rps": c.goodput,
                          "goodput_per_gpu": c.goodput / c.gpus} for c in ranked[:5]],
        "binding_constraints": _serving_binding(predicted, effective, best, k, cluster, rate),
    }


def _serving_binding(r: dict, slo: dict, c: _Candidate, k: int, cluster, rate) -> list[str]:
    out = [f"memory: {r['memory_per_device_bytes'] / 1e9:.1f} of {r['memory_capacity_bytes'] / 1e9:.1f} GB per device"]
    out.append(f"SLO ttft: mean {r['ttft_s']:.4f} s, p90 {r['ttft_p90_s']:.4f} s against {slo['ttft']} s")
    if r.get("tpot_s") is not None:
        out.append(f"SLO tpot: mean {r['tpot_s']:.4f} s, p90 {r['tpot_p90_s']:.4f} s against {slo['tpot']} s")
    out.append(f"SLO attainment {r['slo_attainment']:.1%} at {r['rate_rps']:.3g} req/s (goodput needs >= 90%)")
    out.append(f"devices: {k * c.gpus} of {cluster.num_devices} used ({k} x {c.describe()})"
               + (f" for {rate} req/s" if rate is not None else ""))
    return out
