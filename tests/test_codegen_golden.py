"""Golden tests of `planner codegen`: emitted files per fixed plan, headers, ruff, determinism, errors.

Plans are fixtures under tests/golden/codegen/plans/ (so planner changes do not churn these goldens);
expected files are under tests/golden/codegen/<case>/. `UPDATE_GOLDEN=1 pytest tests/test_codegen_golden.py`
rewrites them. run_plan.py is the header, an import of the runtime package and the PLAN literal; the package
itself (aot_runtime/, copied from codegen/runtime/) is pinned by one golden hash, runtime.sha256.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import planner
import planner.cli.codegen_cmd
from codegen import render_plan
from codegen.render import RUNTIME_DIR, runtime_hash
from planner.cli import main as cli_main
from tests.conftest import UPDATE_GOLDEN

GOLDEN = Path(__file__).parent / "golden" / "codegen"
PLANS = sorted(p.stem for p in (GOLDEN / "plans").glob("*.json"))
RUNTIME_HASH = GOLDEN / "runtime.sha256"

# Engine options and values the generated scripts may use, from the engines' sources: vLLM 0.32
# (vllm/engine/arg_utils.py `EngineArgs.add_cli_args`; bool fields get --X and --no-X through
# argparse.BooleanOptionalAction; --host/--port from vllm/entrypoints/launchers/cli_args.py; --nnodes, --node-rank,
# --master-addr, --headless for an instance over several nodes), vllm-router 0.1.17 (vllm_router/router_args.py),
# SGLang 0.5.23 (python/sglang/srt/server_args.py) and sglang-router 0.3.2 (sglang_router/router_args.py). The
# engines' own parsers check the same scripts in tests/test_engine_args.py where their environments exist.
VLLM_OPTIONS = {
    "--tensor-parallel-size", "--pipeline-parallel-size", "--data-parallel-size", "--enable-expert-parallel",
    "--max-model-len",
    "--max-num-seqs", "--max-num-batched-tokens", "--enable-chunked-prefill", "--enable-prefix-caching",
    "--no-enable-prefix-caching", "--block-size", "--kv-cache-memory-bytes", "--watermark", "--dtype", "--quantization",
    "--kv-cache-dtype", "--kv-transfer-config", "--host", "--port", "--nnodes", "--node-rank", "--master-addr", "--headless",
}
VLLM_DTYPES = {"auto", "half", "float16", "bfloat16", "float", "float32"}  # vllm/config/model.py ModelDType
# --kv-transfer-config JSON: keys of vllm/config/kv_transfer.py KVTransferConfig, kv_role one of its KVRole values
VLLM_KV_TRANSFER_KEYS = {"kv_connector", "kv_role", "engine_id", "kv_buffer_device", "kv_buffer_size", "kv_rank",
                         "kv_parallel_size", "kv_ip", "kv_port", "kv_connector_extra_config", "kv_connector_module_path"}
VLLM_KV_ROLES = {"kv_producer", "kv_consumer", "kv_both"}
VLLM_ROUTER_OPTIONS = {"--worker-urls", "--policy", "--vllm-pd-disaggregation", "--prefill", "--decode", "--host", "--port"}
SGLANG_OPTIONS = {
    "--model-path", "--tp-size", "--pp-size", "--ep-size", "--dp-size", "--enable-dp-attention", "--context-length",
    "--max-running-requests",
    "--max-total-tokens", "--page-size", "--schedule-policy", "--mem-fraction-static", "--chunked-prefill-size",
    "--max-prefill-tokens", "--enable-mixed-chunk", "--disable-radix-cache", "--dtype", "--quantization",
    "--kv-cache-dtype", "--disaggregation-mode", "--disaggregation-transfer-backend", "--disaggregation-bootstrap-port",
    "--host", "--port", "--nnodes", "--node-rank", "--dist-init-addr",
}
SGLANG_DTYPES = VLLM_DTYPES
SGLANG_TRANSFER_BACKENDS = {"mooncake", "nixl"}
SGLANG_ROUTER_OPTIONS = {"--worker-urls", "--policy", "--pd-disaggregation", "--prefill", "--decode", "--host", "--port"}


def _plan(case: str) -> dict:
    return json.loads((GOLDEN / "plans" / f"{case}.json").read_text())


def _golden_names(files: dict) -> list[str]:
    """Emitted files kept as goldens: all but the plan itself and the runtime package (pinned by its hash)."""
    return sorted(n for n in files if n != "plan.json" and not n.startswith("aot_runtime/"))


@pytest.mark.parametrize("case", PLANS)
def test_emitted_files_match_golden(case):
    files = render_plan(_plan(case))
    folder = GOLDEN / case
    if UPDATE_GOLDEN:
        shutil.rmtree(folder, ignore_errors=True)
        for name in _golden_names(files):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(files[name])
    expected = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert expected == _golden_names(files)
    for name in expected:
        assert files[name] == (folder / name).read_text(), f"{case}/{name} changed"
    assert json.loads(files["plan.json"]) == _plan(case)


def test_runtime_package_matches_its_golden_hash():
    """The launch directory carries codegen/runtime/ byte for byte; its hash changes only on purpose."""
    files = render_plan(_plan("train_tp2"))
    carried = {n.removeprefix("aot_runtime/"): text for n, text in files.items() if n.startswith("aot_runtime/")}
    assert carried == {p.name: p.read_text() for p in RUNTIME_DIR.glob("*.py")}
    if UPDATE_GOLDEN:
        RUNTIME_HASH.write_text(runtime_hash() + "\n")
    assert runtime_hash() == RUNTIME_HASH.read_text().strip(), "the runtime changed: UPDATE_GOLDEN=1 if intended"


@pytest.mark.parametrize("case", [c for c in PLANS if (GOLDEN / c / "run_plan.py").is_file()])
def test_run_plan_is_short_and_imports_the_runtime(case):
    text = render_plan(_plan(case))["run_plan.py"]
    assert len(text.splitlines()) < 100
    assert "from aot_runtime import main" in text and text.rstrip().endswith("sys.exit(main(PLAN))")


@pytest.mark.parametrize("case", PLANS)
def test_headers_name_version_and_plan_hash(case):
    plan = _plan(case)
    for name, text in render_plan(plan).items():
        if name == "plan.json" or name.startswith("aot_runtime/"):  # the plan carries its version and fingerprint;
            continue  # the runtime package is the same for every plan
        head = "\n".join(text.splitlines()[:3])
        assert f"aot-planner {plan['inputs']['planner_version']}" in head, name
        assert f"from plan {plan['fingerprint']} (sha256 " in head, name


def test_same_plan_gives_identical_bytes():
    assert render_plan(_plan("train_tp2_pp2")) == render_plan(_plan("train_tp2_pp2"))


def test_emitted_python_passes_ruff_and_compiles(tmp_path):
    for case in PLANS:
        files = render_plan(_plan(case))
        for name, text in files.items():  # a fleet plan compiles to serving scripts only
            if name.endswith(".py") and not name.startswith("aot_runtime/"):
                compile(text, f"{case}/{name}", "exec")
                (tmp_path / f"{case}_{Path(name).name}").write_text(text)
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--line-length", "130", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shell_scripts_parse():
    for case in PLANS:
        for name, text in render_plan(_plan(case)).items():
            if name.endswith(".sh"):
                proc = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
                assert proc.returncode == 0, f"{case}/{name}: {proc.stderr}"


def _flags(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text))


SERVING_CASES = [*sorted(case for case in PLANS if case.startswith("serve_") and case != "serve_fleet"), "decode_tp2_pp2"]


def _engine_files(files: dict[str, str], engine: str) -> list[str]:
    return [text for name, text in sorted(files.items()) if name.startswith(f"serve_{engine}") and "exit 2" not in text[:4000]]


@pytest.mark.parametrize("case", [*SERVING_CASES, "serve_fleet"])
def test_serving_options_are_documented(case):
    files = render_plan(_plan(case))
    for text in _engine_files(files, "vllm"):
        assert _flags(text) <= VLLM_OPTIONS | VLLM_ROUTER_OPTIONS, _flags(text) - VLLM_OPTIONS - VLLM_ROUTER_OPTIONS
    for text in _engine_files(files, "sglang"):
        assert _flags(text) <= SGLANG_OPTIONS | SGLANG_ROUTER_OPTIONS, _flags(text) - SGLANG_OPTIONS - SGLANG_ROUTER_OPTIONS


@pytest.mark.parametrize("case", SERVING_CASES)
def test_serving_option_values_are_documented(case):
    files = render_plan(_plan(case))
    vllm, sglang = files["serve_vllm.sh"], files["serve_sglang.sh"]
    assert set(re.findall(r"--dtype (\S+)", vllm)) <= VLLM_DTYPES
    assert set(re.findall(r"--dtype (\S+)", sglang)) <= SGLANG_DTYPES
    assert set(re.findall(r"--disaggregation-transfer-backend (\S+)", sglang)) <= SGLANG_TRANSFER_BACKENDS
    configs = [json.loads(text) for text in re.findall(r"--kv-transfer-config '([^']*)'", vllm)]
    assert bool(configs) == ("--kv-transfer-config" in vllm)
    for config in configs:
        assert set(config) <= VLLM_KV_TRANSFER_KEYS and config["kv_role"] in VLLM_KV_ROLES, config
    if _plan(case)["decision"].get("serving", {}).get("disaggregated"):
        assert configs and "--vllm-pd-disaggregation" in vllm and "--pd-disaggregation" in sglang
        assert "--disaggregation-mode prefill" in sglang and "--disaggregation-mode decode" in sglang


def test_training_plans_have_no_serving_scripts():
    assert "serve_vllm.sh" not in render_plan(_plan("train_tp2"))


def _cli(capsys, *argv) -> tuple[int, list[str]]:
    code = cli_main(list(argv))
    return code, capsys.readouterr().err.strip().splitlines()


def test_cli_writes_the_directory(tmp_path, capsys):
    # the fixture's predictions are frozen, not today's cost model's: verification is skipped deliberately
    code, _ = _cli(capsys, "codegen", str(GOLDEN / "plans" / "train_tp2.json"), "-o", str(tmp_path / "out"),
                   "--skip-verify")
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["README.md", "aot_runtime", "launch.sh", "plan.json",
                                                                     "run_plan.py"]
    assert (tmp_path / "out" / "aot_runtime" / "__init__.py").is_file()
    assert (tmp_path / "out" / "launch.sh").stat().st_mode & 0o111


def test_cli_rejects_a_plan_of_another_version(tmp_path, capsys):
    plan = {**_plan("train_tp2"), "format": "aot-planner.plan/0"}
    (tmp_path / "old.json").write_text(json.dumps(plan))
    code, err = _cli(capsys, "codegen", str(tmp_path / "old.json"), "-o", str(tmp_path / "out"))
    assert code == 2 and len(err) == 1 and "written by another planner version" in err[0]


def test_codegen_never_imports_a_factory_the_plan_names(tmp_path, capsys, monkeypatch):
    """A plan naming Python code (module:function) is data: codegen renders a program that names the factory
    (run by the user), and imports nothing itself."""
    (tmp_path / "evil_models.py").write_text("import pathlib\npathlib.Path(__file__).with_name('PWNED').touch()\n"
                                             "def make():\n    raise SystemExit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plan = _plan("train_tp2")
    plan["inputs"]["model"] = "evil_models:make"
    plan["inputs"]["model_source"] = {**plan["inputs"]["model_source"], "kind": "module", "ref": "evil_models:make",
                                      "name": "evil_models:make", "config_class": None, "architecture": None,
                                      "values": None, "sha256": None, "hub_id": None}
    (tmp_path / "p.json").write_text(json.dumps(plan))
    code, err = _cli(capsys, "codegen", str(tmp_path / "p.json"), "-o", str(tmp_path / "out"))
    assert code == 2 and "--trust-model-code" in err[0] and not (tmp_path / "out").exists()  # verifying would run it
    code, _err = _cli(capsys, "codegen", str(tmp_path / "p.json"), "-o", str(tmp_path / "out"), "--skip-verify")
    assert code == 0 and not (tmp_path / "PWNED").exists()
    assert "evil_models:make" in (tmp_path / "out" / "run_plan.py").read_text()


def test_cli_rejects_tp_that_splits_no_kv_heads(tmp_path, capsys):
    plan = _plan("train_tp2")
    for stage in plan["decision"]["stages"]:
        stage["ranks"] = [[0, 1, 2, 3]]
        stage["tp"] = 4
    (tmp_path / "tp4.json").write_text(json.dumps(plan))
    code, err = _cli(capsys, "codegen", str(tmp_path / "tp4.json"), "-o", str(tmp_path / "out"), "--skip-verify")
    assert code == 2 and len(err) == 1 and "key/value heads" in err[0]


def test_mixed_tp_plan_generates_per_stage_meshes_and_apply_plan_points_to_it():
    """A plan for mixed GPU types (tp 2 on the A100 stage, 1 on the H100 stages) compiles: world size is the
    sum over stages, each stage keeps its own tp; Plan.apply refuses it with the way out."""
    import torch

    from codegen.apply import apply_plan
    from codegen.context import build_context
    from ir.errors import UserError

    plan = _plan("train_mixed_gpus")
    runtime = build_context(plan)["runtime"]
    assert runtime["hetero_tp"] and runtime["layout"] == "pp=3 x dp=2 x tp=2,1,1"
    assert runtime["world_size"] == 8 == sum(len(row) for st in runtime["stages"] for row in st["ranks"])
    assert [st["tp"] for st in runtime["stages"]] == [2, 1, 1]
    with pytest.raises(UserError, match=r"run `planner codegen` and its run_plan\.py"):
        apply_plan(plan, torch.nn.Linear(2, 2))


def test_fleet_plan_compiles_to_scripts_per_configuration_and_a_routing_table():
    """Each bought (GPU type, tp) configuration gets a vLLM and an SGLang script with its instances, the fleet's
    chunked-prefill budget and a round-robin router; the README's routing shares of every bucket sum to 100%."""
    plan = _plan("serve_fleet")
    files = render_plan(plan)
    configs = plan["decision"]["instances"]
    scripts = sorted(n for n in files if n.endswith(".sh"))
    assert len(scripts) == 2 * len(configs) and "run_plan.py" not in files
    for name in scripts:
        assert "2048" in files[name]  # chunked(budget=2048), the policy the fleet was profiled with
        assert "round_robin" in files[name]
    for inst in configs:
        slug = inst["config"].lower().replace(" ", "_")
        text = files[f"serve_vllm_{slug}.sh"]
        assert f"--tensor-parallel-size {inst['tp']}" in text and text.count("--kv-cache-memory-bytes") == inst["instances"]
    rows = [line for line in files["README.md"].splitlines() if line.startswith("| prompt")]
    assert len(rows) == len(plan["profile"]["buckets"])
    for row in rows:
        shares = [int(cell.strip().rstrip("%")) for cell in row.strip("|").split("|")[3:]]
        assert sum(shares) in (0, 100), row


