"""Engine arguments of each serving instance, per engine, or the one line saying why an engine cannot run the plan.

vLLM (0.32, `vllm/engine/arg_utils.py`), SGLang (0.5.23, `sglang/srt/server_args.py`) and their routers
(vllm-router 0.1.17, sglang-router 0.3.2). What the plan simulated, as each engine spells it:
- context: --max-model-len / --context-length = the longest request of the planned workload;
- per instance: --max-num-seqs / --max-running-requests, the token budget (--max-num-batched-tokens;
  SGLang --chunked-prefill-size), the KV pool (--kv-cache-memory-bytes per GPU; SGLang --max-total-tokens
  and --mem-fraction-static = (weights + KV) / GPU memory), the KV block (--block-size / --page-size) and
  vLLM's 1% admission watermark (--watermark 0.01, vLLM v1's default is 0);
- chunked prefill: vLLM v1 --enable-chunked-prefill (decodes and chunks share the budget); SGLang
  --enable-mixed-chunk (decodes ride in the prefill chunk's batch); FCFS in both;
- prefill-first (decodes stall while prompts run): SGLang's scheduler with --chunked-prefill-size -1; vLLM v1
  has no such option (--no-enable-chunked-prefill still batches decodes beside whole prompts);
- prefix caching on (both engines' default; spelled out for vLLM);
- fp8 weights: --quantization fp8 (activations bf16); an fp8 KV cache: --kv-cache-dtype fp8 / fp8_e4m3;
- expert parallelism inside an instance (ep = the instance's tp): vLLM --enable-expert-parallel, SGLang
  --ep-size; a wide expert-parallel instance (D attention groups of T ranks, experts over all T x D):
  vLLM --tensor-parallel-size T --data-parallel-size D --enable-expert-parallel (limits per data-parallel
  rank: the instance's over D), SGLang --tp-size T*D --dp-size D --enable-dp-attention --ep-size T*D (limits
  the instance's totals, the KV pool a group's); other ep degrees (experts across replicas) have no option in
  either engine;
- disaggregation: vLLM NixlConnector (--kv-transfer-config, kv_role kv_both) behind vllm-router
  --vllm-pd-disaggregation; SGLang --disaggregation-mode prefill|decode over nixl behind sglang-router
  --pd-disaggregation (prefill URL followed by its bootstrap port);
- layered prefill: no engine runs it.
"""

from __future__ import annotations

import json
import math
import re

from ir.errors import UserError

VLLM_VERSION, SGLANG_VERSION = "0.32", "0.5.23"
INSTRUCT_WORKLOADS = ("chat", "summarize")  # instruction-following traffic: serve the instruct checkpoint
_INSTRUCT = {  # base -> instruct checkpoints of the presets' families (Hugging Face ids)
    "meta-llama/Meta-Llama-3-8B": "meta-llama/Meta-Llama-3-8B-Instruct",
    "meta-llama/Meta-Llama-3-70B": "meta-llama/Meta-Llama-3-70B-Instruct",
    "mistralai/Mixtral-8x7B-v0.1": "mistralai/Mixtral-8x7B-Instruct-v0.1",
    "mistralai/Mixtral-8x22B-v0.1": "mistralai/Mixtral-8x22B-Instruct-v0.1",
    "mistralai/Mistral-7B-v0.1": "mistralai/Mistral-7B-Instruct-v0.1",
    "mistralai/Mistral-7B-v0.3": "mistralai/Mistral-7B-Instruct-v0.3",
}
_INSTRUCT_RULES = (  # (pattern, replacement) for families named by rule
    (r"^(meta-llama/Llama-2-\d+b)-hf$", r"\1-chat-hf"),
    (r"^(meta-llama/Llama-3\.[1-3]-\d+B)$", r"\1-Instruct"),
    (r"^(google/gemma-[\w.-]+)-pt$", r"\1-it"),
    (r"^(.+)-Base$", r"\1"),
)
VLLM_KV_DTYPE, SGLANG_KV_DTYPE = {"fp8": "fp8"}, {"fp8": "fp8_e4m3"}
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "fp8": "bfloat16"}  # fp8: weights only


