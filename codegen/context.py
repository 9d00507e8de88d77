"""Turn a plan document into the plain, JSON-able context that the codegen templates render.

All decisions were made by the planner; this module only checks that the plan is one the generated
program can run (format version, contiguous stages, uniform tp, a model it can build) and reshapes
it: the runtime `PLAN` literal of run_plan.py, torchrun arguments, and serving-engine settings
(`codegen.serving`).
"""

from __future__ import annotations

import hashlib
import json

from codegen.serving import serving_context
from ir.errors import UserError
from ir.plan import PLAN_FORMAT

OWN_DTYPE = {"fp8": "bf16"}  # the own runtime has no float8 GEMMs: it computes fp8 plans in bf16 (the README says so)


def plan_hash(plan: dict) -> str:
    """Short sha256 of the canonical plan JSON (what the headers of emitted files name).

    >>> plan_hash({"a": 1})
    'f9d86028c6e0d64e'
    """
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]


def model_spec(source: dict) -> dict:
    """How run_plan.py builds the model, from the plan's record of it (`inputs.model_source`, JSON form): a
    preset's or config.json's values, or a factory reference (which only the generated program, run by the
    user, imports; codegen never does).

    >>> from planner.model_source import model_record
    >>> model_spec(model_record("tiny-llama", {}))["architecture"]
    'LlamaForCausalLM'
    """
    if source["kind"] == "module":
        return {"kind": "factory", "ref": source["ref"], "hub_id": None}
    if not source.get("architecture"):
        raise UserError(f"the plan's model config {source['ref']!r} has no 'architectures' entry; add the "
                        f"transformers model class name to its config.json and re-run `planner plan`")
    return {"kind": "hf_config", "config_class": source.get("config_class"), "architecture": source["architecture"],
            "values": dict(source["values"]), "hub_id": source.get("hub_id")}


def _config_numbers(spec: dict, summary: dict) -> dict:
    """hidden size, heads, kv heads, blocks and vocabulary of the model (a factory's from the plan's summary)."""
    if spec["kind"] == "factory":
        values = {"hidden_size": summary.get("hidden_size"), "num_attention_heads": summary.get("num_heads"),
                  "num_key_value_heads": summary.get("num_kv_heads"), "num_hidden_layers": summary.get("num_layers"),
                  "vocab_size": summary.get("vocab_size")}
    else:
        values = spec["values"]
    heads = values.get("num_attention_heads")
    numbers = {"hidden_size": values.get("hidden_size"), "heads": heads,
               "kv_heads": values.get("num_key_value_heads") or heads,
               "num_blocks": values.get("num_hidden_layers"), "vocab_size": values.get("vocab_size")}
    missing = sorted(k for k, v in numbers.items() if not isinstance(v, int))
    if missing:
        raise UserError(f"the generated program needs a decoder LM with {', '.join(missing)} in its config")
    return numbers


def check_format(plan: dict) -> None:
    """UserError unless `plan` is a plan document of this planner's format."""
    found = plan.get("format") if isinstance(plan, dict) else type(plan).__name__
    if found != PLAN_FORMAT:
        raise UserError(f"plan format {found!r} is not {PLAN_FORMAT!r} (written by another planner version); "
                        f"re-run `planner plan` to regenerate it")
    for key in ("inputs", "decision"):
        if not isinstance(plan.get(key), dict):
            raise UserError(f"plan has no '{key}' section; re-run `planner plan`")


