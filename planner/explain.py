"""`planner explain`: why a plan was chosen, in words, with per-stage time and memory and a text
timeline of its pipeline schedule."""

from __future__ import annotations

from cost_models.pipeline_schedule import stage_order
from ir.plan import Plan


def _bar(used: float, capacity: float, width: int = 30) -> str:
    fill = min(round(width * used / capacity), width) if capacity else 0
    return "[" + "#" * fill + "." * (width - fill) + f"] {used / 1e9:6.1f} / {capacity / 1e9:.1f} GB"


def _timeline(decision: dict, limit: int = 8) -> list[str]:
    """Each stage's compute order (cost_models.pipeline_schedule.stage_order); interleaving shows
    "F3.1" for microbatch 3 on the stage's virtual stage 1. Interleaved plans keep all microbatches
    of a round of pp (the schedule's unit), GPipe and 1F1B the first `limit`."""
    schedule, v, pp = decision.get("schedule", "1f1b"), decision.get("virtual_stages", 1), decision["pp"]
    m = decision.get("microbatches", 1)
    m = min(m, max(limit // pp, 1) * pp) if schedule == "interleaved" and m % pp == 0 else min(m, limit)
    name = {"1f1b": "1F1B", "gpipe": "GPipe", "interleaved": f"interleaved 1F1B (v={v} virtual stages per stage)"}
    lines = [f"{name.get(schedule, schedule)} schedule, first {m} microbatches (F = forward, B = backward):"]
    for s in range(pp):
        lines.append(f"  stage {s}: " + "  " * s + " ".join(stage_order(schedule, pp, s, m, v)))
    return lines


def explain_plan(typed: Plan) -> str:
    """Human-readable explanation of a plan."""
    plan = typed.to_json()
    if typed.kind == "fleet":
        return explain_fleet(plan)
    d, p, inputs = plan["decision"], plan["predicted"], plan["inputs"]
    lines = [f"plan for {plan.get('model_name', inputs['model'])} on {plan.get('cluster_description', inputs['cluster'])}",
             f"workload: {inputs['workload']}  objective: {inputs['objective']}"]
    layout = f"dp={d['dp']} tp={d['tp']} pp={d['pp']}"
    if d.get("ep", 1) > 1:
        layout += f" ep={d['ep']} (experts split {d['ep']} ways over the dp replicas)"
    if d["kind"] == "train":
        layout += (f" microbatch={d['microbatch_size']} x {d['microbatches']} recompute={d['recompute']} "
                   f"zero={d['zero_stage']} schedule={d['schedule']}"
                   + (f" virtual_stages={d['virtual_stages']}" if d.get("virtual_stages", 1) > 1 else "")
                   + (" sequence_parallel" if d.get("sequence_parallel") else ""))
        lines.append(f"chosen: {layout}")
        lines.append(f"predicted: step {p['step_time_s']:.3f} s, {p['tokens_per_s']:,.0f} tokens/s, "
                     f"MFU {p['mfu']:.1%}, {p['memory_per_device_bytes'] / 1e9:.1f} GB on the fullest device")
    else:
        lines.append(f"chosen: {layout} ({d['phase']})")
        parts = [f"{k} {p[k]:.4g}" for k in ("latency_s", "ttft_s", "tpot_s", "output_tokens_per_s", "tokens_per_s")
                 if p.get(k) is not None]
        lines.append("predicted: " + ", ".join(parts))
    margin = p.get("memory_margin_bytes") or {}
    if margin:
        lines.append("memory kept free (per device): " + ", ".join(
            f"{k.replace('_', ' ')} {v / 1e9:.2f} GB" for k, v in sorted(margin.items(), key=lambda kv: -kv[1]) if v))
    band = p.get("uncertainty") or {}
    if band.get("relative_error_80") is not None:
        lines.append(f"uncertainty: +-{band['relative_error_80']:.0%} at 80% coverage "
                     f"({band.get('points')} validation points)")
    elif band.get("basis"):
        lines.append(f"uncertainty: {band['basis']}")
    solver = plan.get("solver", {})
    method = solver.get("grouping") or solver.get("search")
    gap = f", gap {solver['gap']:.4f}" if isinstance(solver.get("gap"), float) else ""
    lines.append(f"solver: {method}, status {solver.get('status')}{gap}, {solver.get('candidates_evaluated')} "
                 f"candidates evaluated, {solver.get('candidates_pruned')} pruned")
    if solver.get("interrupted"):
        lines.append("note: the search was interrupted (Ctrl-C); this is the best plan found until then")
    lines.append("why (binding constraints):")
    lines += [f"  - {c}" for c in plan.get("binding_constraints", [])]
    lines.append("stages:")
    times = p.get("stage_times_s") or []
    mems, caps = p.get("stage_memory_bytes") or [], p.get("stage_capacity_bytes") or []
    for i, s in enumerate(d["stages"]):
        t = f" {times[i] * 1e3:8.2f} ms/microbatch" if i < len(times) else ""
        bar = f"  {_bar(mems[i], caps[i])}" if i < len(mems) else ""
        where = (f"layers {s['layers'][0]}-{s['layers'][1] - 1} ({s['first_layer']} .. {s['last_layer']})" if "chunks" not in s
                 else "chunks " + ", ".join(f"{a}-{b - 1}" for a, b in s["chunks"]))
        lines.append(f"  {i}: {where} on {s['tp']} x {s['device']} x dp {len(s['ranks'])}{t}{bar}")
    alternatives = plan.get("alternatives") or []
    if alternatives:
        lines.append("runners-up:")
        for alt in alternatives:
            lost = f"{alt['slower_by']:.1%} slower" if "slower_by" in alt else ", ".join(
                f"{k} {v:.4g}" for k, v in sorted(alt.items()) if k != "layout" and isinstance(v, (int, float)))
            lines.append(f"  {alt['layout']}: {lost}")
    for name, base in (plan.get("baselines") or {}).items():
        lines.append(f"baseline {name.replace('_', ' ')} ({base['layout']}): plan is {base['speedup_of_plan']:.2f}x faster")
    if d["kind"] == "train" and d["pp"] > 1:
        lines += _timeline(d)
    return "\n".join(lines) + "\n"


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
