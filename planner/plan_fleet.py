"""Fleet plans: the cheapest mix of GPU types (and tp per type) that serves a request rate within the
SLOs (`planner plan MODEL --cluster "H100-SXM,A100-SXM-80GB,L4" --workload chat --rate 20 --objective cost`).

Method (Melange, Griggs et al. 2024, with this project's simulator in place of measurements):
1. Buckets: requests are split by size at the workload's median prompt and median output, each rounded
   to a power of two (up to 4 buckets); a bucket's rate is its share of the requests times --rate.
2. Profile: per configuration (GPU type, tp) and bucket, the highest rate of that bucket's requests one
   instance serves with >= 90% SLO attainment (log-scale bisection below the offline throughput bound,
   30 s of arrivals per point as in `planner.plan_serving`, fixed seed), with FLEET_POLICY. Cached per run.
3. Solve: `passes.serving_fleet` (CP-SAT, integer instance counts and load slices, minimum $/h).
An item `N x TYPE` in the list caps the GPUs of that type (the rate no such fleet can serve is an error
naming the limit); a bare TYPE is unlimited. Prices are the device specs' `price_per_hour`.
"""

from __future__ import annotations

import math
import time

import numpy as np

from cost_models.cluster import parse_cluster
from cost_models.hardware import get_device
from cost_models.serving.deployment import CostCache, Deployment, simulate
from cost_models.serving.metrics import ATTAINMENT, attainment, capacity_rate
from cost_models.serving.policies import Chunked
from cost_models.serving.workload import Workload, arrivals, context_filter, make_workload
from ir.errors import UserError
from passes.parallel_layouts import TP_DEGREES, tp_ok
from passes.serving_fleet import FleetConfig, FleetInstance, restrict, single_config, solve_fleet
from planner.plan_file import PLAN_FORMAT, Plan, fingerprint
from planner.plan_serving import _BOUND_SLACK, _requests_at

FLEET_POLICY = Chunked(2048)  # chunked prefill at vLLM V1's default online-serving budget (2048 tokens)
FLEET_POOL = 4000  # requests drawn from the workload to define the buckets and their shares
FLEET_SEED = 0
FLEET_SLICES = 10  # load slices per bucket (Melange's slice granularity; 10% steps)
DEFAULT_SLO = {"ttft": 5.0, "tpot": 0.25}  # the same defaults as single-type serving plans
_STEPS, _TOLERANCE = 8, 0.03  # bisection of each capacity: ~3% resolution


def parse_fleet_spec(spec: str) -> tuple[list[str], dict[str, int]]:
    """'H100-SXM,4xL4' -> (['H100-SXM', 'L4'], {'L4': 4}): canonical device names and GPU limits.

    >>> parse_fleet_spec("h100, 4xL4")
    (['H100-SXM', 'L4'], {'L4': 4})
    """
    names, limits = [], {}
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            raise UserError(f"cannot read GPU list {spec!r}: an empty item; write TYPE or NxTYPE separated by commas")
        count, sep, name = item.lower().partition("x")
        if sep and count.isdigit():
            device = get_device(name)
            if int(count) < 1:
                raise UserError(f"GPU list {spec!r}: {item!r} allows no GPUs; use a positive count or drop it")
            limits[device.name] = int(count)
        else:
            device = get_device(item)
        if device.name in names:
            raise UserError(f"GPU list {spec!r} names {device.name} twice")
        if device.price_per_hour is None:
            raise UserError(f"{device.name} has no price_per_hour in its spec; the cost objective needs one "
                            f"(add it to a custom device YAML or drop {device.name} from the list)")
        names.append(device.name)
    return names, limits


def _buckets(w: Workload) -> list[dict]:
    """Size buckets: prompt and output split at their medians rounded to a power of two."""
    def edge(x: np.ndarray) -> int:
        return 1 << max(round(math.log2(max(float(np.median(x)), 1.0))), 0)

    ep, eo = edge(w.prompt_tokens), edge(w.output_tokens)
    out = []
    for p_lo, p_hi in ((0, ep), (ep, None)):
        for o_lo, o_hi in ((0, eo), (eo, None)):
            mask = (w.prompt_tokens > p_lo) & (w.output_tokens > o_lo)
            if p_hi is not None:
                mask &= w.prompt_tokens <= p_hi
            if o_hi is not None:
                mask &= w.output_tokens <= o_hi
            if mask.any():
                out.append({"prompt_tokens": [p_lo, p_hi], "output_tokens": [o_lo, o_hi],
                            "share": float(mask.mean()), "index": np.flatnonzero(mask)})
    return out


