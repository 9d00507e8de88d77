"""`planner verify`'s checks of a fleet plan (a mix of GPU types serving a rate at the lowest cost).

The solution is re-checked against its recorded profile (`passes.fleet_strategy.verify_fleet`: every slice
served, no instance over capacity, the cost the sum of the prices, GPU limits kept). Then what the profile
and the predictions claim: prices are the device specs', GPU limits the cluster list's, the buckets' rates
their shares of the target rate and their shares what the workload gives; each row's GPUs and $/h follow
from its instances; the cheapest single configuration and single-type fleets are re-solved from the
profile; and every capacity the chosen fleet relies on is re-simulated at the claimed rate (one instance
of that configuration on that bucket's requests must keep 90% of them within the SLO, and the claim must
stay under the configuration's offline throughput bound times the search's slack).
"""

from __future__ import annotations

import numpy as np

from cost_models.hardware import get_device
from cost_models.serving.deployment import Deployment, simulate
from cost_models.serving.metrics import ATTAINMENT, attainment, capacity_rate
from cost_models.serving.workload import Workload, arrivals, make_workload
from passes.fleet_strategy import (
    FLEET_POLICY,
    FLEET_POOL,
    FLEET_SEED,
    FLEET_SLICES,
    FleetProfiler,
    fleet_engine,
    fleet_longest_request,
    parse_fleet_spec,
    single_type_fleets,
    verify_fleet,
)
from passes.serving_candidates import BOUND_SLACK
from passes.serving_fleet import FleetInstance, single_config
from passes.serving_search import requests_at
from planner.verify_claims import differences, jsonable

TOLERANCE = 1e-6


def fleet_problems(graph, plan_json: dict, problem) -> list[str]:
    """Every problem of a fleet plan (see the module docstring); `problem` is the strategy's reading of its inputs."""
    d, prof = plan_json["decision"], plan_json["profile"]
    problems = verify_fleet(plan_json)
    names, limits = parse_fleet_spec(plan_json["inputs"]["cluster"])
    problems += _profile_problems(prof, names, limits, plan_json["inputs"]["workload"]["rate"])
    if d["policy"] != FLEET_POLICY.describe():
        problems.append(f"decision.policy {d['policy']!r} is not the fleet policy {FLEET_POLICY.describe()!r}")
    problems += differences(d["slo"], problem.shape["slo"], "decision.slo", "the inputs' SLO (defaults filled in):")
    problems += _row_problems(d, prof)
    problems += _engine_problems(graph, d, plan_json["inputs"])
    if problems:
        return problems
    inst = _instance(prof, names)
    problems += differences(plan_json["predicted"], _predictions(inst, d, plan_json["solver"]), "predicted",
                            "the profile's")
    devices = ", ".join(dict.fromkeys(inst.gpu_type))
    if plan_json["cluster_description"] != f"fleet of {devices}":
        problems.append(f"cluster_description {plan_json['cluster_description']!r} is not 'fleet of {devices}'")
    if plan_json["model_name"] != graph.model:
        problems.append(f"model_name {plan_json['model_name']!r} is not the rebuilt model's name {graph.model!r}")
    return problems + _capacity_problems(graph, plan_json, problem.shape["slo"])


def _config(name: str) -> tuple[str, int]:
    device, _, tp = name.rpartition(" tp")
    return device, int(tp) if tp.isdigit() else 0


def _profile_problems(prof: dict, names: list[str], limits: dict, rate: float) -> list[str]:
    problems = []
    for name, price in sorted(prof["price_milli_per_hour"].items()):
        device, tp = _config(name)
        if device not in names or tp < 1:
            problems.append(f"profile configuration {name!r} is not a tp of a GPU type in the list {', '.join(names)}")
        elif price != round(get_device(device).price_per_hour * tp * 1000):
            problems.append(f"profile.price_milli_per_hour[{name!r}] {price} is not {tp} x {device}'s price")
    if sorted(prof["capacity_rps"]) != sorted(prof["price_milli_per_hour"]):
        problems.append("profile.capacity_rps and profile.price_milli_per_hour name different configurations")
    if dict(prof["gpu_limits"]) != limits:
        problems.append(f"profile.gpu_limits {dict(prof['gpu_limits'])} is not the cluster list's {limits}")
    if (prof["seed"], prof["slices"]) != (FLEET_SEED, FLEET_SLICES):
        problems.append(f"profile seed/slices {prof['seed']}/{prof['slices']} are not {FLEET_SEED}/{FLEET_SLICES}")
    shares = [b["share"] for b in prof["buckets"]]
    if abs(sum(shares) - 1) > TOLERANCE or min(shares, default=0) <= 0:
        problems.append(f"profile bucket shares {shares} do not sum to 1")
    for i, b in enumerate(prof["buckets"]):
        problems += differences(b["rate_rps"], b["share"] * rate, f"profile.buckets[{i}].rate_rps",
                                "its share of the target rate:")
    return problems


def _engine_problems(graph, d: dict, inputs: dict) -> list[str]:
    """Each configuration's engine settings are the ones its instance gets under the fleet policy."""
    problems = []
    if "longest_request_tokens" in d:
        longest = fleet_longest_request(graph, inputs["workload"]["kind"])
        if d["longest_request_tokens"] != longest:
            problems.append(f"decision.longest_request_tokens {d['longest_request_tokens']} is not the workload's "
                            f"longest request {longest}")
    for i, row in enumerate(d["instances"]):
        if "engine" in row:
            fresh = fleet_engine(graph, row["device"], row["tp"], inputs["dtype"], inputs["workload"]["kind"])
            problems += differences(row["engine"], jsonable(fresh), f"decision.instances[{i}].engine",
                                    "its configuration's")
    return problems