@pytest.mark.parametrize("instances", [[], "x", [{"config": "L4 tp1"}], [{"config": "L4 tp1", "device": "L4", "tp": "a",
                                                                        "instances": 1, "gpus": 1, "dollars_per_hour": 1}]])
def test_malformed_fleet_plan_is_one_line_exit_2(instances, tmp_path, capsys):
    plan = _plan("serve_fleet")
    plan["decision"]["instances"] = instances
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(plan))
    code, err = _cli(capsys, "codegen", str(path), "-o", str(tmp_path / "out"), "--skip-verify")  # the renderer's check
    assert code == 2 and len(err) == 1 and ("fleet plan" in err[0] or "decision.instances" in err[0])
    assert not (tmp_path / "out").exists()


def test_hostile_model_folder_names_never_execute(tmp_path):
    """A plan whose model is a config folder named `m$(touch PWNED)`: the emitted training scripts run (with
    PYTHON=true standing in for torchrun) without executing it; a newline in the name is refused in one line."""
    from ir.errors import UserError
    from planner.model_source import model_record
    from planner.presets import get_preset

    folder = tmp_path / "m$(touch PWNED)"
    folder.mkdir()
    preset = get_preset("llama-3-8b")
    (folder / "config.json").write_text(json.dumps({**preset.values, "architectures": [preset.architecture]}))
    plan = _plan("train_llama3_8b_fp8")
    plan["inputs"]["model"] = str(folder)
    plan["inputs"]["model_source"] = model_record(str(folder), plan["inputs"]["model_source"]["summary"])
    out = tmp_path / "out"
    files = render_plan(plan)
    assert {"launch.sh", "train_torchtitan.sh", "torchtitan_plan.py"} <= set(files)
    planner.codegen(plan, out, verify=False)  # deliberately: a fixture (frozen predictions) with its model edited
    for script in ("launch.sh", "train_torchtitan.sh"):
        proc = subprocess.run(["bash", str(out / script)], cwd=tmp_path, capture_output=True, text=True,
                              env={**os.environ, "PYTHON": "true"}, timeout=60)
        assert proc.returncode == 0, proc.stderr
    assert not list(tmp_path.rglob("PWNED"))
    plan["inputs"]["model"] = str(tmp_path / "m\nrm -rf x")
    (tmp_path / "m\nrm -rf x").mkdir()
    (tmp_path / "m\nrm -rf x" / "config.json").write_text((folder / "config.json").read_text())
    plan["inputs"]["model_source"] = model_record(plan["inputs"]["model"], plan["inputs"]["model_source"]["summary"])
    with pytest.raises(UserError, match="control character"):
        render_plan(plan)


def test_context_parallel_plans_are_refused_by_the_runtime_package():
    """The runtime package has no context parallelism: it says so in one line (torchtitan's job would carry it)."""
    from codegen.context import build_context
    from ir.errors import UserError

    plan = _plan("train_tp2")
    plan["decision"]["cp"] = 2
    with pytest.raises(UserError, match="context parallelism cp=2"):
        build_context(plan)
