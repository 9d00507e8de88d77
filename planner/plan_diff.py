"""`planner diff`: what changed between two plans, and what it does to the predictions."""

from __future__ import annotations

_METRICS = ("step_time_s", "tokens_per_s", "mfu", "memory_per_device_bytes", "latency_s", "ttft_s", "tpot_s",
            "output_tokens_per_s", "max_batch", "dollars_per_million_tokens", "energy_per_token_j")
_DECISION = ("kind", "phase", "dp", "tp", "pp", "ep", "microbatch_size", "microbatches", "schedule", "recompute",
             "zero_stage", "sequence_parallel", "batch", "input_len", "output_len")


def _flatten(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for key in sorted(value):
            _flatten(f"{prefix}.{key}" if prefix else key, value[key], out)
    else:
        out[prefix] = value


def diff_plans(a: dict, b: dict) -> dict:
    """Changed inputs and decisions, per-stage layer moves, and metric deltas (b relative to a).

    >>> a = {"inputs": {"cluster": "8xH100-SXM"}, "decision": {"tp": 8, "stages": []}, "predicted": {"tpot_s": 0.02}}
    >>> b = {"inputs": {"cluster": "8xH100-SXM"}, "decision": {"tp": 4, "stages": []}, "predicted": {"tpot_s": 0.03}}
    >>> d = diff_plans(a, b)
    >>> d["decision"]["tp"], round(d["predicted"]["tpot_s"]["ratio"], 2)
    ((8, 4), 1.5)
    """
    ia, ib = {}, {}
    _flatten("", a.get("inputs", {}), ia)
    _flatten("", b.get("inputs", {}), ib)
    inputs = {k: (ia.get(k), ib.get(k)) for k in sorted(set(ia) | set(ib)) if ia.get(k) != ib.get(k)}
    da, db = a.get("decision", {}), b.get("decision", {})
    decision = {k: (da.get(k), db.get(k)) for k in _DECISION if da.get(k) != db.get(k)}
    stages_a = [(s["layers"][0], s["layers"][1], s["device"], s["tp"]) for s in da.get("stages", [])]
    stages_b = [(s["layers"][0], s["layers"][1], s["device"], s["tp"]) for s in db.get("stages", [])]
    predicted = {}
    for key in _METRICS:
        x, y = a.get("predicted", {}).get(key), b.get("predicted", {}).get(key)
        if x == y:
            continue
        entry = {"a": x, "b": y}
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and x:
            entry["ratio"] = y / x
        predicted[key] = entry
    return {"inputs": inputs, "decision": decision,
            "stages": {"a": stages_a, "b": stages_b} if stages_a != stages_b else {}, "predicted": predicted}


def format_diff(d: dict) -> str:
    lines = []
    for title, section in (("inputs", d["inputs"]), ("decision", d["decision"])):
        for key, (x, y) in section.items():
            lines.append(f"{title} {key}: {x} -> {y}")
    if d["stages"]:
        lines.append("stages (first layer, end, device, tp):")
        lines.append(f"  a: {d['stages']['a']}")
        lines.append(f"  b: {d['stages']['b']}")
    for key, e in d["predicted"].items():
        ratio = f" ({e['ratio']:.3f}x)" if "ratio" in e else ""
        lines.append(f"predicted {key}: {e['a']} -> {e['b']}{ratio}")
    return "\n".join(lines or ["the plans are the same"]) + "\n"
