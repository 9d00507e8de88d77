"""Generated engine scripts against the engines' own validation: every instance's arguments (what `serve_*.sh args K R`
prints, i.e. what the script execs) and every router's arguments, for one plan of each kind of serving deployment.

- vLLM 0.32 (CPU build, its own venv: tools/make_vllm_env.sh): the OpenAI server's parser, its argument checks and
  `create_engine_config` (planner/engines/vllm_check.py), with the plan's model as a config-only checkpoint;
  vllm-router's parser and validation for the router;
- SGLang 0.5.23 (argument-parser venv: tools/make_sglang_env.sh): `prepare_server_args` and sglang-router's parser
  (planner/engines/sglang_check.py); SGLang's post-parse resolution cannot run without a GPU build here.
Each engine's part runs where its environment exists (.ci/run builds both) and says why it skipped elsewhere.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from codegen import render_plan
from codegen.context import model_spec
from planner.engines.server import script_args
from planner.engines.vllm_env import sglang_python, vllm_python, why_not_sglang, why_not_vllm

GOLDEN = Path(__file__).parent / "golden" / "codegen"
KINDS = {  # plan kind -> fixture (tests/golden/codegen/make_serving_plans.py)
    "dense": "serve_dense", "moe": "serve_moe", "fp8": "serve_fp8", "dp>1": "serve_dp4",
    "disaggregated": "serve_disagg", "fleet": "serve_fleet", "chunk 512": "serve_chunk512", "pp>1": "serve_pp2",
    "decode batch": "decode_tp2_pp2", "wide expert parallelism": "serve_wide_ep",
    "wide expert parallelism over 2 nodes": "serve_wide_ep_2node",
}
HOSTS = "10.0.0.1 10.0.0.2 10.0.0.3 10.0.0.4"
ENGINES = {"vllm": (vllm_python, why_not_vllm, "planner/engines/vllm_check.py"),
           "sglang": (sglang_python, why_not_sglang, "planner/engines/sglang_check.py")}


def _plan(fixture: str) -> dict:
    return json.loads((GOLDEN / "plans" / f"{fixture}.json").read_text())


def _collect(engine: str, tmp: Path) -> tuple[list, list, dict]:
    """(instance cases, router cases, plan facts per case) over every plan kind's scripts for `engine`."""
    cases, routers, facts = [], [], {}
    for kind, fixture in KINDS.items():
        plan = _plan(fixture)
        folder = tmp / fixture
        folder.mkdir()
        for name, text in render_plan(plan).items():
            if not (name.startswith(f"serve_{engine}") and name.endswith(".sh")):
                continue
            script = folder / name
            script.write_text(text)
            names = [line.split()[0] for line in script_args(script, "list", env={"HOSTS": HOSTS})[:-1]]
            for instance_name, part in zip(names, script_args(script, "parts")):
                index, rank, _ = part.split(":")
                case = f"{kind}: {name} {instance_name} rank {rank}"
                cases.append({"name": case, "model": plan["inputs"]["model"], "model_path": plan["inputs"]["model"],
                              "args": script_args(script, "args", index, rank, env={"HOSTS": HOSTS}),
                              "cpu": "cpu" in str(plan["inputs"].get("cluster", "")).lower()})
                facts[case] = plan
            routers.append({"name": f"{kind}: {name} router", "args": script_args(script, "router-args", env={"HOSTS": HOSTS})})
    return cases, routers, facts


def _run(engine: str, tmp: Path) -> tuple[dict, dict]:
    python, why_not, checker = ENGINES[engine]
    if python() is None:
        pytest.skip(why_not())
    cases, routers, facts = _collect(engine, tmp)
    models = {}
    for case in cases:
        spec = model_spec(facts[case["name"]]["inputs"]["model_source"])
        models[case["model"]] = {"config_class": spec["config_class"], "architecture": spec["architecture"],
                                 "values": spec["values"]}
    request = {"models": models, "cases": cases, "routers": routers, "output": str(tmp / "result.json")}
    proc = subprocess.run([str(python()), checker], input=json.dumps(request), capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], env={"VLLM_LOGGING_LEVEL": "ERROR", "PATH": "/usr/bin:/bin"},
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp / "result.json").read_text()), facts


@pytest.fixture(scope="module")
def vllm_results(tmp_path_factory):
    return _run("vllm", tmp_path_factory.mktemp("vllm"))


@pytest.fixture(scope="module")
def sglang_results(tmp_path_factory):
    return _run("sglang", tmp_path_factory.mktemp("sglang"))


def test_every_plan_kind_has_engine_instances():
    kinds_seen = set()
    for kind, fixture in KINDS.items():
        files = render_plan(_plan(fixture))
        assert any(n.startswith("serve_vllm") for n in files) and any(n.startswith("serve_sglang") for n in files), kind
        kinds_seen.add(kind)
    assert len(kinds_seen) >= 8


def test_vllm_accepts_every_generated_instance_and_router(vllm_results):
    result, _ = vllm_results
    failed = [(c["name"], c["error"]) for c in result["cases"] + result["routers"] if not c["ok"]]
    assert not failed, failed
    assert len(result["cases"]) >= len(KINDS) and len(result["routers"]) >= len(KINDS)


def test_vllm_resolves_the_plans_limits(vllm_results):
    """The engine ends up with what the plan simulated: its context admits the planned workload's longest request,
    the per-instance sequence limit and KV pool are the plan's, prefix caching and chunked prefill are on."""
    result, facts = vllm_results
    for case in result["cases"]:
        plan, r = facts[case["name"]], case["resolved"]
        serving = plan["decision"].get("serving") or {}
        if plan["decision"].get("kind") == "fleet":
            longest = plan["decision"]["longest_request_tokens"]
        else:
            longest = serving.get("longest_request_tokens") or plan["decision"]["input_len"] + plan["decision"]["output_len"]
        assert r["max_model_len"] >= longest, case["name"]
        assert r["max_num_batched_tokens"] >= r["max_num_seqs"], case["name"]
        assert r["enable_prefix_caching"] and r["enable_chunked_prefill"] and r["kv_cache_memory_bytes"] > 0, case["name"]
        published = ((plan["inputs"]["model_source"].get("values") or {}).get("quantization_config") or {}).get("quant_method")
        fp8 = plan["inputs"].get("dtype") == "fp8" or published == "fp8"  # DeepSeek publishes fp8 block-scaled weights
        assert r["quantization"] == ("fp8" if fp8 else None), case["name"]
        engines = serving.get("engines") or {}
        role = "prefill" if " prefill-" in case["name"] else "decode" if " decode-" in case["name"] else "instance"
        if role in engines:
            groups = engines[role].get("attention_groups", 1)  # vLLM's limits hold per data-parallel rank
            assert r["kv_cache_memory_bytes"] == engines[role]["kv_cache_bytes"], case["name"]
            assert r["max_num_seqs"] == -(-engines[role]["max_num_seqs"] // groups), case["name"]
            assert r["data_parallel_size"] == groups and r["enable_expert_parallel"] == (groups > 1), case["name"]


def test_sglang_parser_accepts_every_generated_instance_and_router(sglang_results):
    result, _ = sglang_results
    failed = [(c["name"], c["error"]) for c in result["cases"] + result["routers"] if not c["ok"]]
    assert not failed, failed
    assert all(c["resolved"]["host"] == "0.0.0.0" for c in result["cases"])  # reachable by a router elsewhere
