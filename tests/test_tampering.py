"""Tampering with plan files: `planner verify` recomputes every claim, so an edited plan is rejected with the
reason that names the edit, even when the tamperer recomputes the fingerprint (`ir.plan.fingerprint`).

Each kind edits one plan (training, decode, serving with and without a rate target, disaggregated serving, a
fleet), recomputes the fingerprint and asserts the specific problem verify reports. Kinds verify cannot
catch are listed with reason None and count against the rejection rate (printed; it must stay >= 95%).
"""

from __future__ import annotations

import copy
import re

import pytest

import planner
from ir.plan import fingerprint
from planner.verify import verify_plan

PLANS = {  # name: (model, cluster, workload, options); planned once per module
    "train": ("tiny-llama", "4xcpu", "train", {"batch": 8, "seq_len": 64, "pp": 2}),
    "decode": ("tiny-llama", "2xcpu", "decode", {"batch": 4, "input_len": 64}),
    "serve": ("llama-3-8b", "2xH100-SXM", "chat", {}),
    "serve_rate": ("llama-3-8b", "8xH100-SXM", "chat", {"rate": 20.0, "slo": {"ttft": 1.0, "tpot": 0.1}}),
    "disagg": ("llama-3-8b", "4xH100-SXM", "summarize", {"slo": {"ttft": 1.0, "tpot": 0.02}}),
    "fleet": ("llama-3-8b", "L4,4xH100-SXM", "chat", {"rate": 5.0}),
}


@pytest.fixture(scope="module")
def plans() -> dict:
    made = {}
    for name, (model, cluster, workload, options) in PLANS.items():
        made[name] = planner.plan(model, cluster, workload, **options).to_dict()
    assert made["disagg"]["decision"]["serving"]["policy"] == "disaggregated"
    assert len(made["fleet"]["decision"]["instances"]) >= 2
    return made


def _node(plan: dict, path: str):
    """(container, key) of a dotted path with [i] indices: 'decision.stages[0].tp'."""
    keys = [int(k) if k.isdigit() else k for k in re.findall(r"[^.\[\]]+", path)]
    node = plan
    for key in keys[:-1]:
        node = node[key]
    return node, keys[-1]


def put(path: str, value):
    def apply(plan):
        node, key = _node(plan, path)
        node[key] = value(node[key]) if callable(value) else value
    return apply


def scale(path: str, factor: float):
    return put(path, lambda v: type(v)(v * factor))


def both(*edits):
    def apply(plan):
        for e in edits:
            e(plan)
    return apply


def _first_used_bucket(plan: dict) -> tuple[str, int]:
    prof, row = plan["profile"], plan["decision"]["instances"][0]
    names = [b["name"] for b in prof["buckets"]]
    used = [n for n in names if row["slices"].get(n)]
    return row["config"], names.index(used[0])


def _inflate_capacity(plan: dict) -> None:
    config, k = _first_used_bucket(plan)
    plan["profile"]["capacity_rps"][config][k] *= 20


def _drop_slice(plan: dict) -> None:
    row = plan["decision"]["instances"][0]
    name = next(n for n in sorted(row["slices"]) if row["slices"][n] > 0)
    row["slices"][name] -= 1


def _consistent_unit(budget: int):
    """Every field of the serving section says chunked prefill at `budget`, a budget the search never offers."""
    def apply(plan):
        s = plan["decision"]["serving"]
        old = s["chunk_tokens"]
        s["chunk_tokens"] = budget
        for key in ("description", "unit"):
            s[key] = s[key].replace(f"budget={old}", f"budget={budget}")
    return apply


