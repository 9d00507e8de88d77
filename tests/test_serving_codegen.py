"""Engine scripts of serving plans: what the plan simulated reaches the engines, and plans the engines cannot
express (or malformed ones) end in one line naming the engine and the option, exit 2, nothing written."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path

import pytest

import planner.cli.codegen_cmd  # noqa: F401  (registers `planner codegen`)
from codegen import render_plan
from planner.cli import main as cli_main
from planner.engines.server import script_args

PLANS = Path(__file__).parent / "golden" / "codegen" / "plans"


def _plan(case: str) -> dict:
    return json.loads((PLANS / f"{case}.json").read_text())


def _codegen(plan: dict, tmp_path: Path, capsys) -> tuple[int, list[str]]:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    code = cli_main(["codegen", str(path), "-o", str(tmp_path / "out"), "--skip-verify"])  # the renderer's own checks
    return code, capsys.readouterr().err.strip().splitlines()


def _args(tmp_path: Path, text: str, *argv: str) -> list[str]:
    script = tmp_path / "s.sh"
    script.write_text(text)
    return script_args(script, *argv, env={"HOSTS": "10.0.0.1 10.0.0.2"})


def test_limits_are_per_instance_and_the_kv_pool_is_pinned(tmp_path):
    """dp=2: two instances with their own GPUs, each with the per-instance limits the plan simulated (not sums)."""
    plan = _plan("serve_dp4")
    engine = plan["decision"]["serving"]["engines"]["instance"]
    text = render_plan(plan)["serve_vllm.sh"]
    gpus = []
    for k in range(plan["decision"]["dp"]):
        args = _args(tmp_path, text, "args", str(k))
        assert args[args.index("--max-num-seqs") + 1] == str(engine["max_num_seqs"])
        assert args[args.index("--kv-cache-memory-bytes") + 1] == str(engine["kv_cache_bytes"])
        assert int(args[args.index("--max-model-len") + 1]) == plan["decision"]["serving"]["longest_request_tokens"]
        gpus.append(text.split(f"    {k}:0)")[1].split("GPUS=")[1].split("\n")[0])
    assert len(set(gpus)) == len(gpus)  # each replica pinned to its own GPUs
    router = _args(tmp_path, text, "router-args")
    assert router.count("--worker-urls") == 1 and router[router.index("--policy") + 1] == "round_robin"


def test_chat_plans_serve_instruct_checkpoints_and_fp8_is_spelled_out(tmp_path):
    files = render_plan(_plan("serve_fp8"))
    assert "DEFAULT_MODEL=meta-llama/Meta-Llama-3-8B-Instruct" in files["serve_vllm.sh"]
    args = _args(tmp_path, files["serve_vllm.sh"], "args", "0")
    assert args[args.index("--quantization") + 1] == "fp8" and args[args.index("--dtype") + 1] == "bfloat16"
    sglang = _args(tmp_path, files["serve_sglang.sh"], "args", "0")
    assert sglang[sglang.index("--host") + 1] == "0.0.0.0" and "--mem-fraction-static" in sglang


def test_layered_prefill_plan_is_refused_in_one_line(tmp_path, capsys):
    plan = _plan("serve_moe")
    plan["decision"]["serving"].update(policy="layered", chunk_tokens=None, chunked_prefill=False)
    code, err = _codegen(plan, tmp_path, capsys)
    assert code == 2 and len(err) == 1 and "vLLM" in err[0] and "SGLang" in err[0] and "layered" in err[0]
    assert not (tmp_path / "out").exists()


def test_prefill_first_plan_runs_on_sglang_and_vllm_script_says_why_not(tmp_path):
    plan = _plan("serve_dense")
    plan["decision"]["serving"].update(policy="prefill_first", chunk_tokens=None, chunked_prefill=False)
    files = render_plan(plan)
    proc = subprocess.run(["bash", "-c", files["serve_vllm.sh"], "serve_vllm.sh", "up"], capture_output=True, text=True)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "vLLM" in lines[0] and "--no-enable-chunked-prefill" in lines[0]
    args = _args(tmp_path, files["serve_sglang.sh"], "args", "0")
    assert args[args.index("--chunked-prefill-size") + 1] == "-1" and "--enable-mixed-chunk" not in args


def test_expert_parallelism_across_replicas_is_refused(tmp_path, capsys):
    plan = _plan("serve_moe")
    plan["decision"]["ep"] = 4  # tp 2 instances: experts over 4 ranks would span replicas
    code, err = _codegen(plan, tmp_path, capsys)
    assert code == 2 and len(err) == 1 and "--enable-expert-parallel" in err[0] and "--ep-size" in err[0]
    from codegen.engine_args import engine_scripts  # ep = tp: experts sharded inside each instance

    engine = plan["decision"]["serving"]["engines"]["instance"]
    instance = {"index": 0, "name": "replica-0", "role": "replica", "tp": 2, "pp": 1, "groups": 1, "engine": engine,
                "parts": [{"node": 0, "gpus": "0,1", "node_rank": 0}]}
    common = {"policy": "chunked", "ep": 2, "max_model_len": 8192, "prefix_caching": True, "dtype": "bf16",
              "kv_dtype": None, "model_path": "m", "model_note": "", "chunk_tokens": 2048, "nodes": 1, "accelerator": True}
    scripts = engine_scripts(common, [instance])
    assert "--enable-expert-parallel" in scripts["vllm"]["args"][0]
    assert scripts["sglang"]["args"][0][scripts["sglang"]["args"][0].index("--ep-size") + 1] == 2


@pytest.mark.parametrize("field,value", [("max_num_seqs", "256; rm -rf /"), ("kv_cache_bytes", 1.5),
                                         ("block_size", None), ("max_num_seqs", True)])
def test_engine_values_are_type_checked(tmp_path, capsys, field, value):
    plan = copy.deepcopy(_plan("serve_dense"))
    plan["decision"]["serving"]["engines"]["instance"][field] = value
    code, err = _codegen(plan, tmp_path, capsys)
    assert code == 2 and len(err) == 1 and field in err[0] and not (tmp_path / "out").exists()


def test_model_path_with_shell_syntax_stays_one_word(tmp_path):
    from codegen.engine_args import engine_scripts

    plan = _plan("serve_dense")
    engine = plan["decision"]["serving"]["engines"]["instance"]
    instance = {"index": 0, "name": "replica-0", "role": "replica", "tp": 1, "pp": 1, "groups": 1, "engine": engine,
                "parts": [{"node": 0, "gpus": "0", "node_rank": 0}]}
    common = {"policy": "chunked", "ep": 1, "max_model_len": 8192, "prefix_caching": True, "dtype": "bf16",
              "kv_dtype": None, "model_path": "m $(touch PWNED)", "model_note": "x", "chunk_tokens": 2048, "nodes": 1,
              "accelerator": True}
    from codegen.render import environment

    header = {"planner_version": "0", "fingerprint": "f", "plan_hash": "h", "model": "m", "cluster": "c"}
    text = environment().get_template("serve_vllm.sh.j2").render(header=header, serving=engine_scripts(common, [instance]))
    subprocess.run(["bash", "-c", text.replace('case "${1:-list}" in', 'echo "$MODEL_PATH" > model.txt\ncase "${1:-list}" in'),
                    "s", "list"], cwd=tmp_path, capture_output=True, text=True)
    assert (tmp_path / "model.txt").read_text() == "m $(touch PWNED)\n" and not (tmp_path / "PWNED").exists()


def test_wide_expert_parallel_instance_runs_as_one_engine_with_attention_groups(tmp_path):
    """A wide-EP unit (4 attention groups of tp 1, experts over all 4 GPUs) is one engine on 4 GPUs: vLLM data
    parallel with expert parallelism (limits per data-parallel rank), SGLang DP attention (limits the instance's,
    KV pool per group); the own runtime, which has no expert parallelism for this model, is not generated."""
    plan = _plan("serve_wide_ep")
    engine = plan["decision"]["serving"]["engines"]["instance"]
    assert engine["attention_groups"] == 4 and plan["decision"]["ep"] == 4
    files = render_plan(plan)
    assert "run_plan.py" not in files and "launch.sh" not in files
    assert "the planner's own runtime (`run_plan.py`, `launch.sh`) is not" in files["README.md"]
    vllm = _args(tmp_path, files["serve_vllm.sh"], "args", "0")
    assert vllm[vllm.index("--data-parallel-size") + 1] == "4" and "--enable-expert-parallel" in vllm
    assert vllm[vllm.index("--max-num-seqs") + 1] == str(-(-engine["max_num_seqs"] // 4))
    assert vllm[vllm.index("--kv-cache-memory-bytes") + 1] == str(engine["kv_cache_bytes"])
    sglang = _args(tmp_path, files["serve_sglang.sh"], "args", "0")
    assert sglang[sglang.index("--tp-size") + 1] == "4" and sglang[sglang.index("--dp-size") + 1] == "4"
    assert "--enable-dp-attention" in sglang and sglang[sglang.index("--ep-size") + 1] == "4"
    assert sglang[sglang.index("--max-running-requests") + 1] == str(engine["max_num_seqs"])
    assert sglang[sglang.index("--max-total-tokens") + 1] == str(engine["kv_cache_tokens"])
    listing = _args(tmp_path, files["serve_vllm.sh"], "list")
    assert len(listing) == 2 and "GPUs 0,1,2,3" in listing[0]  # one instance on all four GPUs, then the router


def test_group_priority_is_written_where_the_kernel_has_autogroups(tmp_path):
    """The real-engine benchmark's priority (planner.engines.server.raise_group_priority): on a kernel with
    autogroups, this session's group takes the niceness written (its current one here: no privilege needed);
    where the kernel has none, or the write is refused (a container's read-only /proc), False and nothing
    changed, never an exception."""
    from planner.engines.server import raise_group_priority

    assert raise_group_priority(0, pid=2**22 + 7) is False  # no such process: refused, no exception
    autogroup = Path("/proc/self/autogroup")
    if not autogroup.exists():
        assert raise_group_priority(0) is False
        return
    before = autogroup.read_text()
    niceness = re.search(r"nice\s+(-?\d+)", before)
    if niceness is None:  # a sandboxed /proc (CI's container reads it empty): the call still only answers
        assert isinstance(raise_group_priority(0), bool)
        return
    current = int(niceness.group(1))
    if raise_group_priority(current):
        assert autogroup.read_text().strip().endswith(f"nice {current}")
    assert before.split()[0] == autogroup.read_text().split()[0]  # the same group, only its niceness set
    assert autogroup.read_text() == before
