"""`planner verify`'s comparisons of a plan's claims with their recomputation: the deep compare of recorded
against fresh values, the recorded inputs against the question they answer, the model's and cluster's
identity, pinned options, the solver report, runners-up and baselines, and the memory map.

Every function returns problems (one line each, naming the claim by its path in the plan file); empty when
the claims hold. Recomputation is the caller's (`planner.verify`); nothing here imports or runs what a plan
names.
"""

from __future__ import annotations

import hashlib
import json
import math

from ir.errors import UserError
from ir.plan import PLANNER_VERSION
from passes.memory_mapping import memory_map_for_plan, verify_memory_map
from planner.presets import PRESETS, get_preset

REL_TOL = 1e-6  # recomputed numbers agree to this relative tolerance (the same code on the same inputs)


def jsonable(value):
    """`value` as plan JSON holds it (tuples as lists, numpy scalars as numbers); ValueError on NaN or inf."""
    return json.loads(json.dumps(value, allow_nan=False, default=_number))


def _number(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"not JSON: {value!r}")


def _same_number(a, b) -> bool:
    return math.isclose(float(a), float(b), rel_tol=REL_TOL, abs_tol=1e-300)


def differences(claimed, fresh, path: str, what: str = "the cost model's") -> list[str]:
    """Every place where `claimed` (as recorded) and `fresh` (recomputed) differ, deep, by path.

    >>> differences({"a": 1.0, "b": [1, 2]}, {"a": 1.0000000001, "b": [1, 3]}, "predicted")
    ["predicted.b[1] 2 disagrees with the cost model's 3"]
    """
    if isinstance(claimed, dict) and isinstance(fresh, dict):
        out = []
        for key in sorted(set(claimed) | set(fresh)):
            where = f"{path}.{key}"
            if key not in fresh:
                out.append(f"{where} is recorded but is not part of {what} answer")
            elif key not in claimed:
                out.append(f"{where} is missing (recomputed: {_show(fresh[key])})")
            else:
                out += differences(claimed[key], fresh[key], where, what)
        return out
    if isinstance(claimed, list) and isinstance(fresh, list):
        if len(claimed) != len(fresh):
            return [f"{path} has {len(claimed)} entries; {what} answer has {len(fresh)}"]
        return [p for i, (a, b) in enumerate(zip(claimed, fresh)) for p in differences(a, b, f"{path}[{i}]", what)]
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (claimed, fresh))
    if (numbers and _same_number(claimed, fresh)) or (not numbers and claimed == fresh):
        return []
    return [f"{path} {_show(claimed)} disagrees with {what} {_show(fresh)}"]