def _stages(decision: dict, num_blocks: int) -> list[dict]:
    stages = sorted(decision.get("stages") or [], key=lambda s: s["stage"])
    if not stages:
        raise UserError("plan has no stages; re-run `planner plan`")
    v = int(decision.get("virtual_stages", 1))
    pieces = {}  # model-order index -> (name, range); interleaved chunk c of stage s is c * pp + s
    for s, st in enumerate(stages):
        ranges = st.get("chunks") if v > 1 else [st["layers"]]
        if not ranges or len(ranges) != v:
            raise UserError(f"plan stage {st['stage']} has {len(ranges or [])} chunks, virtual_stages is {v}; "
                            f"re-run `planner plan`")
        for c, rng in enumerate(ranges):
            pieces[c * len(stages) + s] = (f"stage {st['stage']}" + (f" chunk {c}" if v > 1 else ""), rng)
    expected = 0
    for name, (a, b) in (pieces[k] for k in sorted(pieces)):
        if a != expected or b <= a:
            raise UserError(f"plan {name} starts at layer {a}, expected {expected}; re-run `planner plan`")
        expected = b
    if expected != num_blocks + 2:
        raise UserError(f"plan stages end at layer {expected}, the model has {num_blocks + 2} layers; re-run `planner plan`")
    dp = len(stages[0]["ranks"])
    for st in stages:
        if len(st["ranks"]) != dp or any(len(row) != st["tp"] for row in st["ranks"]):
            raise UserError(f"plan stage {st['stage']} ranks do not form dp={dp} rows of its tp={st['tp']}; "
                            f"re-run `planner plan`")
    return [{"stage": st["stage"], "layers": list(st["layers"]), "ranks": st["ranks"], "device": st["device"],
             "tp": st["tp"],
             "first_layer": st["first_layer"], "last_layer": st["last_layer"],
             **({"chunks": [list(c) for c in st["chunks"]]} if v > 1 else {})} for st in stages]


def launch_geometry(cluster_spec: str, world: int) -> dict:
    """torchrun geometry: the plan's ranks fill node 0 first, then node 1, ...; nodes may differ in size
    (mixed GPU types), torchrun then takes each node's own --nproc-per-node and numbers global ranks by
    node rank (static rendezvous), as the plan placed them.

    >>> g = launch_geometry("2xcpu+1xcpu", 3)
    >>> g["nnodes"], g["nproc_list"], g["uneven"]
    (2, [2, 1], True)
    """
    from cost_models.cluster import parse_cluster

    cluster = parse_cluster(cluster_spec)
    nproc_list, left = [], world
    for node in cluster.nodes:
        if left <= 0:
            break
        nproc_list.append(min(node.devices_per_node, left))
        left -= nproc_list[-1]
    accel = cluster.nodes[0].device.kind != "cpu"
    return {"nnodes": len(nproc_list), "nproc_per_node": nproc_list[0], "nproc_list": nproc_list,
            "uneven": len(set(nproc_list)) > 1, "multi_node": len(nproc_list) > 1, "accelerator": accel,
            "cluster": cluster_spec, "description": cluster.describe()}


