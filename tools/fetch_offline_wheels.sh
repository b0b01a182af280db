#!/usr/bin/env bash
# Download what tools/gpu_checks.sh installs on a machine that cannot reach a package index
# but already has Python, a CUDA torch and nvcc (such as the lent GPU machines): wheels of
# mmengine, mmdet and pycocotools and of their small dependencies for that machine's Python,
# setuptools < 80 (mmcv's setup.py imports pkg_resources, removed in setuptools 82), and mmcv's
# source distribution, which gpu_checks.sh builds there against that torch.
#
# Usage: tools/fetch_offline_wheels.sh [DEST]    (default: .whl, ignored by git)
# Environment: PY_VERSION (target Python, default 3.12), PYTHON (runs pip, default the
# project's .venv/bin/python if there is one, else python3; to read mmcv's source distribution
# it needs setuptools < 80 and wheel, which the project's set-up installs)
set -euo pipefail

DEST="${1:-.whl}"
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  [ -x .venv/bin/python ] && PYTHON=.venv/bin/python
fi
# pip reads an sdist's metadata by running its setup.py. mmcv 2.1's imports pkg_resources,
# which PyPI's newest setuptools (what an isolated build would use) no longer has.
if ! "$PYTHON" -c 'import pkg_resources, wheel' 2>/dev/null; then
  echo "$PYTHON needs setuptools < 80 and wheel to read mmcv's source distribution:" \
    "$PYTHON -m pip install 'setuptools<80' wheel (or set PYTHON)" >&2
  exit 1
fi
PY_VERSION="${PY_VERSION:-3.12}"
mkdir -p "$DEST"
# Start clean (two versions of a package would stop the install there); a saved mmcv build
# (mmcv-built-*.tar.gz, see tools/gpu_checks.sh) stays.
rm -f "$DEST"/*.whl "$DEST/mmcv-2.1.0.tar.gz"
PIP=("$PYTHON" -m pip download --disable-pip-version-check --no-deps -d "$DEST")
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
    manylinux1_x86_64; do
  PLATFORMS+=(--platform "$p")
done

WHEELS=(mmengine==0.10.7 mmdet==3.3.0 pycocotools==2.0.11 shapely==2.1.2 terminaltables==3.1.10
        addict==2.4.0 termcolor==3.1.0 yapf==0.43.0 platformdirs==4.3.8 setuptools==79.0.1)
"${PIP[@]}" --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
  "${PLATFORMS[@]}" "${WHEELS[@]}"
"${PIP[@]}" --no-binary :all: --no-build-isolation mmcv==2.1.0
for spec in "${WHEELS[@]}"; do
  name="${spec%%==*}"
  found=$(find "$DEST" -maxdepth 1 -iname "${name}-${spec##*==}-*.whl" | wc -l)
  [ "$found" -eq 1 ] || { echo "expected one wheel of $spec in $DEST, found $found" >&2; exit 1; }
done
[ -f "$DEST/mmcv-2.1.0.tar.gz" ] || { echo "mmcv-2.1.0.tar.gz missing from $DEST" >&2; exit 1; }
du -sh "$DEST"
ls "$DEST"
