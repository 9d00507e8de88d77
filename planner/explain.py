"""`planner explain`: why a plan was chosen, in words, with per-stage time and memory and a text
timeline of its pipeline schedule."""

from __future__ import annotations


def _bar(used: float, capacity: float, width: int = 30) -> str:
    fill = min(round(width * used / capacity), width) if capacity else 0
    return "[" + "#" * fill + "." * (width - fill) + f"] {used / 1e9:6.1f} / {capacity / 1e9:.1f} GB"


def one_f_one_b(stages: int, microbatches: int) -> list[list[str]]:
    """The 1F1B order of each stage as tokens "F3" / "B3" (Narayanan et al. 2021, PipeDream-Flush).

    >>> one_f_one_b(2, 3)
    [['F0', 'F1', 'B0', 'F2', 'B1', 'B2'], ['F0', 'B0', 'F1', 'B1', 'F2', 'B2']]
    """
    out = []
    for s in range(stages):
        warmup = min(stages - s, microbatches)
        order = [f"F{i}" for i in range(warmup)]
        f, b = warmup, 0
        while b < microbatches:
            order.append(f"B{b}")
            b += 1
            if f < microbatches:
                order.append(f"F{f}")
                f += 1
        out.append(order)
    return out


def _timeline(decision: dict, limit: int = 8) -> list[str]:
    """Each stage's compute order (cost_models.pipeline_schedule.stage_order); interleaving shows
    "F3.1" for microbatch 3 on the stage's virtual stage 1. Interleaved plans keep all microbatches
    of a round of pp (the schedule's unit), GPipe and 1F1B the first `limit`."""
    from cost_models.pipeline_schedule import stage_order

    schedule, v, pp = decision.get("schedule", "1f1b"), decision.get("virtual_stages", 1), decision["pp"]
    m = decision.get("microbatches", 1)
    m = min(m, max(limit // pp, 1) * pp) if schedule == "interleaved" and m % pp == 0 else min(m, limit)
    name = {"1f1b": "1F1B", "gpipe": "GPipe", "interleaved": f"interleaved 1F1B (v={v} virtual stages per stage)"}
    lines = [f"{name.get(schedule, schedule)} schedule, first {m} microbatches (F = forward, B = backward):"]
    for s in range(pp):
        lines.append(f"  stage {s}: " + "  " * s + " ".join(stage_order(schedule, pp, s, m, v)))
    return lines


def explain_plan(plan: dict) -> str:
    """Human-readable explanation of a plan dict."""
    if plan.get("decision", {}).get("kind") == "fleet":
        from planner.plan_fleet import explain_fleet

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