def build_context(plan: dict) -> dict:
    """The whole render context of a plan: header, runtime PLAN literal, launch and serving settings.

    >>> import planner
    >>> p = planner.plan("tiny-llama", "2xcpu", "train", batch=4, seq_len=16, tp=2).to_dict()
    >>> ctx = build_context(p)
    >>> ctx["runtime"]["tp"], ctx["runtime"]["world_size"], ctx["launch"]["nproc_per_node"]
    (2, 2, 2)
    """
    check_format(plan)
    inputs, decision = plan["inputs"], plan["decision"]
    spec = model_spec(inputs["model_source"])
    numbers = _config_numbers(spec, inputs["model_source"]["summary"])
    stages = _stages(decision, numbers["num_blocks"])
    train = decision.get("kind") == "train"
    workload = inputs.get("workload", {})
    tps = [st["tp"] for st in stages]
    tp, dp, pp = max(tps), len(stages[0]["ranks"]), len(stages)
    hetero = len(set(tps)) > 1
    runtime = {
        "fingerprint": plan.get("fingerprint", ""), "model_name": plan.get("model_name", inputs["model"]),
        "model": spec, **numbers, "stages": stages, "tp": tp, "dp": dp, "pp": pp, "hetero_tp": hetero,
        "layout": f"pp={pp} x dp={dp} x tp={','.join(map(str, tps)) if hetero else tp}",
        "ep": int(decision.get("ep", 1)), "world_size": dp * sum(tps),
        "microbatches": int(decision.get("microbatches", 1)) if train else 1,
        "microbatch_size": decision.get("microbatch_size"),
        "schedule": decision.get("schedule", "1f1b"), "zero_stage": int(decision.get("zero_stage", 0)),
        "virtual_stages": int(decision.get("virtual_stages", 1)),
        "recompute": decision.get("recompute", "none"), "sequence_parallel": bool(decision.get("sequence_parallel")),
        "dtype": OWN_DTYPE.get(inputs.get("dtype", "bf16"), inputs.get("dtype", "bf16")),
        "default_mode": "train" if train else "infer",
        "workload": {"batch": int(workload.get("batch") or decision.get("batch") or 1),
                     "seq_len": int(workload.get("seq_len") or decision.get("input_len") or 128),
                     "output_len": workload.get("output_len")},
    }
    for t in sorted(set(tps)):
        if numbers["heads"] % t or numbers["kv_heads"] % t:
            raise UserError(f"tp={t} does not divide the model's {numbers['heads']} attention heads and "
                            f"{numbers['kv_heads']} key/value heads (grouped-query attention); re-plan with --tp "
                            f"dividing {numbers['kv_heads']}")
    if hetero and (runtime["ep"] > 1 or runtime["virtual_stages"] > 1):
        raise UserError(f"stages of different tp {tps} run their own pipeline schedule, which has no expert "
                        f"parallelism or virtual stages; re-plan with --ep 1 and --schedule 1f1b")
    launch = launch_geometry(inputs.get("cluster", "1xcpu"), runtime["world_size"])
    serving = serving_context(plan, spec, runtime, launch)  # engine refusals first: they name the engine
    program_error = None
    try:
        _check_ep(runtime, spec)
    except UserError as exc:  # a serving plan still has its engine scripts; a training plan has nothing to run
        if serving is None:
            raise
        program_error = str(exc)
    if int(decision.get("cp", 1)) > 1:
        raise UserError(f"the plan uses context parallelism cp={decision['cp']}, which the runtime package does not "
                        f"implement; train_torchtitan.sh runs it where torchtitan has the model, else re-plan without cp")
    return {
        "header": plan_header(plan),
        "runtime": runtime, "launch": launch,
        "serving": serving, "predicted": _predicted(plan), "train": train, "program_error": program_error,
    }


def plan_header(plan: dict) -> dict:
    """What the first lines of every emitted file name: planner version, fingerprint, plan hash, model, cluster."""
    inputs = plan["inputs"]
    return {"planner_version": inputs.get("planner_version", "unknown"), "fingerprint": plan.get("fingerprint", ""),
            "plan_hash": plan_hash(plan), "model": inputs["model"], "cluster": inputs.get("cluster")}


def _check_ep(runtime: dict, spec: dict) -> None:
    """Expert parallelism runs for Mixtral-style fused experts with ep | dp (codegen/runtime_ep.py);
    with tp > 1 each tp rank keeps a 1/tp slice of its experts (expert tensor parallelism)."""
    ep, dp = runtime["ep"], runtime["dp"]
    if ep == 1:
        return
    experts = (spec.get("values") or {}).get("num_local_experts")
    if not isinstance(experts, int) or experts % ep:
        raise UserError(f"the plan uses expert parallelism ep={ep}, but the generated program shards only "
                        f"Mixtral-style experts (num_local_experts divisible by ep); re-plan with --ep 1")
    if dp % ep:
        raise UserError(f"ep={ep} must divide dp={dp}: expert-parallel ranks are data-parallel replicas; re-plan")


def _predicted(plan: dict) -> list[list[str]]:
    """(name, value) rows of the plan's headline predictions, formatted for the README."""
    pred = plan.get("predicted", {})
    keys = ("step_time_s", "tokens_per_s", "mfu", "latency_s", "ttft_s", "tpot_s", "output_tokens_per_s",
            "memory_per_device_bytes", "bubble_fraction", "max_batch")
    return [[k, f"{pred[k]:.6g}" if isinstance(pred[k], float) else str(pred[k])]
            for k in keys if pred.get(k) is not None]
