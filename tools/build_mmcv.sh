#!/usr/bin/env bash
# Build and install mmcv 2.1.0 with its compiled ops against the torch that PYTHON imports.
#
# mmcv 2.1 (the newest that mmdet 3.3 accepts) has no wheel on PyPI for today's torch, so it
# is built from its source distribution. Its setup.py compiles with -std=c++17, which torch
# 2.14 and newer refuse (their headers need C++20): for those the source is patched to the
# standard that torch's ATen.h asks for. The CUDA ops are built too when torch has CUDA, nvcc
# is on the PATH and a GPU is visible (or FORCE_CUDA=1, or TORCH_CUDA_ARCH_LIST is set, for a
# build host without one); the CUDA library headers that torch's pip wheels carry
# (nvidia/*/include) are added to the include path after the toolkit's own, since a bare CUDA
# toolkit may lack some.
#
# Usage: tools/build_mmcv.sh PYTHON [SDIST]
#   PYTHON  interpreter whose torch the ops are built against
#   SDIST   mmcv-2.1.0.tar.gz to build from (default: pip's mmcv==2.1.0, cached as a wheel
#           when no patch is needed)
# Environment:
#   MAX_JOBS              parallel compile jobs (default: number of cores)
#   FORCE_CUDA            1: build the CUDA ops without a visible GPU (a build host)
#   TORCH_CUDA_ARCH_LIST  CUDA architectures (default: those of the visible GPUs, else all that
#                         torch was built for); setting it also builds the CUDA ops
#   PIP_INSTALL_ARGS      extra arguments of the final `pip install` (e.g. --target DIR)
#   BUILD_VERBOSE         1: pip -v, so the log shows each compiled file
#   CUDA_OPS              ops to build CUDA kernels for, e.g. "nms roi_align" (what Mask
#                         Scoring R-CNN uses: minutes instead of an hour of compiling; the
#                         other kernels are not built, see tools/mmcv_cuda_subset.py);
#                         default: all
#   PLAN_ONLY             1: print which ops would be built (cpu or cuda) and the C++ standard
set -euo pipefail

PY="${1:?usage: tools/build_mmcv.sh PYTHON [SDIST]}"
SDIST="${2:-}"
VERSION=2.1.0
log() { printf '[build_mmcv] %s\n' "$*" >&2; }

# The C++ standard torch's headers require ("#error C++NN or later ..." in ATen.h).
STD="$("$PY" - <<'EOF'
import os, re
import torch
path = os.path.join(os.path.dirname(torch.__file__), 'include', 'ATen', 'ATen.h')
match = re.search(r'C\+\+(\d+) or later', open(path).read()) if os.path.isfile(path) else None
print(match.group(1) if match else '17')
EOF
)"

# CUDA ops as mmcv's setup.py decides (a visible GPU, or FORCE_CUDA=1), and also when
# TORCH_CUDA_ARCH_LIST names the architectures; always only with a CUDA torch and nvcc. A CUDA
# torch from PyPI on a machine without a GPU (and a toolkit installed) thus gets the CPU ops in
# minutes, not the CUDA ops of every architecture in hours.
CUDA_TORCH=0
"$PY" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null && CUDA_TORCH=1
GPU_VISIBLE=0
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null \
  && GPU_VISIBLE=1
OPS=cpu
if [ "$CUDA_TORCH" = 1 ] && command -v nvcc >/dev/null; then
  if [ "$GPU_VISIBLE" = 1 ] || [ "${FORCE_CUDA:-0}" = 1 ] || [ -n "${TORCH_CUDA_ARCH_LIST:-}" ]; then
    OPS=cuda
  else
    log "a CUDA torch and nvcc but no visible GPU: CPU ops only (FORCE_CUDA=1 or" \
      "TORCH_CUDA_ARCH_LIST=... builds the CUDA ops too, e.g. on a build host)"
  fi
fi
if [ "$OPS" = cuda ]; then
  export FORCE_CUDA=1
  # torch takes the toolkit to be the parent of nvcc's folder, which is wrong when nvcc on the
  # PATH is a wrapper (e.g. /usr/local/bin/nvcc): ask nvcc where its toolkit is instead.
  if [ -z "${CUDA_HOME:-${CUDA_PATH:-}}" ]; then
    TOP="$(nvcc --dryrun -c -x cu /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -n 1)"
    if [ -n "$TOP" ] && [ -f "$TOP/include/cuda_runtime_api.h" ]; then
      CUDA_HOME="$(cd "$TOP" && pwd -P)"
      export CUDA_HOME
    fi
  fi
  if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
    # Those of the visible GPUs; with none (a build host), every architecture torch was built
    # for (torch's own default then fails on an empty list).
    TORCH_CUDA_ARCH_LIST="$("$PY" - 2>/dev/null <<'EOF' || true