def _row_problems(d: dict, prof: dict) -> list[str]:
    problems = []
    for i, row in enumerate(d["instances"]):
        device, tp = _config(row["config"])
        price = prof["price_milli_per_hour"].get(row["config"], 0)
        fresh = {"device": device, "tp": tp, "gpus": row["instances"] * tp,
                 "dollars_per_hour": row["instances"] * price / 1000}
        problems += differences({k: row[k] for k in fresh}, fresh, f"decision.instances[{i}]", "its configuration's")
        if row["instances"] < 1:
            problems.append(f"decision.instances[{i}] buys {row['instances']} instances")
    return problems


def _instance(prof: dict, names: list[str]) -> FleetInstance:
    """The solved problem, its configurations in the planner's order (the cluster list's, then tp)."""
    configs = tuple(sorted(prof["capacity_rps"], key=lambda n: (names.index(_config(n)[0]), _config(n)[1])))
    return FleetInstance(configs, tuple(_config(n)[0] for n in configs), tuple(_config(n)[1] for n in configs),
                         tuple(prof["price_milli_per_hour"][n] for n in configs),
                         tuple(b["rate_rps"] for b in prof["buckets"]),
                         tuple(tuple(prof["capacity_rps"][n]) for n in configs),
                         tuple(sorted(prof["gpu_limits"].items())), prof["slices"])


def _predictions(inst: FleetInstance, d: dict, solver: dict) -> dict:
    """The fleet's predictions from the profile: its cost, GPUs and the single-configuration and single-type
    alternatives (re-solved)."""
    singles = single_config(inst)
    per_type = single_type_fleets(inst)
    feasible = {g: v for g, v in per_type.items() if v is not None}
    best_type = min(feasible, key=lambda g: (feasible[g], g)) if feasible else None
    cost = solver["objective_milli_per_hour"]
    cheapest = None
    if singles:
        single_cost, c, counts = singles[0]
        cheapest = {"config": inst.configs[c], "instances": counts[c], "dollars_per_hour": single_cost / 1000}
    return {"dollars_per_hour": cost / 1000, "rate_rps": sum(inst.bucket_rate),
            "gpus": sum(r["gpus"] for r in d["instances"]), "cheapest_single_config": cheapest,
            "single_type_dollars_per_hour": {g: (v / 1000 if v is not None else None) for g, v in per_type.items()},
            "cheapest_single_type": best_type,
            "saving_vs_single_type": 1 - cost / feasible[best_type] if best_type else None}


def _capacity_problems(graph, plan_json: dict, slo: dict) -> list[str]:
    """Each capacity the chosen fleet uses, re-simulated at the claimed rate on its bucket's requests."""
    prof, inputs = plan_json["profile"], plan_json["inputs"]
    pool = make_workload(inputs["workload"]["kind"], FLEET_POOL, 1.0, seed=FLEET_SEED,
                         max_total=prof.get("context_tokens"))
    profiler, problems = FleetProfiler(graph, slo, inputs["dtype"]), []
    for k, bucket in enumerate(prof["buckets"]):
        index = np.flatnonzero(_in_bucket(pool, bucket))
        if abs(len(index) / len(pool) - bucket["share"]) > TOLERANCE:
            problems.append(f"profile.buckets[{k}].share {bucket['share']} is not the workload's {len(index) / len(pool)}")
            continue
        for row in plan_json["decision"]["instances"]:
            if not row["slices"].get(bucket["name"]):
                continue
            cap = prof["capacity_rps"][row["config"]][k]
            problems += _one_capacity(profiler, row, k, cap, pool, index, slo)
    return problems


def _one_capacity(profiler, row: dict, k: int, cap: float, pool: Workload, index, slo: dict) -> list[str]:
    where = f"profile.capacity_rps[{row['config']!r}][{k}] {cap:.4g} req/s"
    costs = profiler.cost(row["device"], row["tp"])
    sizes = pool.prompt_tokens[index], pool.output_tokens[index]
    bound = capacity_rate(costs.get(row["tp"], 1), float(sizes[0].mean()), float(sizes[1].mean())) * BOUND_SLACK
    if cap > bound * (1 + TOLERANCE):
        return [f"{where} is above the configuration's offline throughput bound x {BOUND_SLACK} ({bound:.4g})"]
    n = requests_at(cap)
    take = index[np.arange(n) % len(index)]
    w = Workload(arrivals(n, 1.0, seed=FLEET_SEED), pool.prompt_tokens[take], pool.output_tokens[take], pool.name)
    held = attainment(simulate(costs, Deployment(FLEET_POLICY, tp=row["tp"]), w.with_rate(cap)), slo)
    if held < ATTAINMENT:
        return [f"{where}: one instance keeps only {held:.1%} of that bucket's requests within the SLO "
                f"({ATTAINMENT:.0%} needed)"]
    return []


def _in_bucket(pool: Workload, bucket: dict) -> np.ndarray:
    (p_lo, p_hi), (o_lo, o_hi) = bucket["prompt_tokens"], bucket["output_tokens"]
    mask = (pool.prompt_tokens > p_lo) & (pool.output_tokens > o_lo)
    if p_hi is not None:
        mask &= pool.prompt_tokens <= p_hi
    if o_hi is not None:
        mask &= pool.output_tokens <= o_hi
    return mask
