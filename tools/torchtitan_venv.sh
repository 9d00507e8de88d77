#!/usr/bin/env bash
# Build the torchtitan environment the torchtitan job tests use (tests/test_torchtitan_jobs.py): a venv that
# sees the system torch (--system-site-packages) and adds torchtitan 0.3.0 with triton (its model registries
# import it) and torchao (float8). The system Python's packages (torch 2.13.0, transformers 5.25.0) are not
# touched; the venv's own dependency versions (huggingface-hub for `datasets`) stay inside it.
#
#   tools/torchtitan_venv.sh [VENV]        # default $AOT_TORCHTITAN_VENV or ~/.cache/aot-planner/venvs/torchtitan
set -euo pipefail
VENV="${1:-${AOT_TORCHTITAN_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/aot-planner/venvs/torchtitan}}"
PY="${PYTHON:-python3}"
want_torch="$("$PY" -c 'import torch; print(torch.__version__)')"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv --system-site-packages "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  "torchtitan==0.3.0" "triton==3.9.0" "torchao==0.18.0"
have_torch="$("$VENV/bin/python" -c 'import torch, torchtitan.config.manager; print(torch.__version__)' 2>/dev/null | tail -1)"
if [ "$have_torch" != "$want_torch" ]; then
  echo "error: $VENV has torch '$have_torch', the system has $want_torch; remove $VENV and rerun" >&2
  exit 2
fi
echo "torchtitan 0.3.0 ready in $VENV (torch $have_torch)"
