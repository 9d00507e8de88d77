"""Launch files of a fleet plan (several GPU types serving one model, `planner.plan_fleet`).

A fleet plan buys instances of several (GPU type, tp) configurations and assigns each request-size
bucket's load to them in slices (Mélange). It compiles to one vLLM and one SGLang launch script per
configuration (`codegen.serving`: its instances packed onto nodes of that GPU type, each pinned to its GPUs,
behind the engine's router dispatching round robin among them, as the plan assumes) and a README with the
routing table a size-aware front applies: the share of each bucket's requests each configuration takes (no
router of either engine routes by request size; that front is not generated). Every configuration runs the
plan's policy (chunked prefill at its token budget), as simulated; the engine settings (KV cache, limits)
come from the cost model the fleet was profiled with (`cost_models.serving.engine_settings`).
"""

from __future__ import annotations

import re

from codegen.context import model_spec, plan_hash
from codegen.engine_args import engine_scripts
from codegen.serving import engine_record, instances_of, model_checkpoint
from ir.errors import UserError


def _budget(policy: str) -> int | None:
    """The token budget of a 'chunked(budget=N)' policy description.

    >>> _budget("chunked(budget=2048)"), _budget("prefill-first")
    (2048, None)
    """
    match = re.fullmatch(r"chunked\(budget=(\d+)\)", policy or "")
    return int(match.group(1)) if match else None


def _slug(config: str) -> str:
    """'A100-SXM-80GB tp1' -> 'a100-sxm-80gb_tp1' (a file-name-safe configuration name)."""
    return re.sub(r"[^a-z0-9.-]+", "_", config.lower()).strip("_")


def _config_serving(plan: dict, spec: dict, inst: dict, budget: int, longest: int) -> dict:
    """The serving render context of one configuration: its instances with the engine settings the plan records."""
    from cost_models.cluster import parse_cluster

    inputs = plan["inputs"]
    tp, count = int(inst["tp"]), int(inst["instances"])
    if tp < 1 or count < 1:
        raise ValueError(f"tp {tp} and instances {count} must be positive")
    if "engine" not in inst:
        raise UserError(f"fleet plan configuration {inst.get('config')!r} records no engine settings (written by a "
                        f"planner before the engine scripts); re-run `planner plan`")
    cluster = parse_cluster(f"{tp * count}x{inst['device']}")
    engines = {"instance": engine_record(inst["engine"], "instance")}
    instances = instances_of(cluster, engines, [("instance", [list(range(j * tp, (j + 1) * tp)) for j in range(count)], tp, 1)])
    model, note = model_checkpoint(plan, spec, inputs["workload"]["kind"])
    common = {"model_path": model, "model_note": note, "max_model_len": longest, "policy": "chunked",
              "prefix_caching": True, "dtype": inputs.get("dtype", "bf16"), "kv_dtype": inputs.get("kv_dtype"), "ep": 1,
              "chunk_tokens": budget, "nodes": cluster.num_nodes, "accelerator": True}
    return engine_scripts(common, instances)


def fleet_context(plan: dict) -> dict:
    """Render context of a fleet plan: header, one `serving` dict per configuration, routing rows."""
    decision, inputs = plan["decision"], plan["inputs"]
    instances = decision.get("instances")
    if not isinstance(instances, list) or not instances:
        raise UserError("fleet plan has no instances; re-run `planner plan` with the list of GPU types and --rate")
    spec = model_spec(inputs["model_source"])
    budget = _budget(decision.get("policy", ""))
    if budget is None:
        raise UserError(f"fleet plan policy {decision.get('policy')!r} is not chunked(budget=N); re-run `planner plan`")
    longest = decision.get("longest_request_tokens")
    if not isinstance(longest, int) or isinstance(longest, bool) or longest < 1:
        raise UserError("fleet plan records no decision.longest_request_tokens (written by a planner before the "
                        "engine scripts); re-run `planner plan`")
    slices = int((plan.get("profile") or {}).get("slices") or 10)
    configs = []
    for inst in instances:
        try:
            configs.append({
                "config": str(inst["config"]), "slug": _slug(str(inst["config"])), "device": str(inst["device"]),
                "instances": int(inst["instances"]), "gpus": int(inst["gpus"]),
                "dollars_per_hour": float(inst["dollars_per_hour"]),
                "routing": {str(b): int(n) * 100 // slices for b, n in sorted(inst.get("slices", {}).items())},
                "serving": _config_serving(plan, spec, inst, budget, longest),
            })
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"fleet plan instance {inst!r} is malformed ({exc}); re-run `planner plan`") from None
    buckets = [{"name": b["name"], "share": float(b["share"]), "rate_rps": float(b["rate_rps"])}
               for b in (plan.get("profile") or {}).get("buckets", [])]
    return {
        "header": {"planner_version": inputs.get("planner_version", "unknown"), "fingerprint": plan.get("fingerprint", ""),
                   "plan_hash": plan_hash(plan), "model": inputs["model"], "cluster": inputs.get("cluster")},
        "configs": configs, "buckets": buckets, "policy": decision.get("policy"), "slo": decision.get("slo", {}),
        "predicted": plan.get("predicted", {}), "model_name": plan.get("model_name", inputs["model"]),
    }


def render_fleet(plan: dict, env) -> dict[str, str]:
    """File name -> text for a fleet plan: README.md, plan.json is added by the caller."""
    context = fleet_context(plan)
    files = {"README.md": env.get_template("README_fleet.md.j2").render(**context)}
    for config in context["configs"]:
        for engine in ("vllm", "sglang"):
            name = f"serve_{engine}_{config['slug']}.sh"
            files[name] = env.get_template(f"serve_{engine}.sh.j2").render(header=context["header"],
                                                                          serving=config["serving"], script_name=name)
    return files
