"""Fleet strategy: the cheapest mix of GPU types (and tp per type) that serves a request rate within the
SLOs (`planner plan MODEL --cluster "H100-SXM,A100-SXM-80GB,L4" --workload chat --rate 20 --objective cost`).

Method (Melange, Griggs et al. 2024, with this project's simulator in place of measurements):
1. Buckets: requests are split by size at the workload's median prompt and median output, each rounded
   to a power of two (up to 4 buckets); a bucket's rate is its share of the requests times --rate.
2. Profile: per configuration (GPU type, tp) and bucket, the highest rate of that bucket's requests one
   instance serves with >= 90% SLO attainment (log-scale bisection below the offline throughput bound,
   30 s of arrivals per point as in `passes.serving_search`, fixed seed), with FLEET_POLICY. Cached per run.
3. Solve: `passes.serving_fleet` (CP-SAT, integer instance counts and load slices, minimum $/h).
An item `N x TYPE` in the list caps the GPUs of that type (the rate no such fleet can serve is an error
naming the limit); a bare TYPE is unlimited. Prices are the device specs' `price_per_hour`.
"""

from __future__ import annotations

import math

import numpy as np

from cost_models.cluster import parse_cluster
from cost_models.hardware import get_device
from cost_models.serving.deployment import CostCache, Deployment, simulate
from cost_models.serving.engine_settings import engine_settings
from cost_models.serving.metrics import ATTAINMENT, attainment, capacity_rate
from cost_models.serving.policies import Chunked
from cost_models.serving.rate_search import highest_rate
from cost_models.serving.workload import Workload, arrivals, context_filter, longest_request_tokens, make_workload
from ir.errors import UserError
from passes.parallel_layouts import TP_DEGREES, tp_ok
from passes.serving_candidates import BOUND_SLACK
from passes.serving_fleet import FleetConfig, FleetInstance, restrict, single_config, solve_fleet
from passes.serving_search import requests_at
from passes.strategy import CaptureShape, Outcome, Problem, Request

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
            w = _bucket_workload(pool, index, requests_at(rate)).with_rate(rate)
            return attainment(simulate(costs, Deployment(FLEET_POLICY, tp=tp), w), self.slo) >= ATTAINMENT

        rate = highest_rate(ok, bound / 64, bound * BOUND_SLACK, widen=1, steps=_STEPS, tolerance=_TOLERANCE)
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


def fleet_instance(graph, spec: str, workload: str, rate: float, slo: dict, dtype: str = "bf16"):
    """Profile every configuration for `graph` and return (FleetInstance, configs, buckets, profiler); the
    capacities do not depend on `rate` (only the bucket rates do), so one profile serves many rates."""
    names, limits = parse_fleet_spec(spec)
    context, _ = context_filter(workload, graph.config.get("max_position_embeddings"))  # requests the model takes
    pool = make_workload(workload, FLEET_POOL, 1.0, seed=FLEET_SEED, max_total=context)
    buckets = _buckets(pool)
    profiler = FleetProfiler(graph, slo, dtype)
    inst, configs = _instance(graph, names, limits, buckets, pool, rate, profiler)
    return inst, configs, buckets, profiler


class FleetStrategy:
    """A comma-separated `--cluster`: a list of GPU types to buy from, for a serving workload at `--rate`."""

    name = "fleet"

    def capture_shape(self, request: Request) -> CaptureShape:
        # the model's default sequence (min(2048, its positions)): profiles price whole requests per iteration
        return CaptureShape(None, "bf16" if request.dtype == "fp8" else request.dtype)

    def prepare(self, request: Request, graph) -> Problem:
        if request.workload in ("train", "prefill", "decode") or any(request.fixed.get(k) for k in ("tp", "pp", "dp", "ep")):
            raise UserError(f"a list of GPU types (--cluster {request.cluster_spec!r}) plans a serving fleet: use a "
                            "serving --workload (chat, summarize, code or a trace .csv) with --rate, without "
                            "--tp/--pp/--dp/--ep")
        if request.objective not in (None, "cost"):
            raise UserError(f"a list of GPU types (--cluster {request.cluster_spec!r}) plans a fleet for --objective "
                            f"cost; got --objective {request.objective}")
        if request.rate is None:
            raise UserError("a fleet plan needs the request rate to serve: add --rate REQUESTS_PER_S")
        parse_fleet_spec(request.cluster_spec)  # a bad list is refused before any profiling
        effective = {**DEFAULT_SLO, **{k: v for k, v in (request.slo or {}).items() if v}}
        inputs = {"workload": {"kind": request.workload, "rate": request.rate}, "objective": "cost",
                  "slo": request.slo, "dtype": request.dtype}
        return Problem(request, None, "cost", inputs, {"slo": effective})

    def costs(self, graph, problem: Problem):
        return None  # each (GPU type, tp) configuration's tables are built by its profiler (FleetProfiler.cost)

    def propose(self, graph, problem: Problem, costs) -> list:
        return []  # configurations are chosen while profiling (fleet_instance): those that hold a median request

    def search(self, graph, problem: Problem, costs, candidates: list) -> Outcome:
        request, slo = problem.request, problem.shape["slo"]
        inst, configs, buckets, profiler = fleet_instance(graph, request.cluster_spec, request.workload, request.rate,
                                                          slo, request.dtype)
        sol = solve_fleet(inst, FleetConfig())
        if sol.counts is None:
            raise UserError(_infeasible(inst, buckets, slo, request.rate))
        return _outcome(graph, request, inst, configs, buckets, sol, slo, profiler)

    def memory_map(self, graph, problem: Problem, plan_json: dict) -> None:
        return None  # instances are whole serving engines; their memory is the engines' own

    def evaluate(self, graph, cluster, plan_json: dict) -> dict:
        return plan_json["predicted"]  # the profile is not re-simulated; `check` re-solves against it

    def check(self, graph, cluster, plan_json: dict) -> list[str]:
        return verify_fleet(plan_json)