class FleetProfiler:
    """Capacities (req/s within the SLO) of (device, tp) instances per bucket, each simulated once."""

    def __init__(self, graph, slo: dict, dtype: str):
        self.graph, self.slo, self.dtype = graph, slo, dtype
        self._costs: dict = {}
        self._cap: dict = {}
        self.simulations = 0

    def cost(self, device: str, tp: int):
        if (device, tp) not in self._costs:
            self._costs[device, tp] = CostCache(self.graph, parse_cluster(f"{tp}x{device}"), self.dtype)
        return self._costs[device, tp]

    def capacity(self, device: str, tp: int, key: int, pool: Workload, index: np.ndarray) -> float:
        """Goodput of one instance on bucket `key` (requests `index` of `pool`); 0 when it misses at light load.
        Searched in [bound / 64, bound x 1.5] (bound: the offline throughput bound, `capacity_rate`, which
        ignores prefill riding on decode batches: hence the slack, as in `planner.plan_serving`); each rate
        simulates `requests_at(rate)` requests (SERVE_HORIZON_S of arrivals), so an overloaded queue shows."""
        if (device, tp, key) in self._cap:
            return self._cap[device, tp, key]
        costs = self.cost(device, tp)
        sizes = pool.prompt_tokens[index], pool.output_tokens[index]
        bound = capacity_rate(costs.get(tp, 1), float(sizes[0].mean()), float(sizes[1].mean()))

        def ok(rate: float) -> bool:
            self.simulations += 1
            w = _bucket_workload(pool, index, _requests_at(rate)).with_rate(rate)
            return attainment(simulate(costs, Deployment(FLEET_POLICY, tp=tp), w), self.slo) >= ATTAINMENT

        lo, hi = bound / 64, bound * _BOUND_SLACK
        if not ok(lo):
            rate = 0.0
        elif ok(hi):
            rate = hi
        else:
            for _ in range(_STEPS):
                if hi / lo < 1 + _TOLERANCE:
                    break
                mid = math.sqrt(lo * hi)
                lo, hi = (mid, hi) if ok(mid) else (lo, mid)
            rate = lo
        self._cap[device, tp, key] = rate
        return rate


def _configs(graph, names: list[str], limits: dict, profiler: FleetProfiler, need_tokens: int) -> list[tuple[str, int]]:
    out = []
    for name in names:
        node = parse_cluster(f"8x{name}").nodes[0].devices_per_node  # an instance stays inside one node
        for tp in TP_DEGREES:
            if not tp_ok(graph, tp, min(node, limits.get(name, node)), replicate_kv=True):
                continue
            if profiler.cost(name, tp).get(tp, 1).kv_capacity_tokens >= need_tokens:
                out.append((name, tp))
    return out


def _bucket_workload(pool: Workload, index: np.ndarray, n: int) -> Workload:
    """`n` requests of the bucket (its requests in pool order, repeated) with Poisson arrivals at 1 req/s."""
    take = index[np.arange(n) % len(index)]
    return Workload(arrivals(n, 1.0, seed=FLEET_SEED), pool.prompt_tokens[take], pool.output_tokens[take], pool.name)


def _instance(graph, names, limits, buckets, pool, rate, profiler) -> tuple[FleetInstance, list]:
    need = int(np.median(pool.prompt_tokens + pool.output_tokens))
    configs = _configs(graph, names, limits, profiler, need)
    if not configs:
        raise UserError(f"{graph.model} does not fit any of {', '.join(names)} at tp <= 8 with a typical "
                        f"request's KV cache ({need} tokens); add larger GPUs to the list")
    caps = tuple(tuple(profiler.capacity(d, tp, k, pool, b["index"]) for k, b in enumerate(buckets))
                 for d, tp in configs)
    price = tuple(round(get_device(d).price_per_hour * tp * 1000) for d, tp in configs)
    inst = FleetInstance(tuple(f"{d} tp{tp}" for d, tp in configs), tuple(d for d, _ in configs),
                         tuple(tp for _, tp in configs), price, tuple(rate * b["share"] for b in buckets), caps,
                         tuple(sorted(limits.items())), FLEET_SLICES)
    return inst, configs


