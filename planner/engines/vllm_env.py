"""Where the vLLM CPU environment of tools/make_vllm_env.sh lives, and whether it is usable.

The path: $AOT_PLANNER_VLLM_VENV, else
~/.cache/aot-planner/venvs/vllm (the same rule as the script). An environment counts as ready when its
stamp file is there (the script writes it after vLLM imported).
"""

from __future__ import annotations

import os
from pathlib import Path

VLLM_VERSION = "0.32.0"
SGLANG_VERSION = "0.5.23"
BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "make_vllm_env.sh"


def _venv_dir(variable: str, name: str) -> Path:
    if os.environ.get(variable):
        return Path(os.environ[variable])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aot-planner" / "venvs" / name


def vllm_venv() -> Path:
    """The vLLM environment's folder (it may not exist yet)."""
    return _venv_dir("AOT_PLANNER_VLLM_VENV", "vllm")


def sglang_venv() -> Path:
    """The folder of the environment with SGLang's argument parser (tools/make_sglang_env.sh)."""
    return _venv_dir("AOT_PLANNER_SGLANG_VENV", "sglang")


def vllm_python() -> Path | None:
    """The vLLM environment's python, or None when the environment is not built (see `why_not_vllm`)."""
    venv = vllm_venv()
    ready = (venv / f".aot-planner-vllm-{VLLM_VERSION}").is_file() and (venv / "bin" / "python").is_file()
    return venv / "bin" / "python" if ready else None


def sglang_python() -> Path | None:
    venv = sglang_venv()
    ready = (venv / f".aot-planner-sglang-{SGLANG_VERSION}").is_file() and (venv / "bin" / "python").is_file()
    return venv / "bin" / "python" if ready else None


def why_not_vllm() -> str:
    """One line: why the vLLM environment cannot be used, and the way out."""
    return (f"no vLLM {VLLM_VERSION} environment at {vllm_venv()} (build it with tools/make_vllm_env.sh, or point "
            f"AOT_PLANNER_VLLM_VENV at one)")


def why_not_sglang() -> str:
    return (f"no SGLang {SGLANG_VERSION} argument-parser environment at {sglang_venv()} (build it with "
            f"tools/make_sglang_env.sh, or point AOT_PLANNER_SGLANG_VENV at one)")
