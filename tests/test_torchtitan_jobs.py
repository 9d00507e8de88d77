"""torchtitan jobs of training plans: what `planner codegen` writes into train_torchtitan.sh (and
torchtitan_plan.py) maps the plan's decisions, and torchtitan 0.3.0's own ConfigManager parses and validates
every emitted job, with its ParallelDims accepting the degrees for the plan's world size.

The torchtitan side runs in its own environment (tools/torchtitan_venv.sh builds ~/.cache/aot-planner/venvs/torchtitan;
AOT_TORCHTITAN_PYTHON names another interpreter); where it is absent that test says so and skips.
torchtitan needs a GPU to train, not to parse: on this CPU only float8's hardware check (SM89+, the plans'
H100s) is answered for the H100 the plans target (`has_cuda_capability` -> True), nothing else is replaced.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
from pathlib import Path

import pytest

import planner
from codegen import render_plan
from codegen.torchtitan import FLAVORS

TITAN_PYTHON = Path(os.environ.get("AOT_TORCHTITAN_PYTHON") or
                    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aot-planner/venvs/torchtitan/bin/python")

CASES = {  # name: (model, cluster, fixed plan options, decision overrides)
    "dense_tp2_fsdp": ("llama-3-8b", "8xH100-SXM", {"tp": 2}, {}),
    "dense_fp8": ("llama-3-8b", "8xH100-SXM", {"dtype": "fp8"}, {}),
    "dense_ddp_multinode": ("llama-3-8b", "2x8xH100-SXM", {"tp": 1}, {"zero_stage": 0}),
    "dense_tp4_pp4_interleaved": ("llama-3.1-70b", "4x8xH100-SXM", {"pp": 4, "schedule": "interleaved"}, {}),
    "dense_405b_bf16_tp8_pp8": ("llama-3.1-405b", "16x8xH100-SXM", {"tp": 8, "pp": 8}, {"recompute": "full"}),
    # Llama 3's own layout: 126 layers over pp 16 x v 4 = 64 chunks of 2, the first and last of 1 (with embedding, head)
    "dense_405b_tp8_pp16_v4_short_ends": ("llama-3.1-405b", "16x8xH100-SXM", {"tp": 8, "pp": 16, "virtual_stages": 4},
                                          {}),
    "moe_ep8_fp8": ("qwen3-30b-a3b", "8xH100-SXM", {"ep": 8, "dtype": "fp8"}, {}),
    "moe_ep4_pp2_interleaved": ("qwen3-30b-a3b", "2x8xH100-SXM", {"ep": 4, "pp": 2}, {"recompute": "selective"}),
}


def _job(files: dict) -> tuple[list[str], str, int]:
    """(the JOB arguments, the activation-checkpoint subcommand, world size) as train_torchtitan.sh runs them."""
    script = files["train_torchtitan.sh"]
    block = script[script.index("JOB=(\n") + len("JOB=(\n"):script.index("\n)\n")]
    ac = shlex.split(next(line for line in script.splitlines() if line.startswith("AC=")).removeprefix("AC="))[0]
    nproc = [int(n) for n in script.split("NPROC=(")[1].split(")")[0].split()] if "NPROC=(" in script else None
    per_node = int(script.split("--nproc-per-node ")[1].split()[0]) if nproc is None else None
    nnodes = int(script.split("--nnodes ")[1].split()[0])
    return shlex.split(block), ac, sum(nproc) if nproc else nnodes * per_node


def _value(args: list[str], option: str) -> str:
    return args[args.index(option) + 1]


@pytest.fixture(scope="module")
def jobs():
    made = {}
    for name, (model, cluster, fixed, overrides) in CASES.items():
        plan = planner.plan(model, cluster, "train", **fixed).to_dict()
        plan["decision"].update(overrides)
        made[name] = (plan, render_plan(plan))
    return made


@pytest.mark.parametrize("case", sorted(CASES))
def test_job_maps_the_plans_decisions(case, jobs):
    plan, files = jobs[case]
    d = plan["decision"]
    args, ac, world = _job(files)
    degrees = {k: int(_value(args, f"--parallelism.{k}_degree")) for k in (
        "data_parallel_replicate", "data_parallel_shard", "tensor_parallel", "context_parallel", "pipeline_parallel",
        "expert_parallel")}
    assert world == d["dp"] * d["tp"] * d["pp"] == len({r for st in d["stages"] for row in st["ranks"] for r in row})
    assert degrees["data_parallel_replicate"] * degrees["data_parallel_shard"] == d["dp"]
    assert (degrees["tensor_parallel"], degrees["pipeline_parallel"], degrees["expert_parallel"]) == (d["tp"], d["pp"],
                                                                                                       d.get("ep", 1))
    assert (degrees["data_parallel_replicate"] > 1) == (d["zero_stage"] == 0 and d["dp"] > 1 and d.get("ep", 1) == 1)
    assert ac == f"activation-checkpoint:{d['recompute']}"
    assert int(_value(args, "--training.global_batch_size")) == plan["inputs"]["workload"]["batch"]
    assert int(_value(args, "--training.seq_len")) == plan["inputs"]["workload"]["seq_len"]
    if d["pp"] > 1:
        mbs = int(_value(args, "--parallelism.pipeline_parallel_microbatch_size"))
        assert int(_value(args, "--training.local_batch_size")) // mbs == d["microbatches"] and mbs == d["microbatch_size"]
        parts = args[args.index("--parallelism.module_fqns_per_model_part") + 1:][:d["pp"] * d["virtual_stages"]]
        assert parts[0].startswith("tok_embeddings,") and parts[-1].endswith(",norm,lm_head")
        schedule = _value(args, "--parallelism.pipeline_parallel_schedule")
        assert schedule == ("Interleaved1F1B" if d["schedule"] == "interleaved" else schedule)
    assert ("torchtitan_plan.py" in files) == (plan["inputs"]["dtype"] == "fp8" or case.startswith("dense_405b"))
    assert ("run_plan.py" in files) == (not case.startswith("moe"))  # the runtime shards Mixtral-style experts only


def test_plans_without_a_torchtitan_flavor_say_why(jobs):
    plan = planner.plan("tiny-llama", "8xH100-SXM", "train", tp=2).to_dict()
    files = render_plan(plan)
    assert "train_torchtitan.sh" not in files
    assert "No torchtitan job: torchtitan 0.3.0 has no model flavor with this model's architecture and size" in \
        files["README.md"]


WORKER = r'''
import importlib, json, sys
import torchtitan.components.quantization.float8 as float8
float8.has_cuda_capability = lambda major, minor: True  # the plans' H100s (SM90); see the test module docstring
from torch import nn
import torch
from torchtitan.config.manager import ConfigManager
from torchtitan.distributed.parallel_dims import ParallelDims

out = {}
for name, job in json.load(open(sys.argv[1])).items():
    sys.path.insert(0, job["folder"])
    config = ConfigManager().parse_args(job["args"] + [job["ac"]])
    dims = ParallelDims.from_config(config.parallelism, job["world"])  # asserts the product is the world size
    got = {"dims": [dims.dp_replicate, dims.dp_shard, dims.cp, dims.tp, dims.pp, dims.ep],
           "ac": type(config.activation_checkpoint).__qualname__, "compile": config.compile.enable,
           "float8": sum(1 for _ in config.model_spec.model.traverse(float8.Float8Linear.Config)),
           "flavor": config.model_spec.flavor, "missing": []}
    parts = config.parallelism.module_fqns_per_model_part
    if parts:
        with torch.device("meta"):
            model = config.model_spec.model.build()
        names = {n for n, _ in model.named_modules()}
        got["missing"] = [f for part in parts for f in part if f not in names]
        got["parts"] = len(parts)
    sys.path.remove(job["folder"])
    sys.modules.pop("torchtitan_plan", None)
    out[name] = got
flavors = []  # FLAVORS as torchtitan's config functions build them
for module, config, flavor, dims, has_float8 in json.load(open(sys.argv[3])):
    spec = getattr(importlib.import_module(f"torchtitan.models.{module}.config_registry"), config)().model_spec
    attention = spec.model.layers[0].attention
    flavors.append([spec.flavor, spec.model.dim, len(spec.model.layers), spec.model.vocab_size, attention.n_heads,
                    getattr(attention, "n_kv_heads", None), any(True for _ in spec.model.traverse(float8.Float8Linear.Config))])
out["_flavors"] = flavors
bad = dict(next(iter(json.load(open(sys.argv[2])).values())))  # a pipeline job without --training.disable_cuda_graphs
print("RESULT " + json.dumps(out), flush=True)
ConfigManager().parse_args(bad["args"] + [bad["ac"]])  # tyro reports the ValueError on stderr and exits 2
print("ACCEPTED", flush=True)
'''


def test_torchtitan_configmanager_parses_and_validates_every_job(jobs, tmp_path):
    """One run of torchtitan's interpreter: every job parsed and validated, its degrees accepted for the world
    size, its stage cuts found in the built (meta) model; the flavor table checked against torchtitan's."""
    if not TITAN_PYTHON.is_file():
        pytest.skip(f"torchtitan 0.3.0 is not installed at {TITAN_PYTHON}: build it with tools/torchtitan_venv.sh "
                    f"(or set AOT_TORCHTITAN_PYTHON)")
    payload, expected = {}, {}
    for name, (plan, files) in jobs.items():
        folder = Path(tempfile.mkdtemp(dir=tmp_path))
        for file in ("torchtitan_plan.py",):
            if file in files:
                (folder / file).write_text(files[file])
        args, ac, world = _job(files)
        payload[name] = {"args": args, "ac": ac, "world": world, "folder": str(folder)}
        expected[name] = plan
    piped = next(name for name, (plan, _) in jobs.items() if plan["decision"]["pp"] > 1)
    bad = {piped: {**payload[piped], "args": [a for a in payload[piped]["args"] if a != "--training.disable_cuda_graphs"]}}
    (tmp_path / "jobs.json").write_text(json.dumps(payload))
    (tmp_path / "flavors.json").write_text(json.dumps([[f.module, f.config, f.flavor, list(f.dims), f.float8]
                                                       for f in FLAVORS]))
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    (tmp_path / "worker.py").write_text(WORKER)
    proc = subprocess.run([str(TITAN_PYTHON), str(tmp_path / "worker.py"), str(tmp_path / "jobs.json"),
                           str(tmp_path / "bad.json"), str(tmp_path / "flavors.json")], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert "RESULT " in proc.stdout, proc.stderr[-4000:]
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    # torchtitan's validation is real: the same pipeline job without --training.disable_cuda_graphs is refused
    assert proc.returncode == 2 and "ACCEPTED" not in proc.stdout, proc.stderr[-4000:]
    assert "CUDA graphs do not support pipeline parallelism" in proc.stderr
    assert len(expected) >= 6
    for name, plan in expected.items():
        d, got = plan["decision"], result[name]
        dp_rep, dp_shard, cp, tp, pp, ep = got["dims"]
        assert dp_rep * dp_shard * cp * tp * pp == payload[name]["world"] == d["dp"] * d["tp"] * d["pp"], name
        assert (tp, pp, ep, cp) == (d["tp"], d["pp"], d.get("ep", 1), 1), name
        assert got["ac"] == {"none": "NoneType", "selective": "SelectiveAC.Config", "full": "FullAC.Config"}[
            d["recompute"]], (name, got["ac"])
        assert (got["float8"] > 0) == (plan["inputs"]["dtype"] == "fp8"), (name, got["float8"])
        assert got["compile"] or plan["inputs"]["dtype"] != "fp8"
        assert got["missing"] == [], (name, got["missing"])  # every stage cut names modules of torchtitan's model
        if d["pp"] > 1:
            assert got["parts"] == d["pp"] * d["virtual_stages"]
    for flavor, got in zip(FLAVORS, result["_flavors"]):  # FLAVORS' dimensions and functions are torchtitan 0.3.0's
        assert got == [flavor.flavor, *flavor.dims, flavor.float8], (flavor.config, got)
