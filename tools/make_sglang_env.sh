#!/usr/bin/env bash
# Build the virtual environment holding SGLang's argument parser, so that tests can hold the generated
# serve_sglang.sh scripts to SGLang's own `prepare_server_args` (every flag, type and choice).
#
#   tools/make_sglang_env.sh          # -> $AOT_PLANNER_SGLANG_VENV, default ~/.cache/aot-planner/venvs/sglang (planner/engines/vllm_env.py)
#
# SGLang has no working CPU build on PyPI: sglang 0.5.23 requires torch 2.14.1 (a CUDA build) and CUDA kernel
# packages. Its argument parser (sglang.srt.server_args) imports without them, so the package is installed
# with --no-deps beside the project's CPU torch 2.13.0 and the few pure-Python modules that parser imports.
# What does not work here: ServerArgs.resolve_once (the resolution pipeline after parsing) imports the
# multimodal configs, which need a torchvision matching torch; none exists for torch 2.13 CPU on PyPI.
# About a minute; re-running on a complete venv is a no-op.
set -euo pipefail
SGLANG_VERSION=0.5.23
ROUTER_VERSION=0.3.2  # sglang-router, the router the generated scripts start
if [[ -n "${AOT_PLANNER_SGLANG_VENV:-}" ]]; then
  VENV="$AOT_PLANNER_SGLANG_VENV"
else
  VENV="${XDG_CACHE_HOME:-$HOME/.cache}/aot-planner/venvs/sglang"
fi
PY="$VENV/bin/python"
STAMP="$VENV/.aot-planner-sglang-$SGLANG_VERSION"
CHECK='from sglang.srt.server_args import prepare_server_args; from sglang_router.launch_router import parse_router_args'
if [[ -f "$STAMP" ]] && "$PY" -c "$CHECK" 2>/dev/null; then
  echo "SGLang $SGLANG_VERSION argument-parser environment ready: $VENV"
  exit 0
fi
mkdir -p "$(dirname "$VENV")"
"${PYTHON:-python3}" -m venv "$VENV"
"$PY" -m pip install --quiet --upgrade pip
"$PY" -m pip install --quiet torch==2.13.0 transformers==5.19.0 msgspec numpy psutil requests pydantic orjson \
  packaging pyzmq pybase64 triton pillow starlette IPython aiohttp
"$PY" -m pip install --quiet --no-deps "sglang==$SGLANG_VERSION"
"$PY" -m pip install --quiet "sglang-router==$ROUTER_VERSION"
"$PY" -c "$CHECK"
touch "$STAMP"
echo "SGLang $SGLANG_VERSION argument-parser environment ready: $VENV"