def _show(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def version_problems(plan) -> list[str]:
    """The planner version that wrote the plan is this one (another version's numbers differ)."""
    version = plan.inputs.planner_version
    if version != PLANNER_VERSION:
        return [f"inputs.planner_version {version!r} is not this planner's {PLANNER_VERSION!r}; re-run `planner plan`"]
    return []


def input_problems(recorded: dict, derived: dict) -> list[str]:
    """The plan's inputs (workload, objective, SLO, pinned options, dtype) are what its question gives when the
    strategy fills in defaults again (`derived`: the strategy's `Problem.inputs`)."""
    ignore = ("model", "model_source", "cluster", "planner_version")
    mine = {k: v for k, v in recorded.items() if k not in ignore}
    theirs = {k: v for k, v in jsonable(derived).items() if k not in ignore}
    if "slo" in theirs and not theirs["slo"] and "slo" not in mine:
        theirs.pop("slo")
    if "fixed" in theirs and not theirs["fixed"] and "fixed" not in mine:
        theirs.pop("fixed")
    return differences(mine, theirs, "inputs", "the planner's reading of the question:")


def model_problems(plan_json: dict, graph) -> list[str]:
    """The recorded model is the one named: a preset's values are this planner's preset values, the summary and
    the model name are what the rebuilt graph says."""
    inputs, source = plan_json["inputs"], plan_json["inputs"]["model_source"]
    problems = []
    if source["ref"] != inputs["model"]:
        problems.append(f"inputs.model_source.ref {source['ref']!r} is not inputs.model {inputs['model']!r}")
    if source["kind"] == "preset":
        problems += _preset_problems(source)
    if source["kind"] == "module" and (source["values"] is not None or source["sha256"] is not None):
        problems.append("inputs.model_source: a module reference records no values or hash")
    problems += differences(source["summary"], jsonable(dict(graph.config)), "inputs.model_source.summary",
                            "the rebuilt model's")
    if plan_json["model_name"] != graph.model:
        problems.append(f"model_name {plan_json['model_name']!r} is not the rebuilt model's name {graph.model!r}")
    return problems


def _preset_problems(source: dict) -> list[str]:
    preset = PRESETS.get(source["name"])
    if preset is None:
        return [f"inputs.model_source.name {source['name']!r} is not a preset of this planner"]
    try:
        named = get_preset(source["ref"]).name
    except UserError:
        named = None
    if named != preset.name:
        return [f"inputs.model_source.ref {source['ref']!r} does not name preset {preset.name}"]
    problems = differences(source["values"], jsonable(preset.values), "inputs.model_source.values",
                           f"preset {preset.name}'s")
    for key, value in (("config_class", preset.config_class), ("architecture", preset.architecture)):
        if source[key] != value:
            problems.append(f"inputs.model_source.{key} {source[key]!r} is not preset {preset.name}'s {value!r}")
    digest = hashlib.sha256(json.dumps(source["values"], sort_keys=True).encode()).hexdigest()
    if source["sha256"] != digest:
        problems.append("inputs.model_source.sha256 is not the hash of its values")
    return problems


def cluster_problems(plan_json: dict, cluster) -> list[str]:
    """The cluster description is the recorded cluster's."""
    described = cluster.describe()
    if plan_json["cluster_description"] != described:
        return [f"cluster_description {plan_json['cluster_description']!r} is not {described!r} "
                f"(inputs.cluster {plan_json['inputs']['cluster']!r})"]
    return []


def pinned_problems(plan_json: dict) -> list[str]:
    """Degrees and options the user pinned (`inputs.fixed`) are the decision's (prefill and decode layouts have
    no expert parallelism to pin)."""
    fixed, d = plan_json["inputs"].get("fixed") or {}, plan_json["decision"]
    problems = []
    for key, value in sorted(fixed.items()):
        if key == "ep" and d["kind"] == "inference" and d.get("phase") != "serve":
            continue
        if key == "tp" and d["kind"] == "train":
            have = sorted({s["tp"] for s in d["stages"]})
            if have != [value]:
                problems.append(f"inputs.fixed.tp={value} but the stages use tp {have}")
        elif key in d and d[key] != value and not (key == "sequence_parallel" and not value):
            problems.append(f"inputs.fixed.{key}={value} but decision.{key} is {d[key]}")
    return problems


def solver_problems(solver: dict) -> list[str]:
    """What a solver report claims and can be checked on its own: counts non-negative, bound <= objective, the
    gap (objective - bound) / objective, the interrupted flag and status agreeing."""
    problems = [f"solver.{k} {solver[k]} is negative" for k in ("candidates_evaluated", "candidates_pruned",
                                                                "candidates", "simulations")
                if isinstance(solver.get(k), int) and solver[k] < 0]
    for obj_key, bound_key in (("objective_us", "bound_us"), ("objective_milli_per_hour", "bound_milli_per_hour")):
        obj, bound = solver.get(obj_key), solver.get(bound_key)
        if obj is None:
            continue
        if obj < 0:
            problems.append(f"solver.{obj_key} {obj} is negative")
        if bound is not None and bound > obj:
            problems.append(f"solver.{bound_key} {bound} is above solver.{obj_key} {obj}: a lower bound cannot "
                            f"exceed the objective it bounds")
        gap = None if bound is None or not obj else max(obj - bound, 0) / obj
        if solver.get("gap") is not None or gap is not None:
            problems += differences(solver.get("gap"), gap, "solver.gap", "(objective - bound) / objective:")
    if "interrupted" in solver and solver["interrupted"] != (solver["status"] == "interrupted"):
        problems.append(f"solver.interrupted {solver['interrupted']} contradicts solver.status {solver['status']!r}")
    if solver.get("gap") is not None and solver["gap"] > 0 and solver["status"] == "optimal" \
            and "grouping_status" not in solver:
        problems.append(f"solver.status 'optimal' with a gap of {solver['gap']:.3g}")
    return problems


def train_report_problems(plan_json: dict) -> list[str]:
    """A training plan's runners-up are slower by what they say (and not faster than the plan, when it was
    chosen for throughput); the baselines' speedups are the ratios of throughputs. (The search's own score,
    `solver.step_objective_us`, ranks layouts before their final evaluation and is not a prediction.)"""
    pred, problems = plan_json["predicted"], []
    w = plan_json["inputs"]["workload"]
    for i, alt in enumerate(plan_json.get("alternatives") or []):
        where = f"alternatives[{i}]"
        if "step_time_s" in alt:
            fresh = {"slower_by": alt["step_time_s"] / pred["step_time_s"] - 1,
                     "tokens_per_s": w["batch"] * w["seq_len"] / alt["step_time_s"]}
            problems += differences({k: alt.get(k) for k in fresh}, fresh, where, "its step time's")
            if plan_json["inputs"]["objective"] == "throughput" and alt["step_time_s"] < pred["step_time_s"] * (1 - REL_TOL):
                problems.append(f"{where} ({alt['layout']}) is faster than the plan it lost to")
    for name, base in sorted((plan_json.get("baselines") or {}).items()):
        problems += differences(base["speedup_of_plan"], pred["tokens_per_s"] / base["tokens_per_s"],
                                f"baselines.{name}.speedup_of_plan", "the throughput ratio")
    return problems


def memory_map_problems(plan_json: dict, graph, cluster) -> list[str]:
    """The memory map recomputed: what is deterministic (regions, sizes, lifetimes, capacities, KV sizing) must be
    equal; the packing (offsets) must be valid and within capacity (`verify_memory_map`)."""
    recorded = plan_json.get("memory_map")
    if recorded is None:
        return ["memory_map is missing (every training and inference plan has one)"]
    problems = verify_memory_map(recorded)
    problems += [f"memory_map arena {a['name']}: peak_bytes {a['peak_bytes']} is not where its buffers end"
                 for a in recorded["arenas"] if "peak_bytes" in a
                 and a["peak_bytes"] != max((b["offset"] + b["size"] for b in a["buffers"]), default=0)]
    fresh = jsonable(memory_map_for_plan(plan_json, graph, cluster))
    return problems + differences(_deterministic(recorded), _deterministic(fresh), "memory_map", "the recomputed map's")


def _deterministic(memory_map: dict) -> dict:
    """A map without what the packing heuristics choose within their time limit (offsets, peaks, method), and
    without the sizes of a layer's transient buffers (scaled from the captured graph, whose shape may differ
    between planning and verifying: those arenas are checked by packing validity and capacity only)."""
    devices = [{**{k: v for k, v in d.items() if k not in ("regions", "total_bytes")},
                "regions": [{k: v for k, v in r.items() if k != "offset"} for r in d["regions"]]}
               for d in memory_map["devices"]]
    arenas = [{**{k: v for k, v in a.items() if k not in ("buffers", "peak_bytes", "lower_bound_bytes", "method",
                                                         "status")},
               "buffers": [{k: v for k, v in b.items() if k != "offset" and not (k == "size" and "layer" in a)}
                           for b in a["buffers"]]}
              for a in memory_map["arenas"]]
    return {**memory_map, "devices": devices, "arenas": arenas}