def single_type_fleets(inst: FleetInstance) -> dict[str, int | None]:
    """Per GPU type, the cheapest fleet of that type alone (milli-$/h; None when it cannot serve the rate)."""
    return {g: solve_fleet(restrict(inst, g), FleetConfig()).cost_milli for g in dict.fromkeys(inst.gpu_type)}


def _outcome(graph, request: Request, inst: FleetInstance, configs, buckets, sol, slo, profiler) -> Outcome:
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
                                    if sol.slices_of[c][b]},
                         "engine": fleet_engine(graph, device, tp, request.dtype, request.workload,
                                                profiler.cost(device, tp))})
    cheapest = None
    if singles:
        cost, c, counts = singles[0]
        cheapest = {"config": inst.configs[c], "instances": counts[c], "dollars_per_hour": cost / 1000}
    predicted = {"dollars_per_hour": sol.cost_milli / 1000, "rate_rps": sum(inst.bucket_rate),
                 "gpus": sum(r["gpus"] for r in rows), "cheapest_single_config": cheapest,
                 "single_type_dollars_per_hour": {g: (v / 1000 if v is not None else None) for g, v in per_type.items()},
                 "cheapest_single_type": best_type,
                 "saving_vs_single_type": 1 - sol.cost_milli / feasible[best_type] if best_type else None}
    profile = {"buckets": [{"name": _bucket_name(b), "prompt_tokens": b["prompt_tokens"],
                            "output_tokens": b["output_tokens"], "share": b["share"], "rate_rps": r}
                           for b, r in zip(buckets, inst.bucket_rate)],
               "capacity_rps": {name: list(row) for name, row in zip(inst.configs, inst.capacity)},
               "price_milli_per_hour": dict(zip(inst.configs, inst.price_milli)),
               "gpu_limits": dict(inst.gpu_limit), "slices": inst.slices,
               "seed": FLEET_SEED, "simulations": profiler.simulations, **_context_record(request.workload, graph)}
    solver = {"search": "cp-sat over instance counts and load slices (passes.serving_fleet)",
              "status": sol.status, "solver": sol.solver, "objective_milli_per_hour": sol.cost_milli,
              "bound_milli_per_hour": sol.bound_milli, "gap": sol.gap, "candidates_evaluated": len(configs),
              "candidates_pruned": 0}
    decision = {"kind": "fleet", "instances": rows, "policy": FLEET_POLICY.describe(), "slo": slo,
                "longest_request_tokens": fleet_longest_request(graph, request.workload)}
    return Outcome(decision, predicted,
                   solver, _binding(inst, sol, buckets), profile=profile,
                   cluster_description=f"fleet of {', '.join(dict.fromkeys(inst.gpu_type))}")


def fleet_longest_request(graph, workload: str) -> int:
    """The workload's longest request the model takes (the engines' context limit)."""
    context, _ = context_filter(workload, graph.config.get("max_position_embeddings"))
    return longest_request_tokens(workload, context)


def fleet_engine(graph, device: str, tp: int, dtype: str, workload: str, costs: CostCache | None = None) -> dict:
    """The engine settings of one instance of a (GPU type, tp) configuration under the fleet policy, for the
    workload's longest request (what codegen renders into that configuration's engine scripts); `costs`: the
    configuration's tables where the profiler already built them."""
    cost = (costs or CostCache(graph, parse_cluster(f"{tp}x{device}"), dtype)).get(tp, 1)
    return engine_settings(cost, FLEET_POLICY, fleet_longest_request(graph, workload))


def _context_record(workload: str, graph) -> dict:
    """The model's context and the share of the workload's requests left out for exceeding it (if any can)."""
    context, over = context_filter(workload, graph.config.get("max_position_embeddings"))
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
