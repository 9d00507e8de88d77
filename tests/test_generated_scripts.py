"""Shell injection, end to end: values carrying shell syntax reach a plan (a model folder named
`m$(touch PWNED)`, or a plan file edited by hand), then `planner codegen` writes the launch directory and every
generated script is run by bash with harmless stubs first on PATH (`python`, `vllm`, `torchrun` record their
arguments and exit 0). No PWNED file may appear; the stubs must have been reached (the scripts ran to their
exec line); a value that cannot be quoted safely may instead be refused by codegen with one line.

The engine scripts are run the way a user starts a deployment: `serve_*.sh instance 0` (the engine's exec line)
and `serve_*.sh router` (the router's), besides `list`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from planner.cli import main

PAYLOADS = {"dollar": "m$(touch PWNED)", "backtick": "m`touch PWNED`", "double quote": 'm"; touch PWNED; "',
            "single quote": "m'; touch PWNED; '", "semicolon": "m; touch PWNED", "ifs": "m$(touch${IFS}PWNED)",
            "pipe": "m|touch PWNED", "brace": "m${x:-$(touch PWNED)}"}
CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
          "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512,
          "max_position_embeddings": 512}
STUB = '#!/bin/sh\necho "$(basename "$0") $*" >> "$STUB_LOG"\nexit 0\n'


@pytest.fixture
def sandbox(tmp_path) -> Path:
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for name in ("python", "python3", "vllm", "vllm-router", "torchrun"):
        (stubs / name).write_text(STUB)
        (stubs / name).chmod(0o755)
    return tmp_path


def run_scripts(folder: Path, sandbox: Path) -> list[str]:
    """Run every generated .sh in `folder` (bash -n first), stubs first on PATH; the stubs' log lines."""
    log = sandbox / "stub.log"
    env = {"PATH": f"{sandbox / 'stubs'}:/usr/bin:/bin", "HOME": str(sandbox), "STUB_LOG": str(log),
           "PYTHON": str(sandbox / "stubs" / "python"), "ROLE": "prefill", "NODE_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    bash = shutil.which("bash") or "/bin/bash"
    for script in sorted(folder.glob("*.sh")):
        syntax = subprocess.run([bash, "-n", str(script)], capture_output=True, text=True, timeout=30)
        assert syntax.returncode == 0, (script.name, syntax.stderr)
        runs = [[], ["instance", "0"], ["router"]] if script.name.startswith("serve_") else [[]]
        for args in runs:
            subprocess.run([bash, str(script), *args], cwd=sandbox, env=env, capture_output=True, text=True, timeout=60)
    return log.read_text().splitlines() if log.exists() else []


def _pwned(sandbox: Path) -> list[Path]:
    return [p for p in sandbox.rglob("PWNED")]


def _codegen(plan: Path, out: Path, capsys, *flags: str) -> tuple[int, str]:
    code = main(["codegen", str(plan), "-o", str(out), *flags])
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err, err
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err
    return code, err


@pytest.mark.slow
@pytest.mark.parametrize("payload", list(PAYLOADS.values()), ids=list(PAYLOADS))
def test_model_folder_name_never_runs(payload, sandbox, capsys, monkeypatch):
    """A legitimate plan (it verifies) of a model whose folder name is shell syntax: codegen, then run."""
    monkeypatch.chdir(sandbox)
    folder = sandbox / payload
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(CONFIG))
    plan = sandbox / "plan.json"
    assert main(["plan", str(folder), "--cluster", "2xcpu", "--workload", "decode", "--input-len", "64",
                 "--output-len", "16", "-o", str(plan)]) == 0
    capsys.readouterr()
    code, _ = _codegen(plan, sandbox / "out", capsys)
    calls = run_scripts(sandbox / "out", sandbox) if code == 0 else []
    assert not _pwned(sandbox), "an injected command ran"
    assert code == 2 or len(calls) >= 5, calls  # launch.sh, both engines' instance and router reached their exec


EDITS = {  # field of a plan (edited by hand; codegen --skip-verify) -> its path
    "inputs.model": ("inputs", "model"),
    "model_source.hub_id": ("inputs", "model_source", "hub_id"),
    "planner_version": ("inputs", "planner_version"),
    "fingerprint": ("fingerprint",),
    "model_name": ("model_name",),
    "stage first_layer": ("decision", "stages", 0, "first_layer"),
}


def _edit_params():
    for name in EDITS:
        for kind in ("dollar", "backtick", "double quote"):
            yield pytest.param(name, PAYLOADS[kind], id=f"{name}-{kind}")


@pytest.fixture(scope="module")
def decode_plan(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("plan") / "decode.json"
    assert main(["plan", "tiny-llama", "--cluster", "2xcpu", "--workload", "decode", "--input-len", "64",
                 "--output-len", "16", "-o", str(path)]) == 0
    return json.loads(path.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("field, payload", list(_edit_params()))
def test_edited_plan_values_never_run(field, payload, decode_plan, sandbox, capsys, monkeypatch):
    """A plan edited by hand: codegen refuses it (it does not verify); with --skip-verify the scripts it writes
    still run nothing that was smuggled in."""
    monkeypatch.chdir(sandbox)
    plan = json.loads(json.dumps(decode_plan))
    keys = EDITS[field]
    node = plan
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = payload
    path = sandbox / "edited.json"
    path.write_text(json.dumps(plan))
    code, err = _codegen(path, sandbox / "refused", capsys)
    assert code == 2 and "does not verify" in err and not (sandbox / "refused").exists()
    code, _ = _codegen(path, sandbox / "out", capsys, "--skip-verify")
    calls = run_scripts(sandbox / "out", sandbox) if code == 0 else []
    assert not _pwned(sandbox), "an injected command ran"
    assert code == 2 or len(calls) >= 5, calls


@pytest.mark.slow
def test_newline_in_a_value_is_refused_before_rendering(decode_plan, sandbox, capsys, monkeypatch):
    monkeypatch.chdir(sandbox)
    plan = json.loads(json.dumps(decode_plan))
    plan["inputs"]["planner_version"] = "0.1.0\ntouch PWNED\n"
    path = sandbox / "edited.json"
    path.write_text(json.dumps(plan))
    code, err = _codegen(path, sandbox / "out", capsys, "--skip-verify")
    assert code == 2 and "control character" in err and not (sandbox / "out").exists()
    assert main(["plan", "tiny-llama\ntouch PWNED", "--cluster", "2xcpu"]) == 2
    assert not _pwned(sandbox)


@pytest.mark.slow
def test_skip_verify_is_printed_and_recorded(decode_plan, sandbox, capsys):
    path = sandbox / "plan.json"
    path.write_text(json.dumps(decode_plan))
    assert main(["codegen", str(path), "-o", str(sandbox / "out"), "--skip-verify"]) == 0
    assert "NOT VERIFIED" in capsys.readouterr().out
    assert (sandbox / "out" / "README.md").read_text().startswith("> **NOT VERIFIED")
    for script in ("launch.sh", "serve_vllm.sh", "run_plan.py"):
        assert any("# NOT VERIFIED" in line for line in (sandbox / "out" / script).read_text().splitlines()[:2]), script
    assert json.loads((sandbox / "out" / "plan.json").read_text()) == decode_plan  # the plan itself is unmarked
    assert main(["codegen", str(path), "-o", str(sandbox / "checked")]) == 0
    assert "NOT VERIFIED" not in (sandbox / "checked" / "README.md").read_text()
    assert os.access(sandbox / "checked" / "launch.sh", os.X_OK)
