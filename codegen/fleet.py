"""Launch files of a fleet plan (several GPU types serving one model, `planner.plan_fleet`).

A fleet plan buys instances of several (GPU type, tp) configurations and assigns each request-size
bucket's load to them in slices (Mélange). It compiles to one vLLM and one SGLang launch script per
configuration (start it once per instance the plan buys, on that GPU type) and a README with the
routing table a load balancer applies: the share of each bucket's requests each configuration takes.
Every configuration runs the plan's policy (chunked prefill at its token budget), as simulated.
"""

from __future__ import annotations

import re

from codegen.context import model_spec, plan_hash
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


def fleet_context(plan: dict) -> dict:
    """Render context of a fleet plan: header, one `serving` dict per configuration, routing rows."""
    decision, inputs = plan["decision"], plan["inputs"]
    instances = decision.get("instances")
    if not isinstance(instances, list) or not instances:
        raise UserError("fleet plan has no instances; re-run `planner plan` with the list of GPU types and --rate")
    spec = model_spec(inputs["model_source"])
    budget = _budget(decision.get("policy", ""))
    dtype = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(inputs.get("dtype"), "auto")
    slices = int((plan.get("profile") or {}).get("slices") or 10)
    configs = []
    for inst in instances:
        try:
            configs.append({
                "config": str(inst["config"]), "slug": _slug(str(inst["config"])), "device": str(inst["device"]),
                "instances": int(inst["instances"]), "gpus": int(inst["gpus"]),
                "dollars_per_hour": float(inst["dollars_per_hour"]),
                "routing": {str(b): int(n) * 100 // slices for b, n in sorted(inst.get("slices", {}).items())},
                "serving": {"model_path": spec.get("hub_id") or inputs["model"], "tp": int(inst["tp"]), "pp": 1,
                            "dp": 1, "ep": 1, "max_model_len": None, "max_num_seqs": None,
                            "chunked_prefill": True if budget else None, "max_num_batched_tokens": budget,
                            "disaggregated": None, "dtype": dtype, "phase": "serve"},
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
            files[f"serve_{engine}_{config['slug']}.sh"] = env.get_template(f"serve_{engine}.sh.j2").render(
                header=context["header"], serving=config["serving"])
    return files