T, D, S, R, G, F = "train", "decode", "serve", "serve_rate", "disagg", "fleet"
KINDS = [  # (plan, what is tampered, edit, the reason verify must give; None: verify cannot tell)
    (T, "step time halved", scale("predicted.step_time_s", 0.5), "predicted.step_time_s"),
    (T, "throughput doubled", scale("predicted.tokens_per_s", 2), "predicted.tokens_per_s"),
    (T, "MFU raised", scale("predicted.mfu", 1.5), "predicted.mfu"),
    (T, "TFLOP/s per device", scale("predicted.tflops_per_device", 2), "predicted.tflops_per_device"),
    (T, "memory per device halved", scale("predicted.memory_per_device_bytes", 0.5), "predicted.memory_per_device_bytes"),
    (T, "stage memory", scale("predicted.stage_memory_bytes[0]", 0.5), "predicted.stage_memory_bytes[0]"),
    (T, "stage capacity", scale("predicted.stage_capacity_bytes[1]", 10), "predicted.stage_capacity_bytes[1]"),
    (T, "stage time", scale("predicted.stage_times_s[0]", 0.5), "predicted.stage_times_s[0]"),
    (T, "breakdown", put("predicted.breakdown.communication", 0.0), "predicted.breakdown.communication"),
    (T, "bubble", put("predicted.bubble_fraction", 0.0), "predicted.bubble_fraction"),
    (T, "uncertainty band", put("predicted.uncertainty.relative_error_80", 0.01), "predicted.uncertainty.relative_error_80"),
    (T, "price", put("predicted.dollars_per_hour", 1.0), "predicted.dollars_per_hour"),
    (T, "memory breakdown", put("predicted.memory_breakdown_bytes.activations", 0),
     "predicted.memory_breakdown_bytes.activations"),
    (T, "fits", put("predicted.fits", False), "predicted.fits"),
    (T, "device count", put("predicted.devices", 64), "predicted.devices"),
    (T, "model name", put("model_name", "llama-3.1-405b"), "model_name 'llama-3.1-405b' is not"),
    (T, "cluster description", put("cluster_description", "1 x dgx-h100 (8x H100-SXM), 8 devices"), "cluster_description"),
    (T, "planner version with a command", put("inputs.planner_version", "0.1.0\ntouch PWNED\n"), "inputs.planner_version"),
    (T, "model named as code", put("inputs.model", "sys:exit"),
     "inputs.model_source.ref 'tiny-llama' is not inputs.model 'sys:exit'"),
    (T, "preset values", put("inputs.model_source.values.num_hidden_layers", 8), "inputs.model_source.values.num_hidden_layers"),
    (T, "model summary", put("inputs.model_source.summary.hidden_size", 4096), "inputs.model_source.summary.hidden_size"),
    (T, "model hash", put("inputs.model_source.sha256", "0" * 64), "inputs.model_source.sha256"),
    (T, "ZeRO stage", put("decision.zero_stage", 3), "predicted.memory_per_device_bytes"),
    (T, "recomputation", put("decision.recompute", "full"), "predicted.step_time_s"),
    (T, "microbatches", scale("decision.microbatches", 2), "!= batch 8"),
    (T, "layers moved", both(put("decision.stages[1].layers[0]", 1), put("decision.stages[1].chunks[0][0]", 1)),
     "stage 1 chunk 0 starts at layer 1, expected 2"),
    (T, "rank reused", put("decision.stages[1].ranks[0][0]", 0), "rank 0 is used by stages 0 and 1"),
    (T, "device type", put("decision.stages[0].device", "H100-SXM"), "stage 0 says H100-SXM but rank"),
    (T, "batch", put("inputs.workload.batch", 16), "!= batch 16"),
    (T, "sequence length", put("inputs.workload.seq_len", 128), "predicted.step_time_s"),
    (T, "pinned tp", put("inputs.fixed.tp", 2), "inputs.fixed.tp=2"),
    (T, "dtype", put("inputs.dtype", "fp32"), "predicted.step_time_s"),
    (T, "bound above objective", both(put("solver.objective_us", 1000), put("solver.bound_us", 2000)),
     "solver.bound_us 2000 is above solver.objective_us 1000"),
    (T, "gap", both(put("solver.bound_us", 1), put("solver.gap", 0.0)), "solver.gap"),
    (T, "negative count", put("solver.candidates_pruned", -1), "solver.candidates_pruned -1 is negative"),
    (T, "status optimal with a gap", both(put("solver.status", "optimal"), put("solver.objective_us", 100),
                                           put("solver.bound_us", 50), put("solver.gap", 0.1)), "solver.gap 0.1"),
    (T, "interrupted search called optimal", put("solver.interrupted", True), "solver.interrupted True contradicts"),
    (T, "runner-up faster", scale("alternatives[0].step_time_s", 0.5), "alternatives[0]"),
    (T, "runner-up margin", put("alternatives[1].slower_by", 0.5), "alternatives[1].slower_by"),
    (T, "baseline speedup", scale("baselines.uniform_split_any_tp.speedup_of_plan", 2),
     "baselines.uniform_split_any_tp.speedup_of_plan"),
    (T, "memory map region", scale("memory_map.devices[0].regions[0].bytes", 0.5), "memory_map.devices[0].regions[0].bytes"),
    (T, "memory map overlap", put("memory_map.arenas[0].buffers[1].offset", 0), "arena stage0/hbm"),
    (T, "memory map total", scale("memory_map.devices[1].total_bytes", 0.5), "stage 1 (cpu): regions end at"),
    (T, "memory map dropped", lambda p: p.pop("memory_map"), "memory_map is missing"),
    (T, "batch 10^12, microbatches to match", both(put("inputs.workload.batch", 10**12),
                                                   put("decision.microbatches", 10**12 // 4)),
     "inputs.workload.batch 1,000,000,000,000 is outside"),
    (T, "binding constraint with a newline", put("binding_constraints[0]", "fine\ntouch PWNED"),
     "binding_constraints[0] holds a control character"),
    (T, "binding constraint reworded", put("binding_constraints[0]", "memory: nothing binds"), None),
    (D, "TPOT halved", scale("predicted.tpot_s", 0.5), "predicted.tpot_s"),
    (D, "max batch", scale("predicted.max_batch", 3), "predicted.max_batch"),
    (D, "replicas", put("decision.dp", 1), "data-parallel replicas, dp is 1"),
    (D, "decision batch", put("decision.batch", 8), "decision.batch 8 disagrees"),
    (D, "layer name", put("decision.stages[0].first_layer", "model.layers.0"), "decision.stages[0].first_layer"),
    (D, "layouts counted", put("solver.candidates_evaluated", 99), "solver.candidates_evaluated 99"),
    (D, "runner-up", scale("alternatives[0].tpot_s", 0.5), "alternatives[0].tpot_s"),
    (D, "parallel degrees", put("predicted.parallel.tp", 2), "predicted.parallel.tp"),
    (D, "KV cache sizing", scale("memory_map.kv_cache.max_sequences", 2), "memory_map.kv_cache.max_sequences"),
    (D, "output length 0", put("inputs.workload.output_len", 0), "inputs.workload.output_len 0 disagrees"),
    (S, "max batch 347 -> 1000", put("predicted.max_batch", 1000), "predicted.max_batch 1000"),
    (S, "goodput doubled", scale("predicted.goodput_rps", 2), "predicted.goodput_rps"),
    (S, "goodput per GPU", scale("predicted.goodput_per_gpu", 2), "predicted.goodput_per_gpu"),
    (S, "GPUs used", put("predicted.gpus_used", 1), "predicted.gpus_used 1"),
    (S, "attainment", put("predicted.slo_attainment", 0.99), "predicted.slo_attainment"),
    (S, "p90 TTFT", scale("predicted.ttft_p90_s", 0.5), "predicted.ttft_p90_s"),
    (S, "memory", scale("predicted.memory_per_device_bytes", 0.5), "predicted.memory_per_device_bytes"),
    (S, "chunk tokens with a command", put("decision.serving.chunk_tokens", "2048 $(touch PWNED)"),
     "expected an integer, got '2048 $(touch PWNED)'"),
    (S, "chunk budget", put("decision.serving.chunk_tokens", 4096), "decision.serving.chunk_tokens 4096 disagrees"),
    (S, "unit the search never offers", _consistent_unit(4096), "is not a deployment the planner considers"),
    (S, "simulated rate", scale("decision.serving.rate_rps", 2), "decision.serving.requests"),
    (S, "simulated requests", put("decision.serving.requests", 100), "decision.serving.requests 100"),
    (S, "seed", put("decision.serving.seed", 1), "decision.serving.seed 1"),
    (S, "a billion simulated requests", put("decision.serving.requests", 10**9),
     "decision.serving.requests 1,000,000,000 is outside"),
    (S, "SLO in the section", put("decision.serving.slo.ttft", 100.0), "decision.serving.slo.ttft 100.0"),
    (S, "SLO in the inputs", put("inputs.slo", {"ttft": 0.01}), "decision.serving.slo.ttft"),
    (S, "policy", put("decision.serving.policy", "prefill_first"), "decision.serving.policy 'prefill_first'"),
    (S, "units", put("decision.serving.units", 1), "decision.serving.description '2x tp1pp1"),
    (S, "context", put("decision.serving.context_tokens", 100000), "decision.serving.context_tokens 100000"),
    (S, "engine batch limit added", put("decision.serving.max_num_batched_tokens", 99999),
     "decision.serving.max_num_batched_tokens is recorded"),
    (S, "candidates counted", put("solver.candidates", 1), "solver.candidates 1"),
    (S, "policies considered", put("solver.policies_considered", ["layered"]), "solver.policies_considered"),
    (S, "engine profile", put("inputs.engine_profile", "no-such-engine"), "cannot be re-planned"),
    (S, "tensor parallelism", put("decision.tp", 2), "decision.tp 2 disagrees with the deployment's 1"),
    (R, "goodput tripled, per-GPU kept consistent",
     both(scale("predicted.goodput_rps", 3), scale("predicted.goodput_per_gpu", 3)), "predicted.goodput_rps"),
    (R, "goodput below the target", both(scale("predicted.goodput_rps", 0.5), scale("predicted.goodput_per_gpu", 0.5)),
     "is below the target rate"),
    (R, "target rate", put("inputs.workload.rate", 200.0), "is below the target rate 200.0"),
    (G, "prefill instances", put("decision.serving.disaggregated.prefill_instances", 4),
     "decision.serving.disaggregated.prefill_instances 4"),
    (G, "KV transfer link", put("decision.serving.disaggregated.kv_transfer_link", "ib-ndr-400g"),
     "decision.serving.disaggregated.kv_transfer_link"),
    (G, "prefill ranks", put("decision.serving.disaggregated.prefill_ranks", [[0], [0]]),
     "decision.serving.disaggregated.prefill_ranks[1][0]"),
    (G, "TTFT halved", scale("predicted.ttft_s", 0.5), "predicted.ttft_s"),
    (G, "decode rank moved onto a prefill rank", put("decision.stages[0].ranks[0][0]", 0),
     "decision.stages[0].ranks[0][0] 0 disagrees"),
    (F, "fleet cost halved", scale("predicted.dollars_per_hour", 0.5), "predicted.dollars_per_hour"),
    (F, "fewer instances", put("decision.instances[0].instances", 0), "instance(s) carry load for"),
    (F, "capacity inflated", _inflate_capacity, "offline throughput bound"),
    (F, "price lowered", put("profile.price_milli_per_hour.L4 tp1", 1), "profile.price_milli_per_hour['L4 tp1'] 1"),
    (F, "objective lowered with the cost", both(scale("solver.objective_milli_per_hour", 0.5),
                                                 scale("predicted.dollars_per_hour", 0.5)), "differs from the solver's"),
    (F, "bound above objective", put("solver.bound_milli_per_hour", 10**9), "solver.bound_milli_per_hour"),
    (F, "GPU limit", put("profile.gpu_limits.L4", 64), "profile.gpu_limits"),
    (F, "bucket share", put("profile.buckets[0].share", 0.9), "profile bucket shares"),
    (F, "saving", put("predicted.saving_vs_single_type", 0.9), "predicted.saving_vs_single_type"),
    (F, "single-type price", put("predicted.single_type_dollars_per_hour.L4", 0.01),
     "predicted.single_type_dollars_per_hour.L4"),
    (F, "policy", put("decision.policy", "chunked(budget=8192)"), "decision.policy"),
    (F, "SLO", put("decision.slo.ttft", 100.0), "decision.slo.ttft"),
    (F, "description", put("cluster_description", "fleet of H100-SXM"), "cluster_description"),
    (F, "a slice dropped", _drop_slice, "slices served"),
    (F, "bucket rate", scale("profile.buckets[0].rate_rps", 0.5), "profile.buckets[0].rate_rps"),
    (F, "GPUs of a row", put("decision.instances[0].gpus", 99), "decision.instances[0].gpus 99"),
    (F, "engine KV pool of a row", scale("decision.instances[0].engine.kv_cache_bytes", 2),
     "decision.instances[0].engine.kv_cache_bytes"),
    (F, "engines' context limit", put("decision.longest_request_tokens", 999999), "decision.longest_request_tokens 999999"),
    (S, "engine sequence limit", put("decision.serving.engines.instance.max_num_seqs", 4096),
     "decision.serving.engines.instance.max_num_seqs 4096"),
    (S, "engine KV pool", scale("decision.serving.engines.instance.kv_cache_bytes", 2),
     "decision.serving.engines.instance.kv_cache_bytes"),
    (S, "engines' context limit", put("decision.serving.longest_request_tokens", 1024),
     "decision.serving.longest_request_tokens 1024"),
    (S, "prefix caching off", put("decision.serving.prefix_caching", False), "decision.serving.prefix_caching false disagrees"),
    (G, "decode engine block size", put("decision.serving.engines.decode.block_size", 1),
     "decision.serving.engines.decode.block_size 1"),
    (D, "batch engine sequence limit", put("decision.engines.instance.max_num_seqs", 999),
     "decision.engines.instance.max_num_seqs 999"),
]


def _tampered(plan: dict, edit) -> dict:
    bad = copy.deepcopy(plan)
    edit(bad)
    bad["fingerprint"] = fingerprint(bad["inputs"])  # the tamperer covers their tracks
    return bad


def test_untampered_plans_verify(plans):
    for name, plan in plans.items():
        assert verify_plan(plan) == [], name


def test_verify_rejects_tampering_with_the_reason(plans, capsys):
    rejected, missed, wrong = [], [], []
    for plan_name, what, edit, reason in KINDS:
        problems = verify_plan(_tampered(plans[plan_name], edit))
        if not problems:
            missed.append(f"{plan_name}: {what}")
            continue
        rejected.append(what)
        if reason is None or not any(reason in p for p in problems):
            wrong.append(f"{plan_name}: {what}: expected {reason!r}, got {problems[:4]}")
    rate = len(rejected) / len(KINDS)
    with capsys.disabled():
        print(f"\ntampering: verify rejected {len(rejected)} of {len(KINDS)} kinds ({rate:.1%}); "
              f"not caught: {missed}")
    assert len(KINDS) >= 50 and len({(p, w) for p, w, _, _ in KINDS}) == len(KINDS)
    assert not wrong, "\n".join(wrong)
    assert missed == [f"{p}: {w}" for p, w, _, r in KINDS if r is None]
    assert rate >= 0.95


def test_fingerprint_alone_catches_untouched_edits(plans):
    bad = copy.deepcopy(plans["train"])
    bad["inputs"]["workload"]["batch"] = 16
    assert "fingerprint does not match the plan's inputs (edited after planning?)" in verify_plan(bad)