def instruct_checkpoint(hub: str) -> str:
    """The instruct (chat) checkpoint of a base model's Hugging Face id; the id itself when none is known.

    >>> instruct_checkpoint("meta-llama/Meta-Llama-3-8B"), instruct_checkpoint("meta-llama/Llama-2-7b-hf")
    ('meta-llama/Meta-Llama-3-8B-Instruct', 'meta-llama/Llama-2-7b-chat-hf')
    >>> instruct_checkpoint("facebook/opt-13b")
    'facebook/opt-13b'
    """
    if hub in _INSTRUCT:
        return _INSTRUCT[hub]
    for pattern, replacement in _INSTRUCT_RULES:
        if re.match(pattern, hub):
            return re.sub(pattern, replacement, hub)
    return hub


def _dtype_args(common: dict, engine: str) -> list[str]:
    dtype = common["dtype"]
    if dtype not in DTYPES:
        raise UserError(f"{engine} cannot load weights as {dtype!r} (no option quantizes a checkpoint to it at load); "
                        f"re-plan with --dtype bf16, fp16 or fp8")
    args = ["--dtype", DTYPES[dtype]] + (["--quantization", "fp8"] if dtype == "fp8" else [])
    kv = common.get("kv_dtype")
    if kv and kv not in ("bf16", "fp16", "auto"):
        spelled = (VLLM_KV_DTYPE if engine == "vLLM" else SGLANG_KV_DTYPE).get(kv)
        if spelled is None:
            raise UserError(f"{engine} has no --kv-cache-dtype for a {kv!r} KV cache; re-plan with an fp8 or bf16 KV cache")
        args += ["--kv-cache-dtype", spelled]
    return args


def _refusals(common: dict, instances: list[dict]) -> dict[str, str | None]:
    """Per engine, why it cannot run the plan as simulated (one line naming the option), or None."""
    policy, ep = common["policy"], common["ep"]
    if policy == "layered":
        both = ("neither vLLM nor SGLang can run the plan's layered prefill: no option of either engine advances "
                "prompts one layer group per iteration; re-plan without layered prefill")
        return {"vLLM": both, "SGLang": both}
    tps = sorted({inst["tp"] * inst["groups"] for inst in instances})
    if ep > 1 and tps != [ep]:
        both = (f"neither vLLM (--enable-expert-parallel) nor SGLang (--ep-size) can run the plan's expert parallelism "
                f"ep={ep} across instances of tp {tps}: both shard experts only over one instance's tp ranks; re-plan "
                f"with ep equal to tp or 1")
        return {"vLLM": both, "SGLang": both}
    if policy == "prefill_first":
        return {"vLLM": "vLLM cannot run the plan's prefill-first schedule: vLLM v1 has no option that stalls decodes "
                        "while prompts run (--no-enable-chunked-prefill still batches decodes beside whole prompts); "
                        "use serve_sglang.sh or re-plan with chunked prefill", "SGLang": None}
    return {"vLLM": None, "SGLang": None}