def _bucket_name(b: dict) -> str:
    def span(lo, hi):
        return f"({lo}, {hi}]" if hi is not None else f"> {lo}"
    return f"prompt {span(*b['prompt_tokens'])}, output {span(*b['output_tokens'])}"


def _infeasible(inst: FleetInstance, buckets, slo: dict, rate: float) -> str:
    for b, bucket in enumerate(buckets):
        if all(inst.capacity[c][b] <= 0 for c in range(len(inst.configs))):
            return (f"no GPU type in the list serves requests with {_bucket_name(bucket)} within ttft={slo['ttft']},"
                    f"tpot={slo['tpot']} even at light load ({bucket['share']:.0%} of the workload); relax the SLO "
                    f"or add faster GPU types")
    most = []
    for g, limit in inst.gpu_limit:
        best = max((inst.capacity[c][b] * (limit // inst.gpus[c]) for c in range(len(inst.configs))
                    for b in range(len(buckets)) if inst.gpu_type[c] == g), default=0.0)
        most.append(f"{limit} x {g} (at most ~{best:.3g} req/s of its best bucket)")
    return (f"no fleet serves {rate} req/s within ttft={slo['ttft']},tpot={slo['tpot']}: the GPU limits bind: "
            f"{'; '.join(most)}; lower --rate or allow more GPUs (a bare TYPE is unlimited)")


def fleet_instance(model_ref: str, spec: str, workload: str, rate: float, slo: dict, dtype: str = "bf16"):
    """Profile every configuration and return (graph, FleetInstance, configs, buckets, profiler); the
    capacities do not depend on `rate` (only the bucket rates do), so one profile serves many rates."""
    import planner

    names, limits = parse_fleet_spec(spec)
    capture_dtype = "bf16" if dtype == "fp8" else dtype
    positions = planner.capture(model_ref, dtype=capture_dtype).config.get("max_position_embeddings")
    graph = planner.capture(model_ref, seq_len=min(2048, positions or 2048), dtype=capture_dtype)
    context, _ = context_filter(workload, positions)  # requests the model can take
    pool = make_workload(workload, FLEET_POOL, 1.0, seed=FLEET_SEED, max_total=context)
    buckets = _buckets(pool)
    profiler = FleetProfiler(graph, slo, dtype)
    inst, configs = _instance(graph, names, limits, buckets, pool, rate, profiler)
    return graph, inst, configs, buckets, profiler


def plan_fleet(model_ref: str, spec: str, workload: str, *, rate, slo: dict, dtype: str,
               objective: str | None) -> Plan:
    """The cheapest fleet plan (see the module docstring). Needs a serving workload and --rate."""
    if objective not in (None, "cost"):
        raise UserError(f"a list of GPU types (--cluster {spec!r}) plans a fleet for --objective cost; "
                        f"got --objective {objective}")
    if rate is None:
        raise UserError("a fleet plan needs the request rate to serve: add --rate REQUESTS_PER_S")
    started = time.perf_counter()
    effective = {**DEFAULT_SLO, **{k: v for k, v in (slo or {}).items() if v}}
    graph, inst, configs, buckets, profiler = fleet_instance(model_ref, spec, workload, rate, effective, dtype)
    sol = solve_fleet(inst, FleetConfig())
    if sol.counts is None:
        raise UserError(_infeasible(inst, buckets, effective, rate))
    inputs = {"model": model_ref, "cluster": spec, "workload": {"kind": workload, "rate": rate}, "objective": "cost",
              "slo": slo, "dtype": dtype, "planner_version": "0.1.0"}
    data = _document(inputs, graph, inst, configs, buckets, sol, effective, profiler)
    return Plan(data, search_time_s=time.perf_counter() - started)


def single_type_fleets(inst: FleetInstance) -> dict[str, int | None]:
    """Per GPU type, the cheapest fleet of that type alone (milli-$/h; None when it cannot serve the rate)."""
    return {g: solve_fleet(restrict(inst, g), FleetConfig()).cost_milli for g in dict.fromkeys(inst.gpu_type)}


def _document(inputs, graph, inst: FleetInstance, configs, buckets, sol, slo, profiler) -> dict:
    singles = single_config(inst)
    per_type = single_type_fleets(inst)
    feasible = {g: v for g, v in per_type.items() if v is not None}
    best_type = min(feasible, key=lambda g: (feasible[g], g)) if feasible else None
    rows = []
    for c, (device, tp) in enumerate(configs):
        if sol.counts[c]:
            rows.append({"config": inst.configs[c], "device": device, "tp": tp, "instances": sol.counts[c],
                         "gpus": sol.counts[c] * tp, "dollars_per_hour": sol.counts[c] * inst.price_milli[c] / 1000,
                         "slices": {_bucket_name(buckets[b]): sol.slices_of[c][b] for b in range(len(buckets))
                                    if sol.slices_of[c][b]}})
    cheapest = None
    if singles:
        cost, c, counts = singles[0]
        cheapest = {"config": inst.configs[c], "instances": counts[c], "dollars_per_hour": cost / 1000}
    predicted = {"dollars_per_hour": sol.cost_milli / 1000, "rate_rps": sum(inst.bucket_rate),
                 "gpus": sum(r["gpus"] for r in rows), "cheapest_single_config": cheapest,
                 "single_type_dollars_per_hour": {g: (v / 1000 if v is not None else None) for g, v in per_type.items()},
                 "cheapest_single_type": best_type,
                 "saving_vs_single_type": 1 - sol.cost_milli / feasible[best_type] if best_type else None}
    return {
        "format": PLAN_FORMAT, "inputs": inputs, "fingerprint": fingerprint(inputs), "model_name": graph.model,
        "cluster_description": f"fleet of {', '.join(dict.fromkeys(inst.gpu_type))}",
        "decision": {"kind": "fleet", "instances": rows, "policy": FLEET_POLICY.describe(), "slo": slo},
        "predicted": predicted,
        "profile": {"buckets": [{"name": _bucket_name(b), "prompt_tokens": b["prompt_tokens"],
                                 "output_tokens": b["output_tokens"], "share": b["share"], "rate_rps": r}
                                for b, r in zip(buckets, inst.bucket_rate)],
                    "capacity_rps": {name: list(row) for name, row in zip(inst.configs, inst.capacity)},
                    "price_milli_per_hour": dict(zip(inst.configs, inst.price_milli)),
                    "gpu_limits": dict(inst.gpu_limit), "slices": inst.slices,
                    "seed": FLEET_SEED, "simulations": profiler.simulations, **_context_record(inputs, graph)},
        "solver": {"search": "cp-sat over instance counts and load slices (passes.serving_fleet)",
                   "status": sol.status, "solver": sol.solver, "objective_milli_per_hour": sol.cost_milli,
                   "bound_milli_per_hour": sol.bound_milli, "gap": sol.gap, "candidates_evaluated": len(configs),
                   "candidates_pruned": 0},
        "binding_constraints": _binding(inst, sol, buckets),
    }


def _context_record(inputs: dict, graph) -> dict:
    """The model's context and the share of the workload's requests left out for exceeding it (if any can)."""
    context, over = context_filter(inputs["workload"]["kind"], graph.config.get("max_position_embeddings"))
    return {"context_tokens": context, "requests_over_context": round(over, 4)} if context else {}


def _binding(inst: FleetInstance, sol, buckets) -> list[str]:
    out = []
    for c, n in enumerate(sol.counts):
        if not n:
            continue
        used = sum(sol.slices_of[c][b] * (inst.load(c, b) or 0) for b in range(len(buckets)))
        out.append(f"{inst.configs[c]}: {n} instance(s) loaded to {used / (n * 1_000_000):.0%} of their SLO capacity")
    for g, limit in inst.gpu_limit:
        used = sum(n * k for n, k, t in zip(sol.counts, inst.gpus, inst.gpu_type) if t == g)
        out.append(f"{g}: {used} of {limit} GPUs available")
    return out


def explain_fleet(plan: dict) -> str:
    """The fleet plan in words: instances bought, their load, cost against single-type fleets, the solver."""
    d, p, prof, s = plan["decision"], plan["predicted"], plan["profile"], plan["solver"]
    lines = [f"fleet plan for {plan['model_name']} from {plan['inputs']['cluster']}",
             f"workload: {plan['inputs']['workload']}  objective: cost  SLO: ttft={d['slo']['ttft']} s, "
             f"tpot={d['slo']['tpot']} s  policy per instance: {d['policy']}"]
    for row in d["instances"]:
        lines.append(f"  {row['instances']} x {row['config']}  ${row['dollars_per_hour']:.3f}/h  slices "
                     + ", ".join(f"{k}: {v}/{prof['slices']}" for k, v in row["slices"].items()))
    singles = ", ".join(f"{g} ${v:.3f}/h" if v is not None else f"{g} cannot" for g, v in
                        p["single_type_dollars_per_hour"].items())
    saving = p.get("saving_vs_single_type")
    lines.append(f"cost: ${p['dollars_per_hour']:.3f}/h for {p['rate_rps']:.4g} req/s on {p['gpus']} GPUs; single-type "
                 f"fleets: {singles}" + (f" (saves {saving:.1%})" if saving is not None else ""))
    gap = f", gap {s['gap']:.4f}" if isinstance(s.get("gap"), float) else ""
    lines.append(f"solver: {s['search']}, status {s['status']}{gap}, {s['candidates_evaluated']} configurations, "
                 f"{prof['simulations']} simulations to profile")
    lines.append("buckets (share, req/s): " + "; ".join(f"{b['name']} {b['share']:.0%} {b['rate_rps']:.3g}"
                                                     for b in prof["buckets"]))
    lines += [f"binding: {line}" for line in plan.get("binding_constraints", [])]
    return "\n".join(lines) + "\n"


def verify_fleet(plan: dict) -> list[str]:
    """Recheck a fleet plan from its recorded profile: every slice served, no instance over its capacity,
    the cost the sum of the prices, GPU limits kept (the profile itself is not re-simulated)."""
    d, prof = plan["decision"], plan["profile"]
    names = [b["name"] for b in prof["buckets"]]
    inst = FleetInstance(tuple(prof["capacity_rps"]), tuple(n.rsplit(" tp", 1)[0] for n in prof["capacity_rps"]),
                         tuple(int(n.rsplit(" tp", 1)[1]) for n in prof["capacity_rps"]),
                         tuple(prof["price_milli_per_hour"][n] for n in prof["capacity_rps"]),
                         tuple(b["rate_rps"] for b in prof["buckets"]),
                         tuple(tuple(row) for row in prof["capacity_rps"].values()),
                         tuple(sorted(prof["gpu_limits"].items())), prof["slices"])
    rows = {r["config"]: r for r in d["instances"]}
    unknown = sorted(set(rows) - set(inst.configs))
    if unknown:
        return [f"instances of {', '.join(unknown)}, which the profile does not have"]
    slices_of = tuple(tuple(rows[c]["slices"].get(n, 0) if c in rows else 0 for n in names) for c in inst.configs)
    problems = [f"bucket {n}: {sum(col)} of {inst.slices} slices served"
                for n, col in zip(names, zip(*slices_of)) if sum(col) != inst.slices]
    got = inst.cost(slices_of)
    if got is None:
        return [*problems, "a configuration serves a bucket it cannot, or a GPU limit is exceeded"]
    for c, need in zip(inst.configs, got[1]):
        have = rows[c]["instances"] if c in rows else 0
        if have < need:
            problems.append(f"{c}: {have} instance(s) carry load for {need}")
    cost = sum(rows[c]["instances"] * inst.price_milli[k] for k, c in enumerate(inst.configs) if c in rows)
    if cost != plan["solver"]["objective_milli_per_hour"]:
        problems.append(f"cost {cost} milli-$/h differs from the solver's {plan['solver']['objective_milli_per_hour']}")
    return problems