import torch
archs = {'%d.%d' % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
if not archs:
    archs = {f'{a[3:-1]}.{a[-1]}' for a in torch.cuda.get_arch_list() if a.startswith('sm_')}
print(';'.join(sorted(archs, key=lambda a: tuple(map(int, a.split('.'))))))
EOF
)"
    [ -n "$TORCH_CUDA_ARCH_LIST" ] && export TORCH_CUDA_ARCH_LIST || unset TORCH_CUDA_ARCH_LIST
  fi
  # Library headers (cusparse.h, cublas_v2.h, ...) shipped in torch's nvidia-* wheels.
  NV_INCLUDES="$("$PY" - <<'EOF'
import glob, os, sys
dirs = set()
for site in sys.path:
    for header in glob.glob(os.path.join(site, 'nvidia', '*', 'include', 'cusparse.h')):
        dirs.add(os.path.dirname(header))
print(':'.join(sorted(dirs)))
EOF
)"
  if [ -n "$NV_INCLUDES" ]; then
    export CPATH="$NV_INCLUDES${CPATH:+:$CPATH}"
    export NVCC_APPEND_FLAGS="${NVCC_APPEND_FLAGS:-} -I${NV_INCLUDES//:/ -I}"
  fi
  log "CUDA ops for ${TORCH_CUDA_ARCH_LIST:-the default architectures of torch}, C++$STD," \
    "toolkit ${CUDA_HOME:-${CUDA_PATH:-as torch finds it}}"
else
  # mmcv's setup.py builds CUDA ops whenever torch sees a GPU (or FORCE_CUDA=1): hide both.
  unset FORCE_CUDA
  export CUDA_VISIBLE_DEVICES=
  log "CPU ops only, C++$STD"
fi
read -r -a SUBSET_OPS <<< "${CUDA_OPS:-}"
SUBSET=""
[ "$OPS" = cuda ] && SUBSET="${SUBSET_OPS[*]}"
if [ "${PLAN_ONLY:-0}" = 1 ]; then  # say what would be built, build nothing (for the tests)
  echo "plan: $OPS ops${SUBSET:+ ($SUBSET)}, C++$STD"
  exit 0
fi
# mmcv 2.1's setup.py imports pkg_resources (removed in setuptools 82) and is run without build
# isolation, so that it compiles against this torch.
if ! "$PY" -c 'import pkg_resources' 2>/dev/null; then
  log "$PY has no pkg_resources, which mmcv 2.1's setup.py imports: $PY -m pip install" \
    "'setuptools<80' wheel ninja (offline: the setuptools wheel in tools/fetch_offline_wheels.sh's .whl)"
  exit 1
fi
export MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}"
# torch compiles in parallel only with ninja (otherwise one file at a time, several times
# slower); pip installs it beside the interpreter, which need not be on the PATH.
PATH="$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
export PATH
command -v ninja >/dev/null || log "no ninja found: the ops compile one file at a time"
read -r -a EXTRA <<< "${PIP_INSTALL_ARGS:-}"
# BUILD_VERBOSE=1 shows the compiler's progress ([n/N] per file) instead of pip's spinner.
[ "${BUILD_VERBOSE:-0}" = 1 ] && EXTRA=(-v "${EXTRA[@]}")
PIP=("$PY" -m pip install --disable-pip-version-check --no-build-isolation "${EXTRA[@]}")

if [ "$STD" = 17 ] && [ -z "$SDIST" ] && [ -z "$SUBSET" ]; then
  "${PIP[@]}" "mmcv==$VERSION"  # pip caches the built wheel: a second install is quick
  exit 0
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
if [ -z "$SDIST" ]; then
  # Without build isolation: pip prepares the sdist's metadata with mmcv's setup.py, which
  # needs pkg_resources (as the build itself does), which PyPI's newest setuptools lacks.
  "$PY" -m pip download --disable-pip-version-check --no-deps --no-binary :all: \
    --no-build-isolation \
    -d "$WORK" "mmcv==$VERSION"
  SDIST="$WORK/mmcv-$VERSION.tar.gz"
fi
tar xzf "$SDIST" -C "$WORK"
SRC="$WORK/mmcv-$VERSION"
if [ "$STD" != 17 ]; then
  log "patching mmcv's setup.py from -std=c++17 to -std=c++$STD"
  sed -i "s/-std=c++17/-std=c++$STD/g" "$SRC/setup.py"
  grep -q -- "-std=c++$STD" "$SRC/setup.py" || { log "patch failed: no -std flag found"; exit 1; }
fi
if [ -n "$SUBSET" ]; then
  "$PY" "$(dirname "$0")/mmcv_cuda_subset.py" "$SRC" "${SUBSET_OPS[@]}" >&2
fi
"${PIP[@]}" "$SRC"