def _vllm_args(common: dict, inst: dict, disaggregated: bool) -> list[str]:
    e, groups = inst["engine"], inst["groups"]
    args = ["--tensor-parallel-size", inst["tp"], "--pipeline-parallel-size", inst["pp"]]
    if groups > 1:
        args += ["--data-parallel-size", groups]
    if common["ep"] > 1:
        args += ["--enable-expert-parallel"]
    seqs = -(-e["max_num_seqs"] // groups)  # vLLM's limits hold per data-parallel rank
    budget = max(-(-(e["max_num_batched_tokens"] or 0) // groups), seqs, 2048 if inst["role"] == "decode" else 0)
    args += ["--max-model-len", common["max_model_len"], "--max-num-seqs", seqs, "--max-num-batched-tokens", budget,
             "--enable-chunked-prefill", "--enable-prefix-caching" if common["prefix_caching"] else
             "--no-enable-prefix-caching", "--block-size", e["block_size"], "--kv-cache-memory-bytes", e["kv_cache_bytes"],
             "--watermark", 0.01, *_dtype_args(common, "vLLM")]
    if disaggregated:
        args += ["--kv-transfer-config", json.dumps({"kv_connector": "NixlConnector", "kv_role": "kv_both"},
                                                    separators=(",", ":"))]
    return args


def _sglang_args(common: dict, inst: dict) -> list[str]:
    e = inst["engine"]
    memory = e["device_memory_bytes"]
    fraction = math.ceil(1000 * (e["weights_bytes"] + e["kv_cache_bytes"]) / memory) / 1000 if memory else 0.0
    groups = inst["groups"]
    args = ["--tp-size", inst["tp"] * groups, "--pp-size", inst["pp"]]
    if groups > 1:
        args += ["--dp-size", groups, "--enable-dp-attention"]
    if common["ep"] > 1:
        args += ["--ep-size", common["ep"]]
    args += ["--context-length", common["max_model_len"], "--max-running-requests", e["max_num_seqs"],
             "--max-total-tokens", e["kv_cache_tokens"], "--page-size", e["block_size"],
             "--schedule-policy", "fcfs"]
    if 0 < fraction < 1:
        args += ["--mem-fraction-static", fraction]
    budget = e["max_num_batched_tokens"]
    if inst["role"] == "prefill" or common["policy"] == "prefill_first":
        args += ["--chunked-prefill-size", -1, "--max-prefill-tokens", max(budget or 0, common["max_model_len"])]
    elif inst["role"] != "decode" and budget:
        args += ["--chunked-prefill-size", budget, "--enable-mixed-chunk"]
    if not common["prefix_caching"]:
        args += ["--disable-radix-cache"]
    args += _dtype_args(common, "SGLang")
    if inst["role"] in ("prefill", "decode"):
        args += ["--disaggregation-mode", inst["role"], "--disaggregation-transfer-backend", "nixl"]
    return args


def _router(engine: str, instances: list[dict]) -> list[dict]:
    """Router arguments: items {"flag": str} or {"url": instance index, "bootstrap": bool} (the template writes
    instance URLs from HOSTS and the ports)."""
    disaggregated = any(inst["role"] == "prefill" for inst in instances)
    if not disaggregated:
        return [{"flag": "--worker-urls"}, *({"url": inst["index"], "bootstrap": False} for inst in instances),
                {"flag": "--policy"}, {"flag": "round_robin"}]
    out = [{"flag": "--vllm-pd-disaggregation" if engine == "vLLM" else "--pd-disaggregation"}]
    for inst in instances:
        out += [{"flag": f"--{inst['role']}"}, {"url": inst["index"],
                                               "bootstrap": engine == "SGLang" and inst["role"] == "prefill"}]
    return [*out, {"flag": "--policy"}, {"flag": "round_robin"}]


def _engine_script(common: dict, instances: list[dict], engine: str, reason: str | None) -> dict:
    if reason:
        return {"ok": False, "reason": reason}
    disaggregated = any(inst["role"] == "prefill" for inst in instances)
    args = [_vllm_args(common, inst, disaggregated) if engine == "vLLM" else _sglang_args(common, inst)
            for inst in instances]  # by instance index
    return {"ok": True, "reason": None, "args": args, "router": _router(engine, instances)}


def engine_scripts(common: dict, instances: list[dict]) -> dict:
    """The serving render context: `common`, the instances and, per engine, their arguments and router (or why
    the engine cannot run the plan). UserError when neither engine can."""
    reasons = _refusals(common, instances)
    if reasons["vLLM"] and reasons["SGLang"]:
        raise UserError(reasons["vLLM"])
    vllm = _engine_script(common, instances, "vLLM", reasons["vLLM"])
    sglang = _engine_script(common, instances, "SGLang", reasons["SGLang"])
    return {**common, "instances": instances, "vllm": vllm, "sglang": sglang,
            "disaggregated": any(inst["role"] == "prefill" for inst in instances),
            "summary": _summary(common, instances)}


def _summary(common: dict, instances: list[dict]) -> str:
    roles: dict[str, int] = {}
    for inst in instances:
        name = f"{inst['role']} tp{inst['tp']}pp{inst['pp']}" + (f"dp{inst['groups']}" if inst["groups"] > 1 else "")
        roles[name] = roles.get(name, 0) + 1
    parts = ", ".join(f"{n} x {name}" for name, n in roles.items())
    return f"{parts}; policy {common['policy']}; context {common['max_model_len']} tokens"
