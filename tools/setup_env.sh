#!/usr/bin/env bash
# Set up a virtual environment with the OpenMMLab stack and ms_rcnn installed (editable).
#
# Idempotent: a second run checks the installed versions and returns within seconds.
#
# Environment variables:
#   VENV        where the environment lives (default: .venv in the repository root)
#   PYTHON      interpreter used to create it (default: python3)
#   TORCH_SPEC  pip requirement for torch when none is importable (default: torch==2.13.0).
#               An importable torch (in VENV, or in the system site-packages that the venv
#               sees) is reused as it is: this script never replaces it, and stops with a
#               message when it is outside the range of requirements.txt.
#   MAX_JOBS    parallel compile jobs for mmcv's ops (default: number of cores)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
MMCV_SPEC="mmcv==2.1.0"
STAMP="$VENV/.ms_rcnn_setup"
STAMP_KEY="$(cat "$ROOT/requirements.txt" "$ROOT/setup.cfg" "$0" | sha1sum | cut -c1-16)"

log() { printf '[setup] %s\n' "$*" >&2; }

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_KEY" ] \
    && "$VENV/bin/python" -c "import ms_rcnn, mmcv.ops" 2>/dev/null; then
  log "environment $VENV is up to date"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV"
  # System site-packages stay visible so that an installed torch is reused.
  "$PYTHON" -m venv --system-site-packages "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check)

if "$PY" -c "import torch" 2>/dev/null; then
  log "reusing torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
  log "installing $TORCH_SPEC"
  "${PIP[@]}" "$TORCH_SPEC"
fi
# requirements.txt would replace a torch outside its range, after mmcv was built against it.
"$PY" "$ROOT/tools/check_torch.py" "$ROOT/requirements.txt"

# mmcv 2.1 has no wheel on PyPI: build it from source with its compiled ops (CUDA ops too when
# torch has CUDA and nvcc is found). Its setup.py imports pkg_resources (removed in setuptools
# 82), so build without isolation.
"${PIP[@]}" -q "setuptools>=64,<80" wheel ninja
if "$PY" -c "import mmcv.ops, mmcv; assert mmcv.__version__ == '2.1.0'" 2>/dev/null; then
  log "reusing mmcv with ops"
else
  log "building mmcv 2.1.0 (about 8 min on 2 cores for the CPU ops; pip caches the wheel)"
  bash "$ROOT/tools/build_mmcv.sh" "$PY"
fi

log "installing requirements and ms_rcnn (editable)"
"${PIP[@]}" -q -r "$ROOT/requirements.txt"
"${PIP[@]}" -q --no-build-isolation --no-deps -e "$ROOT"
"$PY" -c "import ms_rcnn, mmcv.ops; print('[setup] ms_rcnn', ms_rcnn.__version__, 'ready')" >&2
echo "$STAMP_KEY" > "$STAMP"
