"""The torchtitan 0.3 job of a training plan: module, config-registry function and `--section.key value`
overrides that carry every decision of the plan torchtitan can express, or the reason there is none.

torchtitan 0.3 (BSD, `pip install torchtitan==0.3.0`) configures a job as `--module NAME --config FUNCTION`
(a Python config registry, torchtitan/models/<NAME>/config_registry.py) plus tyro overrides; activation
checkpointing is a tyro subcommand (`activation-checkpoint:none|selective|full`) that must come last.
Model flavors are matched by architecture and dimensions (FLAVORS, taken from torchtitan 0.3.0's
model registries; tests/test_torchtitan_jobs.py checks them against the installed torchtitan). Where
the plan's float8 choice differs from the config function's, the job's config function is a generated
registry module (torchtitan_plan.py) that wraps torchtitan's function and sets the model's converters.

Mapping (torchtitan/config/configs.py, distributed/parallel_dims.py, distributed/pipeline_parallel.py):
ZeRO-0 -> data_parallel_replicate_degree = dp (DDP); ZeRO-1/2/3 -> data_parallel_shard_degree = dp (FSDP2)
with fsdp_reshard_after_forward never (1/2) or always (3); tp, sp, cp, ep, pp degrees as planned; the
plan's stage cuts as module_fqns_per_model_part (virtual stage c * pp + s, torchtitan's "loop" style);
schedules 1F1B, GPipe, Interleaved1F1B; pipeline microbatch size and the per-replica batch (without pp,
microbatches become gradient accumulation: global_batch_size / local_batch_size / dp).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from codegen.context import launch_geometry, model_spec
from ir.errors import UserError

TORCHTITAN_VERSION = "0.3.0"
SCHEDULES = {"1f1b": "1F1B", "gpipe": "GPipe", "interleaved": "Interleaved1F1B"}
RECOMPUTE = {"none": "activation-checkpoint:none", "selective": "activation-checkpoint:selective",
             "full": "activation-checkpoint:full"}
PRECISION = {"bf16": "bfloat16", "fp8": "bfloat16", "fp32": "float32"}  # training.mixed_precision_param
IDENTIFIER = re.compile(r"[a-z][a-z0-9_]*")  # module and function names written into torchtitan_plan.py


@dataclass(frozen=True)
class Flavor:
    """A torchtitan model flavor with a config-registry function, and the Hugging Face model it is."""

    module: str  # --module
    config: str  # --config: the registry function
    flavor: str  # model_registry(flavor)
    architecture: str  # transformers class of the same model
    dims: tuple[int, int, int, int, int | None]  # hidden, layers, vocabulary, heads, kv heads (None: MLA)
    moe: bool = False
    float8: bool = False  # the config function already converts Linear layers to float8


FLAVORS = (
    Flavor("llama3", "llama3_8b", "8B", "LlamaForCausalLM", (4096, 32, 128256, 32, 8)),
    Flavor("llama3", "llama3_70b", "70B", "LlamaForCausalLM", (8192, 80, 128256, 64, 8)),
    Flavor("llama3", "llama3_405b", "405B", "LlamaForCausalLM", (16384, 126, 128256, 128, 8), float8=True),
    Flavor("qwen3", "qwen3_0_6b", "0.6B", "Qwen3ForCausalLM", (1024, 28, 151936, 16, 8)),
    Flavor("qwen3", "qwen3_1_7b", "1.7B", "Qwen3ForCausalLM", (2048, 28, 151936, 16, 8)),
    Flavor("qwen3", "qwen3_14b", "14B", "Qwen3ForCausalLM", (5120, 40, 151936, 40, 8)),
    Flavor("qwen3", "qwen3_32b", "32B", "Qwen3ForCausalLM", (5120, 64, 151936, 64, 8)),
    Flavor("qwen3", "qwen3_30b_a3b", "30B-A3B", "Qwen3MoeForCausalLM", (2048, 48, 151936, 32, 4), moe=True),
    Flavor("deepseek_v3", "deepseek_v3_671b", "671B", "DeepseekV3ForCausalLM", (7168, 61, 129280, 128, None),
           moe=True),
    Flavor("gpt_oss", "gpt_oss_20b", "20b", "GptOssForCausalLM", (2880, 24, 201088, 64, 8), moe=True),
    Flavor("gpt_oss", "gpt_oss_120b", "120b", "GptOssForCausalLM", (2880, 36, 201088, 64, 8), moe=True),
)


@dataclass
class TitanJob:
    """A torchtitan job: `args` (before the activation-checkpoint subcommand `ac`), the launch geometry,
    the generated registry module's settings (None: torchtitan's own function), notes for the README."""

    flavor: Flavor
    module: str
    config: str
    args: list[str]
    ac: str
    degrees: dict
    launch: dict
    float8: bool
    registry: dict | None = None
    notes: list[str] = field(default_factory=list)


def find_flavor(spec: dict) -> Flavor | None:
    """The torchtitan flavor whose architecture and dimensions the model's config has, if any.

    >>> from planner.model_source import model_record
    >>> spec = lambda name: model_spec(model_record(name, {}))
    >>> find_flavor(spec("llama-3-8b")).config, find_flavor(spec("tiny-llama"))
    ('llama3_8b', None)
    """
    values = spec.get("values") or {}
    dims = (values.get("hidden_size"), values.get("num_hidden_layers"), values.get("vocab_size"),
            values.get("num_attention_heads"), values.get("num_key_value_heads"))
    for flavor in FLAVORS:
        if spec.get("architecture") == flavor.architecture and dims[:4] == flavor.dims[:4] and (
                flavor.dims[4] is None or dims[4] == flavor.dims[4]):
            return flavor
    return None


def _reason_without_job(plan: dict, spec: dict, tps: list[int]) -> str | None:
    decision, inputs = plan["decision"], plan["inputs"]
    if decision.get("kind") != "train":
        return "not a training plan"
    if not launch_geometry(inputs.get("cluster", "1xcpu"), 1)["accelerator"]:
        return "torchtitan trains on GPUs and this plan's cluster is CPU ranks"
    if len(set(tps)) > 1:
        return (f"its stages use different tp ({', '.join(map(str, tps))}, for mixed GPU types) and torchtitan gives "
                f"every pipeline stage the same tp")
    if inputs.get("dtype", "bf16") not in PRECISION:
        return f"torchtitan trains in bf16, fp8 or fp32, not {inputs.get('dtype')}"
    if find_flavor(spec) is None:
        values = spec.get("values") or {}
        return (f"torchtitan {TORCHTITAN_VERSION} has no model flavor with this model's architecture and size "
                f"({spec.get('architecture')}, hidden {values.get('hidden_size')}, "
                f"{values.get('num_hidden_layers')} layers)")
    return None


def _fqns(layers: list[int], blocks: int) -> list[str]:
    """torchtitan module names of graph layers [a, b): tok_embeddings, layers.i, norm + lm_head."""
    a, b = layers
    names = ["tok_embeddings"] if a == 0 else []
    names += [f"layers.{i - 1}" for i in range(max(a, 1), min(b, blocks + 1))]
    return names + (["norm", "lm_head"] if b == blocks + 2 else [])


def _model_parts(stages: list[dict], blocks: int) -> list[str]:
    """module_fqns_per_model_part in virtual-stage order (chunk c of stage s is part c * pp + s)."""
    parts = {}
    for s, stage in enumerate(stages):
        for c, layers in enumerate(stage.get("chunks") or [stage["layers"]]):
            parts[c * len(stages) + s] = ",".join(_fqns(layers, blocks))
    return [parts[k] for k in sorted(parts)]


def _degrees(decision: dict, tp: int, pp: int, dp: int) -> dict:
    zero, ep = int(decision.get("zero_stage", 0)), int(decision.get("ep", 1))
    shard = zero > 0 or ep > 1  # torchtitan's experts borrow FSDP ranks: ep needs dp_shard
    return {"dp_replicate": 1 if shard else dp, "dp_shard": dp if shard else 1, "cp": int(decision.get("cp", 1)),
            "tp": tp, "pp": pp, "ep": ep, "reshard": "always" if zero >= 3 else "never"}


def _batch_args(decision: dict, workload: dict, dp: int, pp: int) -> list[str]:
    batch, mbs = int(workload.get("batch") or 1), int(decision.get("microbatch_size") or 1)
    m = int(decision.get("microbatches") or 1)
    if batch % dp or batch // dp != m * mbs:
        raise UserError(f"the plan's batch {batch} is not dp={dp} x {m} microbatches of {mbs}; re-plan")
    local = batch // dp if pp > 1 else mbs  # without pp, microbatches are gradient accumulation steps
    args = ["--training.local_batch_size", local, "--training.global_batch_size", batch,
            "--training.seq_len", int(workload.get("seq_len") or 2048)]
    return args + (["--parallelism.pipeline_parallel_microbatch_size", mbs] if pp > 1 else [])


def _parallel_args(decision: dict, degrees: dict, stages: list[dict], blocks: int) -> list[str]:
    args = ["--parallelism.data_parallel_replicate_degree", degrees["dp_replicate"],
            "--parallelism.data_parallel_shard_degree", degrees["dp_shard"],
            "--parallelism.tensor_parallel_degree", degrees["tp"],
            "--parallelism.context_parallel_degree", degrees["cp"],
            "--parallelism.pipeline_parallel_degree", degrees["pp"],
            "--parallelism.expert_parallel_degree", degrees["ep"]]
    if degrees["dp_shard"] > 1:
        args += ["--parallelism.fsdp_reshard_after_forward", degrees["reshard"]]
    if degrees["tp"] > 1:
        args.append("--parallelism.enable_sequence_parallel" if decision.get("sequence_parallel")
                    else "--parallelism.no_enable_sequence_parallel")
    if degrees["pp"] > 1:
        args += ["--parallelism.pipeline_parallel_schedule", _schedule(decision, degrees["pp"]),
                 "--parallelism.module_fqns_per_model_part", *_model_parts(stages, blocks)]
    if degrees["pp"] > 1 or degrees["ep"] > 1:  # torchtitan refuses CUDA graphs with pp and its default EP dispatch
        args.append("--training.disable_cuda_graphs")
    return args


def _schedule(decision: dict, pp: int) -> str:
    name = decision.get("schedule", "1f1b")
    if name not in SCHEDULES:
        raise UserError(f"the plan's pipeline schedule {name!r} has no torchtitan name; re-plan")
    if name == "1f1b" and int(decision.get("microbatches") or 1) < pp:
        return "GPipe"  # 1F1B with fewer microbatches than stages runs in GPipe's order (runtime/parallel.py)
    return SCHEDULES[name]


def torchtitan_job(plan: dict) -> tuple[TitanJob | None, str | None]:
    """(the job, None), or (None, why torchtitan cannot run this plan)."""
    decision, inputs = plan["decision"], plan["inputs"]
    spec = model_spec(inputs["model_source"])
    stages = sorted(decision.get("stages") or [], key=lambda s: s["stage"])
    tps = [int(st["tp"]) for st in stages]
    reason = _reason_without_job(plan, spec, tps)
    if reason:
        return None, reason
    flavor = find_flavor(spec)
    tp, pp, dp = tps[0], len(stages), len(stages[0]["ranks"])
    degrees = _degrees(decision, tp, pp, dp)
    world = dp * tp * pp * degrees["cp"]
    float8 = inputs.get("dtype") == "fp8"
    registry = None if float8 == flavor.float8 else _registry(flavor, float8)
    module, config = ("torchtitan_plan", "plan_config") if registry else (flavor.module, flavor.config)
    args = ["--module", module, "--config", config,
            *_parallel_args(decision, degrees, stages, flavor.dims[1]),
            *_batch_args(decision, inputs.get("workload") or {}, dp, pp),
            "--training.mixed_precision_param", PRECISION[inputs.get("dtype", "bf16")]]
    job = TitanJob(flavor, module, config, args, RECOMPUTE[decision.get("recompute", "none")], degrees,
                   launch_geometry(inputs.get("cluster", "1xcpu"), world), float8, registry)
    job.notes = _notes(decision, degrees, stages, flavor, float8)
    return job, None


def _registry(flavor: Flavor, float8: bool) -> dict:
    """What torchtitan_plan.py sets: torchtitan's function `base`, its model with float8 converters (the
    lm_head and router gates kept in bf16) or rebuilt from `flavor` without them."""
    if not (IDENTIFIER.fullmatch(flavor.module) and IDENTIFIER.fullmatch(flavor.config)):
        raise UserError(f"torchtitan names {flavor.module}.{flavor.config} are not identifiers")
    return {"module": flavor.module, "base": flavor.config, "flavor": flavor.flavor, "float8": float8,
            "moe": flavor.moe, "keep_bf16": ["lm_head", "router.gate"] if flavor.moe else ["lm_head"]}


def arg_groups(args: list) -> list[list]:
    """The job's arguments one option (with its values) per group, for one line each in the script.

    >>> arg_groups(["--a", 1, "--b", "--c", "x", "y"])
    [['--a', 1], ['--b'], ['--c', 'x', 'y']]
    """
    groups: list[list] = []
    for arg in args:
        if (isinstance(arg, str) and arg.startswith("--")) or not groups:
            groups.append([arg])
        else:
            groups[-1].append(arg)
    return groups


def _notes(decision: dict, degrees: dict, stages: list[dict], flavor: Flavor, float8: bool) -> list[str]:
    """What the job runs differently from the plan, in README sentences."""
    notes = []
    zero = int(decision.get("zero_stage", 0))
    if zero in (1, 2):
        notes.append(f"ZeRO-{zero}: torchtitan shards parameters, gradients and optimizer states together (FSDP2); "
                     f"the job keeps parameters gathered from forward to backward (reshard never), which holds no "
                     f"more than the plan's ZeRO-{zero} memory.")
    if decision.get("recompute") == "selective":
        notes.append("Selective recomputation: torchtitan's selective activation checkpointing is per operator (it "
                     "keeps matmul outputs and recomputes the rest); the plan recomputes attention "
                     "(Korthikanti et al. 2022).")
    if degrees["pp"] > 1 and decision.get("schedule", "1f1b") == "1f1b" and _schedule(decision, degrees["pp"]) == "GPipe":
        notes.append("Schedule GPipe: 1F1B needs at least as many microbatches as stages; with fewer its order is "
                     "GPipe's.")
    expected = [[[s * degrees["tp"] * len(st["ranks"]) + d * degrees["tp"] + t for t in range(degrees["tp"])]
                 for d in range(len(st["ranks"]))] for s, st in enumerate(stages)]
    if [st["ranks"] for st in stages] != expected:
        notes.append("Rank placement: torchtitan numbers ranks pp-major with tp innermost; the plan placed its stages "
                     "differently (see the stage table), which launch.sh (run_plan.py) keeps.")
    if degrees["ep"] > 1 and degrees["tp"] > 1:
        notes.append("Experts: torchtitan's expert-parallel groups span data-parallel and tp ranks and do not slice "
                     "experts over tp; the plan's expert memory assumes 1/tp slices (run_plan.py does that).")
    if float8:
        notes.append(f"float8: torchtitan_plan.py wraps torchtitan's {flavor.config} with float8 Linear layers"
                     + (" and float8 grouped expert GEMMs" if flavor.moe else "")
                     + " (lm_head" + (" and router gates" if flavor.moe else "") + " stay in bf16) and torch.compile, "
                     "which its float8 kernels need for speed; needs torchao and an SM89+ GPU.")
    elif flavor.float8:
        notes.append(f"bf16: torchtitan's {flavor.config} trains in float8; torchtitan_plan.py rebuilds its model "
                     f"without the float8 converter, as planned.")
    return notes
